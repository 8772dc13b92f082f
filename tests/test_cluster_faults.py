"""Three shards on a real local Valkey Cluster (3 masters, 3 replicas) under the faults a cluster
meets, with load on every shard and transfers between them, in replicated durability: what
``matchbox chaos --cluster`` runs (:mod:`matchbox.chaos.shards`), every kind of fault once.

Two engine candidates per shard run as ``matchbox engine`` processes; clients submit orders and
transfers under client order ids and retry each, under its id, until it is acknowledged; a
reader follows every shard's output stream. The faults: a leader SIGKILLed, a leader SIGSTOPped
past its lease, a replica frozen, a master SIGKILLed (its replica promoted), a node restarted.
Then every check holds: each acknowledged order matched once, no event a reader saw vanished or
changed, a master's failover left the other shards without a refusal or a new epoch, each
acknowledged transfer paid in once, money conserved, no engine died on its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from matchbox.chaos.shards import KINDS, run_cluster

pytestmark = pytest.mark.e2e  # a six-node cluster, engine processes and five faults


def test_a_sharded_cluster_loses_nothing_under_leader_replica_and_master_faults(tmp_path: Path) -> None:
    report = run_cluster(seconds=25, seed=3, folder=tmp_path, console=Console(quiet=True))
    assert set(report.faults) == set(KINDS)  # every kind of fault, at least once
    failed = [f"{check.name}: {check.detail}" for check in report.checks if not check.held]
    assert not failed, failed
    assert report.orders_acknowledged > 1_000
    assert report.transfers_acknowledged > 10
