"""The bus on a real local Valkey Cluster (3 masters, 3 replicas, from the embedded binary): a
shard's calls go to the master of its slot, and in ``replicated`` durability a master killed
under load loses no acknowledged order: its replica is promoted, the bus follows it, the leader
goes on, and every acknowledged entry is in the promoted master's journal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from conftest import ADMIN, api_settings, in_thread, submit_until_stopped, wait_until
from matchbox.api.app import create_app
from matchbox.bus.cluster import ClusterBus
from matchbox.bus.codec import decode_event
from matchbox.bus.commit import read_offset
from matchbox.bus.durability import Durability
from matchbox.bus.journal import Journal
from matchbox.bus.server import EmbeddedCluster, free_ports
from matchbox.consumers.batch import read_newest
from matchbox.consumers.db import open_database
from matchbox.consumers.persistence import PersistenceSink
from matchbox.consumers.runner import ConsumerConfig, GroupConsumer, group_lag
from matchbox.consumers.schema import trades
from matchbox.engine.ids import shard_of
from matchbox.engine.types import CreateMarket, PlaceOrder, Side, TickScheme, TradeExecuted
from matchbox.leader.runner import EngineLeader, LeaderConfig

pytestmark = pytest.mark.e2e  # a six-node cluster, a master killed and a failover

MARKET = "c"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EmbeddedCluster]:
    with EmbeddedCluster(tmp_path, masters=3, replicas=1, node_timeout_ms=1000) as running:
        yield running


@pytest.fixture
def leading(cluster: EmbeddedCluster) -> Iterator[EngineLeader]:
    """A leader of shard 0 over the cluster, in replicated durability."""
    stop = threading.Event()
    bus = ClusterBus.connect(cluster.url, shard=0)
    config = LeaderConfig(lock_ttl_ms=1500, durability=Durability.REPLICATED, snapshot_every=1_000_000)
    leader = EngineLeader(bus, config, stop)
    with in_thread(leader.run, stop):
        yield leader
    bus.close()


def order(i: int) -> PlaceOrder:
    side = Side.BUY if i % 2 == 0 else Side.SELL
    return PlaceOrder(seq=0, ts=0, market_id=MARKET, order_id=0, account=f"a{i % 5}", side=side, price=50, qty=1)


def events_of(bus: ClusterBus) -> list[tuple[str, object]]:
    return [(e.in_id, e.event) for e in (decode_event(f[b"event"]) for _, f in bus.range(bus.keys.events))]


def test_each_shard_lives_on_the_master_of_its_slot(cluster: EmbeddedCluster) -> None:
    for shard in range(4):
        bus = ClusterBus.connect(cluster.url, shard=shard)
        owner = bus.cluster.get_node_from_key(bus.keys.input)  # type: ignore[no-untyped-call]
        assert bus.client.connection_pool.connection_kwargs["port"] == owner.port
        assert Journal(bus, Durability.REPLICATED).submit(order(shard)).status == "new"
        assert bus.client.xlen(bus.keys.input) == 1  # on that master, not another
        bus.close()


@pytest.mark.usefixtures("leading")
def test_a_killed_master_loses_no_acknowledged_order_and_the_leader_goes_on(cluster: EmbeddedCluster) -> None:
    bus = ClusterBus.connect(cluster.url, shard=0)
    journal = Journal(bus, Durability.REPLICATED)
    journal.submit(CreateMarket(seq=0, ts=0, market_id=MARKET, scheme=TickScheme.BINARY))
    acked: list[str] = []
    stop = threading.Event()

    with in_thread(partial(submit_until_stopped, journal, order, acked, stop), stop):
        wait_until(lambda: len(acked) >= 100, message="orders acknowledged before the fault")
        port = bus.client.connection_pool.connection_kwargs["port"]
        victim = cluster.node_serving(port)
        victim.kill()  # SIGKILL the shard's master: its replica is promoted after the node timeout
        at_kill = len(acked)
        # the old master comes back, as the new master's replica: 'replicated' needs one again
        wait_until(lambda: moved(bus, port), timeout=20, message="the replica to be promoted")
        victim.start()
        wait_until(lambda: len(acked) >= at_kill + 100, timeout=30, message="orders acknowledged after the failover")

    held = {entry_id.decode() for entry_id, _ in bus.range(bus.keys.input)}
    lost = [entry for entry in acked if entry not in held]
    assert lost == [], f"{len(lost)} of {len(acked)} acknowledged orders lost in the failover"

    def all_matched() -> bool:
        seen = {in_id for in_id, _ in events_of(bus)}
        return all(entry in seen for entry in acked)

    wait_until(all_matched, timeout=30, message="the leader to match every acknowledged order after the failover")
    trades = [event for _, event in events_of(bus) if isinstance(event, TradeExecuted)]
    assert len({t.trade_id for t in trades}) == len(trades) > 0  # each once
    bus.close()


def moved(bus: ClusterBus, old_port: int) -> bool:
    """Whether the shard's slot is served by another master than ``old_port`` now."""
    bus.reconnect()
    return bool(bus.client.connection_pool.connection_kwargs["port"] != old_port)


