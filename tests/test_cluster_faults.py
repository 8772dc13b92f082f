"""Three shards on a real local Valkey Cluster (3 masters, 3 replicas) under the faults a cluster
meets, with load on every shard and transfers between them, in replicated durability.

Two engine candidates per shard run as ``matchbox engine`` processes; clients submit orders and
transfers under client order ids and retry each, under its id, until it is acknowledged (as a
real client does); a reader follows every shard's output stream. One after another: SIGKILL a
leader, SIGSTOP a leader past its lease, freeze a replica, SIGKILL a master (its replica is
promoted), restart a node. Then, for every shard:

- every acknowledged order was matched exactly once (its outcome is in its shard's output stream once);
- every event the reader saw is still in the stream, byte for byte (none vanished or changed);
- while one shard's master failed over, the other shards took every order and kept their epoch;
- every acknowledged transfer was paid in exactly once, and no money was made or lost.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from conftest import in_thread, wait_until
from matchbox.bus.cluster import ClusterBus
from matchbox.bus.codec import decode_event
from matchbox.bus.commit import Uncertified, read_offset
from matchbox.bus.durability import Durability, DurabilityError
from matchbox.bus.journal import Journal, Request, Submission
from matchbox.bus.outage import REDIS_DOWN
from matchbox.bus.server import EmbeddedCluster
from matchbox.consumers.runner import ConsumerConfig, GroupConsumer
from matchbox.consumers.transfers import TransferRelay
from matchbox.engine.types import (
    BalanceChanged,
    CreateMarket,
    Deposit,
    OrderAccepted,
    PlaceOrder,
    Rejected,
    Side,
    TickScheme,
    TransferOut,
    TransferredIn,
    TransferredOut,
)

pytestmark = pytest.mark.e2e  # a six-node cluster, engine processes and five faults

SHARDS = 3
LOCK_TTL_MS = 1500
MOVER = "mover"
MOVER_CASH = 1_000_000
NOT_ACKNOWLEDGED = (*REDIS_DOWN, DurabilityError, Uncertified, redis.ResponseError)


def connect(url: str, shard: int) -> ClusterBus:
    return ClusterBus.connect(url, shard, socket_timeout=3.0)


class Candidates:
    """Two ``matchbox engine`` processes per shard; one killed is started again under its name."""

    def __init__(self, url: str, folder: Path) -> None:
        self.folder = folder
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("MATCHBOX_")}
        self.env |= {
            "REDIS_URL": url,
            "MATCHBOX_CLUSTER": "1",
            "MATCHBOX_DURABILITY": "replicated",
            "MATCHBOX_LOCK_TTL_MS": str(LOCK_TTL_MS),
            "MATCHBOX_DATA_DIR": str(folder),
            "MATCHBOX_SNAPSHOT_SECONDS": "2",
        }
        self.processes: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
        for shard in range(SHARDS):
            for c in "ab":
                self.start(f"engine-{shard}{c}", shard)

    def start(self, name: str, shard: int) -> None:
        with (self.folder / f"{name}.log").open("ab") as log:
            argv = [sys.executable, "-m", "matchbox", "engine", "--shard", str(shard), "--name", name]
            argv += ["--watermark", str(self.folder / f"{name}.watermark")]
            process = subprocess.Popen(argv, env=self.env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        self.processes[name] = (shard, process)

    def leader(self, bus: ClusterBus) -> str:
        """The name of the candidate leading ``bus``'s shard (waited for)."""
        found: list[str] = []

        def leading() -> bool:
            try:
                name = bus.client.hget(bus.keys.leader_info, "name")
            except redis.RedisError:
                bus.reconnect()
                return False
            found[:] = [name.decode()] if isinstance(name, bytes) and name.decode() in self.processes else []
            return bool(found)

        wait_until(leading, timeout=30, message=f"a leader of shard {bus.keys.shard}")
        return found[0]

    def kill(self, name: str) -> None:
        shard, process = self.processes[name]
        process.kill()
        process.wait(10)
        self.start(name, shard)

    def signal(self, name: str, signum: signal.Signals) -> None:
        self.processes[name][1].send_signal(signum)

    def close(self) -> None:
        for _, process in self.processes.values():
            process.send_signal(signal.SIGCONT)
            process.terminate()
        for _, process in self.processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


@dataclass
class Load:
    """Orders submitted to one shard, each retried under its client order id until acknowledged."""

    url: str
    shard: int
    stop: threading.Event
    acked: dict[str, Submission] = field(default_factory=dict)
    refusals: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, what)

    def run(self) -> None:
        bus = connect(self.url, self.shard)
        journal = Journal(bus, Durability.REPLICATED)
        i = 0
        while not self.stop.is_set():
            i += 1
            side = Side.BUY if i % 2 else Side.SELL
            command = PlaceOrder(
                seq=0, ts=0, market_id=f"m{self.shard}", order_id=0, account=f"a{i % 5}", side=side, price=50, qty=1
            )
            cid = f"{self.shard}-{i}"
            self.acked[cid] = acknowledge(journal, Request(command, cid), self.refusals, self.stop)
        bus.close()


