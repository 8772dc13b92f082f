"""``matchbox bench failover``: how long the exchange stops matching when its leader dies.

A private Valkey (AOF everysec) in a temporary folder, three ``python -m matchbox engine``
candidates, one binary market and a steady trickle of orders (a ``submit_many`` of 10 every
5 ms). Then, ``kills`` times: let the candidates settle (at least a TTL, plus a random part of
the lock's renewal period), SIGKILL the leader and time, from the kill, the first commit of its
successor (the offset hash's ``epoch`` moving on, polled every 2 ms), then start a replacement.

With ``resting`` orders (``--resting 1000000``), the first candidate leads alone while that many
orders that rest (bids 1..45, asks 55..99, outside the trickle's prices) are journalled and
committed; the other candidates start after that, and every kill waits until each standby has
logged that it is warm (restored the newest snapshot and caught up with the journal), as a
replacement must before it counts as a standby.

The baseline is the lock TTL in the same run: a successor cannot win before the dead leader's
lock lapses, one TTL after its last renewal (renewals come every TTL/3, so between two thirds
of a TTL and a whole TTL after the kill). A failover shorter than that would mean the lock was
won before it lapsed; what it takes beyond is the candidates' polling (they try again as soon as
the holder's lock could have lapsed), the successor's catch-up (its warm standby engine replays
what was committed since its last step) and its first commit.
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec
from rich.console import Console
from rich.table import Table

from matchbox.bus.commit import read_offset
from matchbox.bus.connection import Bus, id_order
from matchbox.bus.durability import Durability
from matchbox.bus.journal import Journal, Request
from matchbox.bus.server import EmbeddedValkey
from matchbox.engine.types import CreateMarket, PlaceOrder, Side, TickScheme

MARKET = "bench"
CANDIDATES = 3
TRICKLE_BATCH = 10
TRICKLE_INTERVAL = 0.005  # seconds between batches
POLL_INTERVAL = 0.002  # seconds between reads of the offset's epoch
LOAD_CHUNK = 1000  # resting orders per submit_many
WARM = "standby warm"  # what a standby logs once it has caught up (matchbox.leader.standby)


class BenchError(RuntimeError):
    """A candidate did not lead, or a failover did not complete, within its deadline."""


# --------------------------------------------------------------------------- the candidates


class Fleet:
    """Leader candidates, each ``python -m matchbox engine --name bench-<i>`` logging to a file."""

    def __init__(self, redis_url: str, lock_ttl_ms: int, folder: Path) -> None:
        self.folder = folder
        self.env = {**os.environ, "REDIS_URL": redis_url, "MATCHBOX_LOCK_TTL_MS": str(lock_ttl_ms)}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.bus = Bus.connect(redis_url)

    def spawn(self) -> str:
        name = f"bench-{len(self.processes) + 1}"
        with (self.folder / f"{name}.log").open("wb") as log:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "matchbox", "engine", "--name", name],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return name

    def live_leader(self) -> str | None:
        """The candidate named in the leader lock (``<name>:<random>``), if it is one of ours and alive."""
        value = self.bus.client.get(self.bus.keys.leader)
        if not isinstance(value, bytes):
            return None
        name = value.decode().rpartition(":")[0]
        process = self.processes.get(name)
        return name if process is not None and process.poll() is None else None

    def kill(self, name: str) -> None:
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        process.wait()

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
        for process in self.processes.values():
            process.wait()
        self.bus.close()

    def warm(self, name: str) -> bool:
        """Whether the candidate has logged that its standby engine caught up."""
        return WARM in (self.folder / f"{name}.log").read_text(errors="replace")

    def log_tail(self, lines: int = 5) -> str:
        parts = []
        for name in self.processes:
            text = (self.folder / f"{name}.log").read_text(errors="replace").splitlines()
            parts += [f"{name}: {line}" for line in text[-lines:]]
        return "\n".join(parts)


# --------------------------------------------------------------------------- the order flow


class Trickle(threading.Thread):
    """Keeps orders flowing: ``TRICKLE_BATCH`` limit orders around 50 every ``TRICKLE_INTERVAL`` s."""

    def __init__(self, redis_url: str, seed: int = 7) -> None:
        super().__init__(name="trickle", daemon=True)
        self.redis_url = redis_url
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.error: Exception | None = None

    def order(self) -> PlaceOrder:
        """Around the middle of the book, so some orders trade."""
        rng = self.rng
        side = rng.choice((Side.BUY, Side.SELL))
        return _order(f"a{rng.randrange(50)}", side, rng.randint(46, 54), rng.randint(1, 10))

    def run(self) -> None:
        bus = Bus.connect(self.redis_url)
        try:
            journal = Journal(bus, Durability.EVERYSEC)
            while not self.stop.wait(TRICKLE_INTERVAL):
                journal.submit_many([Request(self.order()) for _ in range(TRICKLE_BATCH)])
        except Exception as exc:  # reported by run(): a thread's traceback would be lost
            self.error = exc
        finally:
            bus.close()


# --------------------------------------------------------------------------- measuring


@dataclass(frozen=True, slots=True)
class Failover:
    killed: str
    successor: str
    ms: float


@dataclass(frozen=True, slots=True)
class Figures:
    lock_ttl_ms: int
    failover_ms: list[float]
    min_ms: float
    median_ms: float
    max_ms: float
    ratio_to_ttl: float  # median failover / lock TTL
    inputs: int  # journal entries by the end (what a successor may have to replay)
    resting: int  # orders resting in the book before the first kill


def _epoch(bus: Bus) -> int:
    value = bus.client.hget(bus.keys.offset, "epoch")
    return int(value) if isinstance(value, bytes) else 0


def _wait_until(ready: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise BenchError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.05)


def load(fleet: Fleet, resting: int, seed: int) -> None:
    """Journal ``resting`` orders that rest, and wait until the leader has committed them."""
    rng = random.Random(seed)
    journal = Journal(fleet.bus, Durability.EVERYSEC)
    last = ""
    for start in range(0, resting, LOAD_CHUNK):
        requests = [Request(_resting_order(rng)) for _ in range(min(LOAD_CHUNK, resting - start))]
        last = journal.submit_many(requests)[-1].entry_id

    def committed() -> bool:
        offset = read_offset(fleet.bus)
        return offset is not None and id_order(offset.id) >= id_order(last)

    _wait_until(committed, 120 + resting / 5000, f"committing {resting:,} resting orders")


def _resting_order(rng: random.Random) -> PlaceOrder:
    """Away from the middle, so it rests: bids up to 45, asks from 55."""
    buy = rng.random() < 0.5
    price = rng.randint(1, 45) if buy else rng.randint(55, 99)
    return _order(f"r{rng.randrange(10_000)}", Side.BUY if buy else Side.SELL, price, rng.randint(1, 100))


def _order(account: str, side: Side, price: int, qty: int) -> PlaceOrder:
    """A limit order on the benchmark's market (seq, ts and the order id are the journal's)."""
    return PlaceOrder(seq=0, ts=0, market_id=MARKET, order_id=0, account=account, side=side, price=price, qty=qty)


def _wait_for_standbys(fleet: Fleet, timeout: float) -> None:
    """Every live candidate but the leader has a warm standby engine."""
    leader = _wait_for_leader(fleet, timeout)
    standbys = [name for name, process in fleet.processes.items() if name != leader and process.poll() is None]
    _wait_until(lambda: all(fleet.warm(name) for name in standbys), timeout, "the standbys' warming up")


def _wait_for_leader(fleet: Fleet, timeout: float) -> str:
    """A live leader that has committed in its own epoch."""
    deadline = time.monotonic() + timeout
    while True:
        name = fleet.live_leader()
        info_name, info_epoch = fleet.bus.client.hmget(fleet.bus.keys.leader_info, ["name", "epoch"])
        if (
            name is not None
            and isinstance(info_name, bytes)
            and info_name.decode() == name
            and isinstance(info_epoch, bytes)
            and int(info_epoch) == _epoch(fleet.bus)
        ):
            return name
        if time.monotonic() > deadline:
            raise BenchError(f"no candidate led and committed within {timeout:.0f} s")
        time.sleep(0.01)


def fail_over(fleet: Fleet, timeout: float) -> Failover:
    """SIGKILL the leader; the time until a commit under a newer epoch, in ms."""
    killed = _wait_for_leader(fleet, timeout)
    before = _epoch(fleet.bus)
    started = time.perf_counter()
    fleet.kill(killed)
    deadline = time.monotonic() + timeout
    while _epoch(fleet.bus) <= before:
        if time.monotonic() > deadline:
            raise BenchError(f"no successor committed within {timeout:.0f} s of killing {killed}")
        time.sleep(POLL_INTERVAL)
    elapsed_ms = (time.perf_counter() - started) * 1000
    successor = fleet.live_leader() or "?"
    return Failover(killed, successor, round(elapsed_ms, 1))


def summarize(lock_ttl_ms: int, failovers: list[Failover], inputs: int, resting: int = 0) -> Figures:
    times = [f.ms for f in failovers]
    median = statistics.median(times)
    return Figures(
        lock_ttl_ms=lock_ttl_ms,
        failover_ms=times,
        min_ms=min(times),
        median_ms=round(median, 1),
        max_ms=max(times),
        ratio_to_ttl=round(median / lock_ttl_ms, 3),
        inputs=inputs,
        resting=resting,
    )


def measure(
    kills: int, lock_ttl_ms: int, console: Console, seed: int = 7, resting: int = 0
) -> tuple[list[Failover], int]:
    timeout = 10 + 10 * lock_ttl_ms / 1000 + resting / 50_000  # a replacement restores the whole book
    # Before each kill: time for a replacement to import and connect, plus a random part of the
    # renewal period, so that kills fall at every phase of the lock's renewal cycle (a fixed pause
    # after a takeover would always kill just after a renewal, when the lock has a whole TTL left).
    settle = max(0.5, lock_ttl_ms / 1000)
    renewal = lock_ttl_ms / 3000
    jitter = random.Random(seed)
    with (
        tempfile.TemporaryDirectory(prefix="matchbox-bench-failover-") as tmp,
        EmbeddedValkey(Path(tmp) / "valkey", fsync="everysec") as server,
    ):
        fleet = Fleet(server.url, lock_ttl_ms, Path(tmp))
        trickle = Trickle(server.url, seed)
        try:
            fleet.spawn()
            Journal(fleet.bus, Durability.EVERYSEC).submit(
                CreateMarket(seq=0, ts=0, market_id=MARKET, scheme=TickScheme.BINARY)
            )
            if resting:
                with console.status(f"journalling and committing {resting:,} resting orders"):
                    load(fleet, resting, seed)
            for _ in range(CANDIDATES - 1):
                fleet.spawn()
            trickle.start()
            failovers: list[Failover] = []
            for i in range(kills):
                with console.status(f"kill {i + 1} of {kills}: letting the candidates settle, then SIGKILL"):
                    _wait_for_standbys(fleet, timeout)
                    time.sleep(settle + jitter.uniform(0, renewal))
                    if trickle.error is not None:
                        raise BenchError(f"submitting orders failed: {trickle.error!r}")
                    failover = fail_over(fleet, timeout)
                failovers.append(failover)
                console.print(f"kill {i + 1}: {failover.killed} -> {failover.successor} in {failover.ms:.1f} ms")
                fleet.spawn()
            offset = read_offset(fleet.bus)
            return failovers, offset.inputs if offset else 0
        except BenchError:
            console.print(fleet.log_tail())
            raise
        finally:
            trickle.stop.set()
            trickle.join(5)
            fleet.close()


# --------------------------------------------------------------------------- report


def render(figures: Figures, failovers: list[Failover], console: Console) -> None:
    ttl = figures.lock_ttl_ms
    book = f", {figures.resting:,} resting orders" if figures.resting else ""
    table = Table(title=f"matchbox bench failover: {len(failovers)} SIGKILLs of the leader, lock TTL {ttl} ms{book}")
    table.add_column("kill")
    table.add_column("leader -> successor")
    table.add_column("failover", justify="right")
    table.add_column("lock TTL (baseline)", justify="right")
    table.add_column("failover / TTL", justify="right")
    for i, failover in enumerate(failovers, start=1):
        table.add_row(
            str(i),
            f"{failover.killed} -> {failover.successor}",
            f"{failover.ms:.1f} ms",
            f"{ttl} ms",
            _ratio(failover.ms, ttl),
        )
    table.add_section()
    for label, value in (("min", figures.min_ms), ("median", figures.median_ms), ("max", figures.max_ms)):
        table.add_row(label, "", f"{value:.1f} ms", f"{ttl} ms", _ratio(value, ttl))
    console.print(table)
    console.print(
        f"median failover / lock TTL: [bold]{figures.ratio_to_ttl:.2f}x[/]   "
        f"(from the SIGKILL to the successor's first commit, polled every {POLL_INTERVAL * 1000:.0f} ms; "
        f"orders: {TRICKLE_BATCH} every {TRICKLE_INTERVAL * 1000:.0f} ms; journal: {figures.inputs:,} entries)"
    )
    console.print(f"slowest failover beyond the TTL: [bold]{figures.max_ms - ttl:+.1f} ms[/]")


def _ratio(ms: float, ttl_ms: int) -> str:
    return f"{ms / ttl_ms:.2f}x"


def run(*, kills: int = 5, lock_ttl_ms: int = 1000, resting: int = 0, json_output: bool = False) -> int:
    """Measure ``kills`` failovers, print them, and return the exit code (1 if one did not complete)."""
    console = Console(stderr=json_output)
    if kills < 1 or lock_ttl_ms < 200 or resting < 0:
        console.print("[red]kills must be at least 1, the lock TTL at least 200 ms, resting orders at least 0[/]")
        return 2
    try:
        failovers, inputs = measure(kills, lock_ttl_ms, console, resting=resting)
    except BenchError as exc:
        console.print(f"[red]{exc}[/]")
        return 1
    figures = summarize(lock_ttl_ms, failovers, inputs, resting)
    render(figures, failovers, console)
    if json_output:
        document = {
            "lock_ttl_ms": figures.lock_ttl_ms,
            "failover_ms": figures.failover_ms,
            "min_ms": figures.min_ms,
            "median_ms": figures.median_ms,
            "max_ms": figures.max_ms,
            "ratio_to_ttl": figures.ratio_to_ttl,
            "resting": figures.resting,
        }
        sys.stdout.write(msgspec.json.encode(document).decode() + "\n")
    return 0