def test_settings_that_would_stop_every_shard_are_said_at_start(cluster: EmbeddedCluster) -> None:
    bus = ClusterBus.connect(cluster.url, shard=0)
    assert bus.problems(Durability.ALWAYS) == []  # as EmbeddedCluster configures it
    bus.client.config_set("cluster-require-full-coverage", "yes")
    assert any("cluster-require-full-coverage no" in p for p in bus.problems(Durability.ALWAYS))
    replicated = bus.problems(Durability.REPLICATED)  # min-replicas-to-write is 0 on the embedded cluster
    assert any("min-replicas-to-write" in p for p in replicated)
    bus.client.config_set("cluster-require-full-coverage", "no")
    bus.client.config_set("min-replicas-to-write", "1")
    assert bus.problems(Durability.REPLICATED) == []
    bus.close()


# --------------------------------------------------------------------------- three shards, the API


@pytest.fixture
def sharded_cluster(tmp_path: Path) -> Iterator[EmbeddedCluster]:
    with EmbeddedCluster(tmp_path, masters=3, replicas=1, node_timeout_ms=1000, shards=3) as running:
        yield running


@contextmanager
def leaders_of(url: str, shards: int) -> Iterator[list[EngineLeader]]:
    """A leader candidate for each shard over the cluster, in replicated durability."""
    stop = threading.Event()
    config = LeaderConfig(lock_ttl_ms=1500, durability=Durability.REPLICATED, snapshot_every=1_000_000)
    buses = [ClusterBus.connect(url, shard) for shard in range(shards)]
    leaders = [EngineLeader(bus, config, stop) for bus in buses]
    with ExitStack() as stack:
        for leader in leaders:
            stack.enter_context(in_thread(leader.run, stop))
        yield leaders
    for bus in buses:
        bus.close()