def acknowledge(
    journal: Journal, request: Request, refusals: list[tuple[float, str]], stop: threading.Event
) -> Submission:
    """``request`` submitted until acknowledged, always under its client order id."""
    while True:
        try:
            (submission,) = journal.submit_many([request])
            return submission
        except NOT_ACKNOWLEDGED as exc:
            refusals.append((time.monotonic(), f"{type(exc).__name__}: {exc}"))
            journal.bus.reconnect()
            stop.wait(0.05)


@dataclass
class Reader:
    """Follows every shard's output stream, keeping each event as it was read."""

    url: str
    stop: threading.Event
    seen: dict[int, dict[bytes, bytes]] = field(default_factory=lambda: {shard: {} for shard in range(SHARDS)})

    def run(self) -> None:
        buses = {shard: connect(self.url, shard) for shard in range(SHARDS)}
        positions = dict.fromkeys(range(SHARDS), "0-0")
        while not self.stop.is_set():
            for shard, bus in buses.items():
                try:
                    entries = bus.read(bus.keys.events, positions[shard], count=1000, block_ms=20)
                except redis.RedisError:
                    bus.reconnect()
                    continue
                for entry_id, fields in entries:
                    self.seen[shard][entry_id] = fields[b"event"]
                    positions[shard] = entry_id.decode()
        for bus in buses.values():
            bus.close()


def progressed(load: Load, by: int) -> Callable[[], bool]:
    start = len(load.acked)
    return lambda: len(load.acked) >= start + by


def epochs(buses: dict[int, ClusterBus]) -> dict[int, int]:
    found = {}
    for shard, bus in buses.items():
        offset = read_offset(bus)
        found[shard] = offset.epoch if offset else 0
    return found


def master_node(bus: ClusterBus) -> int:
    """The port of the master serving the shard now."""
    bus.reconnect()
    return int(bus.client.connection_pool.connection_kwargs["port"])


def replica_port(bus: ClusterBus) -> int:
    info = bus.client.info("replication")
    return int(info["slave0"]["port"])


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EmbeddedCluster]:
    with EmbeddedCluster(
        tmp_path / "cluster", masters=3, replicas=1, shards=SHARDS, node_timeout_ms=1000, min_replicas_to_write=1
    ) as running:
        yield running


