"""``matchbox chaos --cluster``: three shards on a local Valkey Cluster under seeded cluster faults.

A 3-master, 3-replica cluster from the embedded binary, in replicated durability, with two
``matchbox engine`` candidates per shard and a transfer relay per shard. Clients submit orders to
every shard and transfers from shard 0, each under a client order id and retried under it until
acknowledged, as a real client does; a reader follows every shard's output stream. At seeded
times: a leader SIGKILLed or SIGSTOPped past its lease, a replica frozen, a master SIGKILLed (its
replica is promoted; it comes back as a replica), a node restarted. Then, once quiet:

- every acknowledged order was matched exactly once;
- every event the reader saw is still in its stream, byte for byte;
- while a shard's master failed over, the other shards took every order and kept their epoch;
- every acknowledged transfer was paid in exactly once, and money was conserved across shards.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import msgspec
import redis
from rich.console import Console
from rich.table import Table

from matchbox.bus.cluster import ClusterBus
from matchbox.bus.codec import decode_event
from matchbox.bus.commit import Uncertified, read_offset
from matchbox.bus.durability import Durability, DurabilityError
from matchbox.bus.journal import Journal, Request, Submission
from matchbox.bus.outage import REDIS_DOWN
from matchbox.bus.server import EmbeddedCluster
from matchbox.consumers.runner import ConsumerConfig, GroupConsumer
from matchbox.consumers.transfers import TransferRelay, journal_cache
from matchbox.engine.types import (
    BalanceChanged,
    CreateMarket,
    Deposit,
    Event,
    OrderAccepted,
    PlaceOrder,
    Rejected,
    Side,
    TickScheme,
    TransferOut,
    TransferredIn,
    TransferredOut,
)

SHARDS = 3
LOCK_TTL_MS = 1500
MOVER = "mover"
MOVER_CASH = 1_000_000
KINDS = ("kill-leader", "stop-leader", "freeze-replica", "kill-master", "restart-node")
EVERY_S = 5.0
QUIET_TIMEOUT_S = 60.0
NOT_ACKNOWLEDGED = (*REDIS_DOWN, DurabilityError, Uncertified, redis.ResponseError)


class ChaosError(RuntimeError):
    """The run could not go on: a shard that never came back."""


def connect(url: str, shard: int) -> ClusterBus:
    return ClusterBus.connect(url, shard, socket_timeout=3.0)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise ChaosError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


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

        wait_for(leading, 30, f"a leader of shard {bus.keys.shard}")
        return found[0]

    def kill(self, name: str) -> None:
        shard, process = self.processes[name]
        process.kill()
        process.wait(10)
        self.start(name, shard)

    def signal(self, name: str, signum: signal.Signals) -> None:
        self.processes[name][1].send_signal(signum)

    def exited(self) -> list[str]:
        """The candidates that died on their own (each started again)."""
        dead = [name for name, (_, process) in self.processes.items() if process.poll() is not None]
        for name in dead:
            self.start(name, self.processes[name][0])
        return dead

    def close(self) -> None:
        for _, process in self.processes.values():
            process.send_signal(signal.SIGCONT)
            process.terminate()
        for _, process in self.processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def acknowledge(
    journal: Journal, request: Request, refusals: list[tuple[float, str]], stop: threading.Event
) -> Submission | None:
    """``request`` submitted until acknowledged, always under its client order id (None: stopped)."""
    while not stop.is_set():
        try:
            (submission,) = journal.submit_many([request])
            return submission
        except NOT_ACKNOWLEDGED as exc:
            refusals.append((time.monotonic(), f"{type(exc).__name__}: {exc}"))
            journal.bus.reconnect()
            stop.wait(0.05)
    return None


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
            submission = acknowledge(journal, Request(command, cid), self.refusals, self.stop)
            if submission is not None:
                self.acked[cid] = submission
        bus.close()


@dataclass
class Mover:
    """Transfers of ``MOVER``'s cash from shard 0 to shards 1 and 2, each under its client order id."""

    url: str
    stop: threading.Event
    transfers: dict[str, int] = field(default_factory=dict)  # acknowledged transfer id -> target shard
    refusals: list[tuple[float, str]] = field(default_factory=list)

    def run(self) -> None:
        bus = connect(self.url, 0)
        journal = Journal(bus, Durability.REPLICATED)
        i = 0
        while not self.stop.is_set():
            i += 1
            transfer_id, target = f"{MOVER}:{i}", 1 + i % 2
            command = TransferOut(seq=0, ts=0, account=MOVER, amount=7, transfer_id=transfer_id, to_shard=target)
            if acknowledge(journal, Request(command, f"t-{i}"), self.refusals, self.stop) is not None:
                self.transfers[transfer_id] = target
            self.stop.wait(0.05)
        bus.close()


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