def test_three_shards_sit_on_three_masters_and_the_api_trades_on_each_through_a_failover(
    sharded_cluster: EmbeddedCluster, tmp_path: Path
) -> None:
    url = sharded_cluster.url
    masters = {shard: ClusterBus.connect(url, shard) for shard in range(3)}
    ports = {shard: bus.client.connection_pool.connection_kwargs["port"] for shard, bus in masters.items()}
    assert len(set(ports.values())) == 3  # placed: not left to where the tags happen to hash
    settings = api_settings(url, tmp_path, shards=3, cluster=True, durability=Durability.REPLICATED, open_access=True)
    with leaders_of(url, 3), TestClient(create_app(settings)) as api:
        wait_until(lambda: api.get("/ready").status_code == 200, timeout=20, message="the API over the cluster")
        markets = {}
        for shard, scheme in ((0, "binary"), (1, "odds"), (2, "binary")):
            made = api.post(
                "/v1/markets", json={"market_id": f"c{shard}", "scheme": scheme, "shard": shard}, headers=ADMIN
            )
            assert made.status_code == 201, made.text
            markets[shard] = made.json()

        def trade(shard: int, qty: int = 1) -> dict[str, Any]:
            market = markets[shard]
            price = {"odds": 2.5} if market["scheme"] == "odds" else {"price": 40}
            sizes = {"stake": 100 * qty} if market["scheme"] == "odds" else {"qty": qty}
            words = ("back", "lay") if market["scheme"] == "odds" else ("sell", "buy")
            for side in words:
                placed = api.post(
                    "/v1/orders", json={"market_id": f"c{shard}", "side": side, **price, **sizes, "account": side}
                )
                assert placed.status_code == 201, placed.text
            fill: dict[str, Any] = placed.json()["fills"][0]
            return fill

        assert [shard_of(trade(shard)["trade_id"]) for shard in range(3)] == [0, 1, 2]
        epochs = {shard: api.get("/v1/engine", params={"shard": shard}).json()["epoch"] for shard in range(3)}

        # SIGKILL shard 1's master: its replica is promoted; shards 0 and 2 trade on meanwhile
        victim = sharded_cluster.node_serving(ports[1])
        victim.kill()
        for shard in (0, 2):
            assert shard_of(trade(shard)["trade_id"]) == shard  # no error on the other shards
        wait_until(lambda: moved(masters[1], ports[1]), timeout=20, message="shard 1's replica to be promoted")
        victim.start()  # back as the new master's replica: replicated durability needs one

        def trades_on_shard_1() -> bool:
            answer = api.post(
                "/v1/orders", json={"market_id": "c1", "side": "back", "odds": 2.5, "stake": 100, "account": "x"}
            )
            return answer.status_code == 201

        wait_until(trades_on_shard_1, timeout=30, message="shard 1 to take orders after the failover")
        assert shard_of(trade(1)["trade_id"]) == 1
        after = {shard: api.get("/v1/engine", params={"shard": shard}).json()["epoch"] for shard in range(3)}
        assert (after[0], after[2]) == (epochs[0], epochs[2])  # no new leader where nothing failed
    for bus in masters.values():
        bus.close()


def test_accounts_and_keys_live_in_a_slot_of_their_own_on_a_cluster(
    sharded_cluster: EmbeddedCluster, tmp_path: Path
) -> None:
    settings = api_settings(sharded_cluster.url, tmp_path, shards=3, cluster=True, durability=Durability.REPLICATED)
    with leaders_of(sharded_cluster.url, 3), TestClient(create_app(settings)) as api:
        made = api.post("/v1/admin/accounts", json={"account": "keyed"}, headers=ADMIN)
        assert made.status_code == 201, made.text
        key = {"Authorization": f"Bearer {made.json()['api_key']}"}
        funded = api.post("/v1/admin/accounts/keyed/deposit", json={"amount": 500, "shard": 2}, headers=ADMIN)
        assert funded.status_code == 200, funded.text
        balance = api.get("/v1/account", headers=key).json()
        assert (balance["total"], [p["total"] for p in balance["shards"]]) == (500, [0, 0, 500])