def test_a_sharded_cluster_loses_nothing_under_leader_replica_and_master_faults(
    cluster: EmbeddedCluster, tmp_path: Path
) -> None:
    url = cluster.url
    buses = {shard: connect(url, shard) for shard in range(SHARDS)}
    for shard, bus in buses.items():
        Journal(bus, Durability.REPLICATED).submit(
            CreateMarket(seq=0, ts=0, market_id=f"m{shard}", scheme=TickScheme.BINARY)
        )
    Journal(buses[0], Durability.REPLICATED).submit(Deposit(seq=0, ts=0, account=MOVER, amount=MOVER_CASH))
    stop, relays_stop = threading.Event(), threading.Event()
    loads = [Load(url, shard, stop) for shard in range(SHARDS)]
    reader = Reader(url, stop)
    transfers: dict[str, int] = {}  # acknowledged transfer id -> its target shard
    transfer_refusals: list[tuple[float, str]] = []

    def move() -> None:
        bus = connect(url, 0)
        journal = Journal(bus, Durability.REPLICATED)
        i = 0
        while not stop.is_set():
            i += 1
            transfer_id, target = f"{MOVER}:{i}", 1 + i % 2
            command = TransferOut(seq=0, ts=0, account=MOVER, amount=7, transfer_id=transfer_id, to_shard=target)
            acknowledge(journal, Request(command, f"t-{i}"), transfer_refusals, stop)
            transfers[transfer_id] = target
            stop.wait(0.05)
        bus.close()

    relay_buses: list[ClusterBus] = []

    def relay(shard: int) -> Callable[[], None]:
        journals: dict[int, Journal] = {}

        def journal_of(target: int) -> Journal:
            if target not in journals:
                journals[target] = Journal(connect(url, target), Durability.REPLICATED)
            return journals[target]

        bus = connect(url, shard)
        relay_buses.append(bus)
        sink = TransferRelay(shard, journal_of, relays_stop)
        return GroupConsumer(bus, sink, ConsumerConfig(group="transfers", block_ms=50), relays_stop).run

    candidates = Candidates(url, tmp_path)
    try:
        with ExitStack() as stack:
            for shard in range(SHARDS):
                stack.enter_context(in_thread(relay(shard), relays_stop))
            with ExitStack() as running:
                for work in (*(load.run for load in loads), reader.run, move):
                    running.enter_context(in_thread(work, stop))
                for load in loads:
                    wait_until(progressed(load, 30), timeout=60, message=f"orders acknowledged on shard {load.shard}")

                # 1. SIGKILL shard 0's leader: the other candidate takes over
                candidates.kill(candidates.leader(buses[0]))
                wait_until(progressed(loads[0], 30), timeout=30, message="shard 0 after its leader was killed")
                # 2. SIGSTOP shard 1's leader past its lease: fenced, the other takes over; then it goes on
                paused = candidates.leader(buses[1])
                candidates.signal(paused, signal.SIGSTOP)
                time.sleep(2 * LOCK_TTL_MS / 1000)
                candidates.signal(paused, signal.SIGCONT)
                wait_until(progressed(loads[1], 30), timeout=30, message="shard 1 after its leader was paused")
                # 3. freeze shard 2's replica: acknowledgements wait (replicated), nothing is lost
                frozen = cluster.node_serving(replica_port(buses[2]))
                assert frozen.process is not None
                frozen.process.send_signal(signal.SIGSTOP)
                time.sleep(1.5)
                frozen.process.send_signal(signal.SIGCONT)
                wait_until(progressed(loads[2], 30), timeout=30, message="shard 2 after its replica was frozen")
                # 4. SIGKILL shard 1's master: its replica is promoted; shards 0 and 2 notice nothing
                before = epochs({0: buses[0], 2: buses[2]})
                port = master_node(buses[1])
                victim = cluster.node_serving(port)
                killed_at = time.monotonic()
                victim.kill()
                wait_until(lambda: master_node(buses[1]) != port, timeout=30, message="shard 1's replica promoted")
                victim.start()  # back as the new master's replica: replicated durability needs one to acknowledge
                wait_until(progressed(loads[1], 30), timeout=60, message="shard 1 after its master was killed")
                back_at = time.monotonic()
                for shard in (0, 2):
                    assert not [what for at, what in loads[shard].refusals if killed_at <= at <= back_at], shard
                assert epochs({0: buses[0], 2: buses[2]}) == before
                # 5. restart a node (shard 0's replica, cleanly)
                restarted = cluster.node_serving(replica_port(buses[0]))
                restarted.stop()
                restarted.start()
                wait_until(progressed(loads[0], 30), timeout=30, message="shard 0 after its replica restarted")

            # every acknowledged order and transfer matched, every transfer paid in
            for shard, bus in buses.items():

                def matched(bus: ClusterBus = bus) -> bool:
                    offset = read_offset(bus)
                    return offset is not None and offset.id == bus.last_generated_id(bus.keys.input)

                wait_until(matched, timeout=60, message=f"shard {shard}'s leader matching its whole journal")

            def paid_in() -> bool:
                return set(transfers) <= {
                    event.transfer_id for event in events_of(buses[1], buses[2]) if isinstance(event, TransferredIn)
                }

            wait_until(paid_in, timeout=60, message="every acknowledged transfer paid in")
            relays_stop.set()
    finally:
        stop.set()
        relays_stop.set()
        candidates.close()

    for shard, bus in buses.items():
        stream = {entry_id: fields[b"event"] for entry_id, fields in bus.range(bus.keys.events)}
        changed = {entry_id for entry_id, raw in reader.seen[shard].items() if stream.get(entry_id) != raw}
        assert not changed, f"shard {shard}: {len(changed)} events a reader saw vanished or changed"
        acked = loads[shard].acked
        decoded = [decode_event(raw).event for raw in stream.values()]
        outcomes = Counter(e.order_id for e in decoded if isinstance(e, OrderAccepted | Rejected))
        lost = [cid for cid, submission in acked.items() if outcomes[submission.order_id] == 0]
        assert not lost, f"shard {shard}: {len(lost)} of {len(acked)} acknowledged orders lost"
        twice = [cid for cid, submission in acked.items() if outcomes[submission.order_id] > 1]
        assert not twice, f"shard {shard}: {len(twice)} orders matched twice"
        assert len({s.order_id for s in acked.values()}) == len(acked)  # each acknowledged once, under its id
    outs = Counter(e.transfer_id for e in events_of(buses[0]) if isinstance(e, TransferredOut))
    ins = Counter(e.transfer_id for e in events_of(buses[1], buses[2]) if isinstance(e, TransferredIn))
    assert set(transfers) <= set(outs)
    assert all(outs[t] == 1 and ins[t] == 1 for t in outs), "a transfer moved money twice"
    held = sum(last_balance(bus, MOVER) for bus in buses.values())
    assert held == MOVER_CASH  # moved across shards, nothing made or lost
    assert len(transfers) > 10
    for bus in (*buses.values(), *relay_buses):
        bus.close()


def events_of(*buses: ClusterBus) -> list[object]:
    return [decode_event(fields[b"event"]).event for bus in buses for _, fields in bus.range(bus.keys.events)]


def last_balance(bus: ClusterBus, account: str) -> int:
    changes = [e for e in events_of(bus) if isinstance(e, BalanceChanged) and e.account == account]
    return changes[-1].total if changes else 0