def relay(url: str, shard: int, stop: threading.Event, buses: list[ClusterBus]) -> Callable[[], None]:
    """A transfer relay of ``shard``, to run; every bus it opens goes into ``buses``, for closing."""

    def opened(target: int) -> ClusterBus:
        bus = connect(url, target)
        buses.append(bus)
        return bus

    sink = TransferRelay(shard, journal_cache(opened, Durability.REPLICATED), stop)
    return GroupConsumer(opened(shard), sink, ConsumerConfig(group="transfers", block_ms=50), stop).run


def epochs(buses: dict[int, ClusterBus]) -> dict[int, int]:
    found = {}
    for shard, bus in buses.items():
        offset = read_offset(bus)
        found[shard] = offset.epoch if offset else 0
    return found


def master_port(bus: ClusterBus) -> int:
    """The port of the master serving the shard now."""
    bus.reconnect()
    return int(bus.client.connection_pool.connection_kwargs["port"])


def replica_port(bus: ClusterBus) -> int:
    return int(bus.client.info("replication")["slave0"]["port"])


def events_of(*buses: ClusterBus) -> list[Event]:
    return [decode_event(fields[b"event"]).event for bus in buses for _, fields in bus.range(bus.keys.events)]


def last_balance(bus: ClusterBus, account: str) -> int:
    changes = [e for e in events_of(bus) if isinstance(e, BalanceChanged) and e.account == account]
    return changes[-1].total if changes else 0


# --------------------------------------------------------------------------- the exchange, its faults


@dataclass
class FaultRecord:
    kind: str
    shard: int
    at: float
    detail: str = ""
    isolated: bool = True  # a master's failover: the other shards saw no refusal and no new epoch