def test_a_consumer_and_the_leaders_follow_a_failover_and_miss_nothing(
    cluster: EmbeddedCluster, tmp_path: Path
) -> None:
    """The shard's master is SIGKILLed under load: while no master serves its slot the leader and
    the consumer get connection errors, CLUSTERDOWN or MOVED, wait, and go on with the promoted
    replica; every trade is stored once."""
    bus = ClusterBus.connect(cluster.url, shard=0)
    journal = Journal(bus, Durability.REPLICATED)
    journal.submit(CreateMarket(seq=0, ts=0, market_id=MARKET, scheme=TickScheme.BINARY))
    database = open_database(None, tmp_path)
    consumer_bus = ClusterBus.connect(cluster.url, shard=0)
    stop = threading.Event()
    consumer = GroupConsumer(
        consumer_bus, PersistenceSink(database), ConsumerConfig(group="persistence", block_ms=50), stop
    )
    acked: list[str] = []
    with leaders_of(cluster.url, 1), in_thread(consumer.run, stop):
        feeding = threading.Event()
        with in_thread(partial(submit_until_stopped, journal, order, acked, feeding), feeding):
            wait_until(lambda: len(acked) >= 50, message="orders before the fault")
            port = bus.client.connection_pool.connection_kwargs["port"]
            victim = cluster.node_serving(port)
            victim.kill()
            wait_until(lambda: moved(bus, port), timeout=20, message="the replica to be promoted")
            victim.start()
            at = len(acked)
            wait_until(lambda: len(acked) >= at + 50, timeout=30, message="orders after the failover")

        def stored_all() -> bool:
            streamed = {e.trade_id for _, e in events_of(bus) if isinstance(e, TradeExecuted)}
            with database.connect() as connection:
                stored = set(connection.execute(sa.select(trades.c.trade_id)).scalars())
            offset = read_offset(bus)
            newest = offset is not None and read_newest(database, "persistence") == offset.last_event
            return newest and stored == streamed

        # well before the 30 s after which another consumer would reclaim what it had in hand
        wait_until(stored_all, timeout=15, message="the consumer to store every trade after the failover")
    streamed = {e.trade_id for _, e in events_of(bus) if isinstance(e, TradeExecuted)}
    assert len(streamed) > 0
    bus.close()
    consumer_bus.close()


def test_an_engine_and_a_consumer_started_before_the_cluster_wait_for_it(tmp_path: Path) -> None:
    """Started while no node answers, each says what it waits for and stays up; once the cluster
    is there the engine leads and the consumer stores what it commits."""
    base = free_ports(12)
    env = {key: value for key, value in os.environ.items() if not key.startswith("MATCHBOX_")}
    env |= {
        "REDIS_URL": f"redis://127.0.0.1:{base},127.0.0.1:{base + 1},127.0.0.1:{base + 2}",
        "MATCHBOX_CLUSTER": "1",
        "MATCHBOX_DATA_DIR": str(tmp_path),
        "MATCHBOX_LOCK_TTL_MS": "1000",
    }
    logs = {name: tmp_path / f"{name}.log" for name in ("engine", "consumer")}
    argv = {
        "engine": ["engine", "--shard", "0", "--name", "early"],
        "consumer": ["consume", "persistence", "--shard", "0"],
    }
    processes = {}
    for name, args in argv.items():
        with logs[name].open("wb") as out:
            processes[name] = subprocess.Popen(
                [sys.executable, "-m", "matchbox", *args], env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL
            )
    try:
        for name, log in logs.items():
            wait_until(partial(says_it_waits, log), timeout=30, message=f"{name} waiting for the cluster")
            assert processes[name].poll() is None, log.read_text()
        with EmbeddedCluster(tmp_path / "cluster", base_port=base, shards=1) as cluster:
            bus = ClusterBus.connect(cluster.url, 0)
            wait_until(lambda: bus.client.hget(bus.keys.leader_info, "name") == b"early", timeout=30, message="lead")
            journal = Journal(bus, Durability.ALWAYS)
            journal.submit(CreateMarket(seq=0, ts=0, market_id=MARKET, scheme=TickScheme.BINARY))
            for i in range(1, 5):
                journal.submit(order(i))

            def stored() -> bool:
                lag = {g.name: g for g in group_lag(bus, bus.keys.events)}.get("persistence")
                return lag is not None and lag.lag == lag.pending == 0 and bus.client.xlen(bus.keys.events) > 0

            wait_until(stored, timeout=30, message="the consumer storing the engine's events")
            bus.close()
            for process in processes.values():
                process.send_signal(signal.SIGTERM)
            assert [process.wait(30) for process in processes.values()] == [0, 0]
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()


def says_it_waits(log: Path) -> bool:
    return "waiting for Redis" in log.read_text()