class Exchange:
    """The cluster, the candidates, the relays, the load, the mover and the reader, started."""

    def __init__(self, cluster: EmbeddedCluster, folder: Path, stack: ExitStack) -> None:
        self.cluster = cluster
        url = self.url = cluster.url
        self.buses = {shard: connect(url, shard) for shard in range(SHARDS)}
        for shard, bus in self.buses.items():
            Journal(bus, Durability.REPLICATED).submit(
                CreateMarket(seq=0, ts=0, market_id=f"m{shard}", scheme=TickScheme.BINARY)
            )
        Journal(self.buses[0], Durability.REPLICATED).submit(Deposit(seq=0, ts=0, account=MOVER, amount=MOVER_CASH))
        self.stop, self.relays_stop = threading.Event(), threading.Event()
        self.loads = [Load(url, shard, self.stop) for shard in range(SHARDS)]
        self.reader = Reader(url, self.stop)
        self.mover = Mover(url, self.stop)
        self.candidates = Candidates(url, folder)
        stack.callback(self.candidates.close)
        self.relay_buses: list[ClusterBus] = []
        stack.callback(self._close_relay_buses)  # once the relays below have stopped
        for shard in range(SHARDS):
            stack.enter_context(_in_thread(relay(url, shard, self.relays_stop, self.relay_buses), self.relays_stop))
        self.traffic = ExitStack()
        for work in (*(load.run for load in self.loads), self.reader.run, self.mover.run):
            self.traffic.enter_context(_in_thread(work, self.stop))
        self.faults: list[FaultRecord] = []
        self.died: list[str] = []

    def progressed(self, shard: int, by: int = 20, timeout: float = 60) -> None:
        start = len(self.loads[shard].acked)
        wait_for(lambda: len(self.loads[shard].acked) >= start + by, timeout, f"orders on shard {shard}")

    def inject(self, kind: str, shard: int, rng: random.Random) -> None:
        record = FaultRecord(kind, shard, time.monotonic())
        self.faults.append(record)
        bus, candidates = self.buses[shard], self.candidates
        if kind == "kill-leader":
            record.detail = candidates.leader(bus)
            candidates.kill(record.detail)
        elif kind == "stop-leader":
            record.detail = candidates.leader(bus)
            candidates.signal(record.detail, signal.SIGSTOP)
            time.sleep(rng.uniform(1.0, 2.5) * LOCK_TTL_MS / 1000)
            candidates.signal(record.detail, signal.SIGCONT)
        elif kind == "freeze-replica":
            node = self.cluster.node_serving(replica_port(bus))
            record.detail = f"port {node.port}"
            if node.process is not None:
                node.process.send_signal(signal.SIGSTOP)
                time.sleep(rng.uniform(0.5, 2.0))
                node.process.send_signal(signal.SIGCONT)
        elif kind == "kill-master":
            others = {n: b for n, b in self.buses.items() if n != shard}
            before, started = epochs(others), time.monotonic()
            port = master_port(bus)
            victim = self.cluster.node_serving(port)
            record.detail = f"port {port}"
            victim.kill()
            wait_for(lambda: master_port(bus) != port, 30, f"shard {shard}'s replica promoted")
            victim.start()  # back as the new master's replica: replicated durability needs one
            self.progressed(shard)
            ended = time.monotonic()
            refused = any(started <= at <= ended for n in others for at, _ in self.loads[n].refusals)
            record.isolated = not refused and epochs(others) == before
        else:  # restart-node: a replica, stopped cleanly and started again
            node = self.cluster.node_serving(replica_port(bus))
            record.detail = f"port {node.port}"
            node.stop()
            node.start()
        self.progressed(shard)
        self.died += self.candidates.exited()

    def quiet(self) -> None:
        """Traffic stopped; until every shard matched its journal and every transfer was paid in."""
        self.stop.set()
        self.traffic.close()
        for shard, bus in self.buses.items():

            def matched(bus: ClusterBus = bus) -> bool:
                offset = read_offset(bus)
                return offset is not None and offset.id == bus.last_generated_id(bus.keys.input)

            wait_for(matched, QUIET_TIMEOUT_S, f"shard {shard}'s leader matching its whole journal")

        def paid_in() -> bool:
            seen = {e.transfer_id for e in events_of(self.buses[1], self.buses[2]) if isinstance(e, TransferredIn)}
            return set(self.mover.transfers) <= seen

        wait_for(paid_in, QUIET_TIMEOUT_S, "every acknowledged transfer paid in")
        self.relays_stop.set()

    def _close_relay_buses(self) -> None:
        for bus in self.relay_buses:
            bus.close()

    def close(self) -> None:
        self.stop.set()
        self.relays_stop.set()
        self.traffic.close()
        for bus in self.buses.values():
            bus.close()


@contextmanager
def _in_thread(work: Callable[[], object], stop: threading.Event) -> Iterator[None]:
    failures: list[BaseException] = []

    def target() -> None:
        try:
            work()
        except BaseException as exc:  # raised on the way out
            failures.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(15)
    if failures:
        raise failures[0]


# --------------------------------------------------------------------------- the checks


@dataclass(frozen=True)
class Check:
    name: str
    held: bool
    detail: str


def checks(exchange: Exchange) -> list[Check]:
    found = []
    for shard, bus in exchange.buses.items():
        stream = {entry_id: fields[b"event"] for entry_id, fields in bus.range(bus.keys.events)}
        seen = exchange.reader.seen[shard]
        changed = [entry_id for entry_id, raw in seen.items() if stream.get(entry_id) != raw]
        found.append(
            Check(
                f"shard {shard}: no event a reader saw vanished or changed",
                not changed,
                f"{len(seen):,} events seen, {len(changed)} changed",
            )
        )
        acked = exchange.loads[shard].acked
        decoded = [decode_event(raw).event for raw in stream.values()]
        outcomes = Counter(e.order_id for e in decoded if isinstance(e, OrderAccepted | Rejected))
        lost = [cid for cid, s in acked.items() if outcomes[s.order_id] == 0]
        twice = [cid for cid, s in acked.items() if outcomes[s.order_id] > 1]
        found.append(
            Check(
                f"shard {shard}: every acknowledged order matched once",
                not lost and not twice,
                f"{len(acked):,} acknowledged, {len(lost)} lost, {len(twice)} twice",
            )
        )
    outs = Counter(e.transfer_id for e in events_of(exchange.buses[0]) if isinstance(e, TransferredOut))
    ins = Counter(
        e.transfer_id for e in events_of(exchange.buses[1], exchange.buses[2]) if isinstance(e, TransferredIn)
    )
    acked_transfers = exchange.mover.transfers
    once = set(acked_transfers) <= set(outs) and all(outs[t] == 1 and ins[t] == 1 for t in outs)
    found.append(
        Check(
            "every acknowledged transfer paid in exactly once",
            once,
            f"{len(acked_transfers):,} acknowledged, {len(outs):,} taken out, {sum(ins.values()):,} paid in",
        )
    )
    held = sum(last_balance(bus, MOVER) for bus in exchange.buses.values())
    found.append(Check("money conserved across shards", held == MOVER_CASH, f"{held:,} held of {MOVER_CASH:,}"))
    failovers = [f for f in exchange.faults if f.kind == "kill-master"]
    found.append(
        Check(
            "a master's failover left the other shards untouched",
            all(f.isolated for f in failovers),
            f"{len(failovers)} failovers",
        )
    )
    found.append(Check("no engine died on its own", not exchange.died, ", ".join(exchange.died) or "none"))
    return found


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class Report:
    seed: int
    seconds: float
    faults: dict[str, int]
    orders_acknowledged: int
    transfers_acknowledged: int
    checks: list[Check]
    violations: int


def schedule(rng: random.Random, seconds: float) -> list[tuple[float, str, int]]:
    """(seconds from the start, kind, shard): every kind once, in a seeded order, then seeded ones."""
    count = max(1, int(seconds / EVERY_S))
    kinds = rng.sample(KINDS, len(KINDS))[:count] + [rng.choice(KINDS) for _ in range(count - len(KINDS))]
    return [(i * seconds / count, kind, rng.randrange(SHARDS)) for i, kind in enumerate(kinds)]


def run_cluster(seconds: float, seed: int, folder: Path, console: Console) -> Report:
    rng = random.Random(seed)
    with ExitStack() as stack:
        cluster = stack.enter_context(
            EmbeddedCluster(
                folder / "cluster", masters=3, replicas=1, shards=SHARDS, node_timeout_ms=1000, min_replicas_to_write=1
            )
        )
        exchange = Exchange(cluster, folder, stack)
        stack.callback(exchange.close)
        for shard in range(SHARDS):
            exchange.progressed(shard)
        started = time.monotonic()
        for at, kind, shard in schedule(rng, seconds):
            time.sleep(max(0.0, started + at - time.monotonic()))
            console.print(f"[dim]{time.monotonic() - started:5.1f} s[/] {kind} on shard {shard}")
            exchange.inject(kind, shard, rng)
        exchange.quiet()
        found = checks(exchange)
        return Report(
            seed=seed,
            seconds=seconds,
            faults=dict(Counter(f.kind for f in exchange.faults)),
            orders_acknowledged=sum(len(load.acked) for load in exchange.loads),
            transfers_acknowledged=len(exchange.mover.transfers),
            checks=found,
            violations=sum(not c.held for c in found),
        )


def run(*, seconds: float, seed: int, json_output: bool, keep: bool) -> int:
    console = Console(stderr=json_output)
    name = tempfile.mkdtemp(prefix="matchbox-chaos-cluster-")
    try:
        try:
            report = run_cluster(seconds, seed, Path(name), console)
        except ChaosError as exc:
            console.print(f"[red]the run could not go on[/]: {exc} (logs in {name}, kept with --keep)")
            return 1
        table = Table(title=f"matchbox chaos --cluster: seed {seed}, {seconds:.0f} s, faults {report.faults}")
        table.add_column("check")
        table.add_column("held")
        table.add_column("")
        for check in report.checks:
            table.add_row(check.name, "yes" if check.held else "[red]NO[/]", check.detail)
        console.print(table)
        console.print(
            f"{report.orders_acknowledged:,} orders and {report.transfers_acknowledged:,} transfers acknowledged; "
            + ("every check held" if not report.violations else f"[red]{report.violations} violations[/]")
        )
        if json_output:
            sys.stdout.write(msgspec.json.encode(asdict(report)).decode() + "\n")
        return 1 if report.violations else 0
    finally:
        if not keep:
            shutil.rmtree(name, ignore_errors=True)
