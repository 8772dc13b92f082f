"""``matchbox bench shards``: the same order flow matched by one shard, then by three, side by side.

A local Valkey Cluster (3 masters, each with a replica, AOF fsynced on every write) from the
embedded binary, fresh for each run. The flow is three markets' worth of the engine benchmark's
seeded orders, cancels and crossing orders. With one shard all three markets are on shard 0:
its journal holds the three flows interleaved, and one leader matches them. With three shards
market *i* is on shard *i*, placed on master *i*, with a leader each. The leaders (``matchbox
engine`` processes, as deployed) start on journals holding only their markets' creation; once
each leads and has committed it, they are paused (SIGSTOP), the rest of the journals preloaded,
and they are continued together and timed until the last has committed all. Each layout runs
in ``always`` durability (a commit waits for the master's fsync) and in ``replicated`` (and for
a replica to hold it).

What it shows is how far one machine's cores take more shards: here every node, leader and the
benchmark share two cores, so three shards gain less than 3x (see docs/benchmarks.md).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import msgspec
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from matchbox.bench.engine import generate
from matchbox.bus.cluster import ClusterBus
from matchbox.bus.codec import encode_command
from matchbox.bus.commit import read_offset
from matchbox.bus.durability import Durability
from matchbox.bus.server import EmbeddedCluster
from matchbox.engine.ids import shard_id
from matchbox.engine.types import CancelOrder, Command, CreateMarket, PlaceOrder, ReduceOrder, TickScheme

MARKETS = 3
PIPELINE_CHUNK = 2000
LEADER_START_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class Run:
    shards: int
    durability: str
    orders: int
    seconds: float
    orders_per_s: float


@dataclass(frozen=True, slots=True)
class Figures:
    orders: int
    runs: list[Run]
    three_to_one_always: float
    three_to_one_replicated: float
    replicated_to_always_one: float
    replicated_to_always_three: float
    cores: int
    python: str


def flows(orders: int, seed: int) -> list[list[Command]]:
    """Three markets' flows (``orders`` commands in all), market ``m<i>`` each, its ids its own."""
    per_market = orders // MARKETS
    found = []
    for i in range(MARKETS):
        market = f"m{i}"
        commands = [
            msgspec.structs.replace(c, market_id=market) if hasattr(c, "market_id") else c
            for c in generate(per_market, seed + i).commands
        ]
        found.append([CreateMarket(seq=0, ts=0, market_id=market, scheme=TickScheme.BINARY), *commands])
    return found


def journals(markets: list[list[Command]], shards: int) -> dict[int, list[dict[str, bytes]]]:
    """Input entries for each shard, as ``submit.lua`` would have written them: with one shard the
    markets' commands interleaved, each new order given the journal's next id (and its cancels
    following it); with as many shards as markets, one market each."""
    placed: dict[int, list[list[Command]]] = {}
    for i, commands in enumerate(markets):
        placed.setdefault(i % shards, []).append(commands)
    entries: dict[int, list[dict[str, bytes]]] = {}
    for shard, lists in placed.items():
        counter, out = 0, []
        renamed: list[dict[int, int]] = [{} for _ in lists]  # each market's ids -> the journal's
        for step in range(max(len(c) for c in lists)):
            for k, commands in enumerate(lists):
                if step >= len(commands):
                    continue
                command = commands[step]
                fields: dict[str, bytes] = {}
                if isinstance(command, PlaceOrder):
                    counter += 1
                    renamed[k][command.order_id] = shard_id(shard, counter)
                    fields["oid"] = str(counter).encode()
                elif isinstance(command, CancelOrder | ReduceOrder):
                    command = msgspec.structs.replace(command, order_id=renamed[k][command.order_id])
                fields["c"] = encode_command(command)
                out.append(fields)
        entries[shard] = out
    return entries


def _preload(url: str, entries: dict[int, list[dict[str, bytes]]], progress: Progress) -> None:
    task = progress.add_task("preloading the journals", total=sum(len(e) for e in entries.values()))
    for shard, rows in entries.items():
        bus = ClusterBus.connect(url, shard)
        for start in range(0, len(rows), PIPELINE_CHUNK):
            pipe = bus.client.pipeline(transaction=False)
            for fields in rows[start : start + PIPELINE_CHUNK]:
                pipe.xadd(bus.keys.input, fields)  # type: ignore[arg-type]
            pipe.execute()
            progress.advance(task, min(PIPELINE_CHUNK, len(rows) - start))
        bus.close()


def _leaders(url: str, shards: int, durability: Durability, folder: Path) -> list[subprocess.Popen[bytes]]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MATCHBOX_")}
    env |= {
        "REDIS_URL": url,
        "MATCHBOX_CLUSTER": "1",
        "MATCHBOX_DURABILITY": durability.value,
        "MATCHBOX_DATA_DIR": str(folder),
        "MATCHBOX_BATCH": "2000",
        "MATCHBOX_SNAPSHOT_EVERY": str(10**9),
        "MATCHBOX_SNAPSHOT_SECONDS": "3600",
        "MATCHBOX_LOG_LEVEL": "WARNING",
        "MATCHBOX_LOCK_TTL_MS": "120000",  # paused while the journals fill: the lease must outlast it
    }
    started = []
    for shard in range(shards):
        log = (folder / f"engine-{shard}.log").open("wb")
        argv = [sys.executable, "-m", "matchbox", "engine", "--shard", str(shard), "--name", f"bench-{shard}"]
        started.append(subprocess.Popen(argv, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL))
    return started


def _wait_leading(url: str, shards: int) -> None:
    """Until every shard's leader has committed its first entry (its market's creation)."""
    buses = [ClusterBus.connect(url, shard) for shard in range(shards)]
    deadline = time.monotonic() + LEADER_START_TIMEOUT_S
    try:
        while not all((offset := read_offset(bus)) is not None and offset.inputs >= 1 for bus in buses):
            if time.monotonic() > deadline:
                raise RuntimeError("the leaders did not start within a minute: see the engine logs in the run's folder")
            time.sleep(0.02)
    finally:
        for bus in buses:
            bus.close()


def _drain(url: str, totals: dict[int, int], progress: Progress, label: str) -> float:
    """Seconds until every shard has committed its whole journal."""
    buses = {shard: ClusterBus.connect(url, shard) for shard in totals}
    task = progress.add_task(label, total=sum(totals.values()))
    started = time.perf_counter()
    try:
        while True:
            done = {shard: (offset.inputs if (offset := read_offset(bus)) else 0) for shard, bus in buses.items()}
            progress.update(task, completed=sum(done.values()))
            if all(done[shard] >= totals[shard] for shard in totals):
                return time.perf_counter() - started
            time.sleep(0.005)
    finally:
        for bus in buses.values():
            bus.close()


def measure_run(markets: list[list[Command]], shards: int, durability: Durability, progress: Progress) -> Run:
    entries = journals(markets, shards)
    totals = {shard: len(rows) for shard, rows in entries.items()}
    with tempfile.TemporaryDirectory(prefix="matchbox-bench-shards-") as name:
        folder = Path(name)
        with EmbeddedCluster(folder / "cluster", masters=3, replicas=1, shards=shards) as cluster:
            _preload(cluster.url, {shard: rows[:1] for shard, rows in entries.items()}, progress)
            leaders = _leaders(cluster.url, shards, durability, folder)
            try:
                _wait_leading(cluster.url, shards)
                for leader in leaders:
                    leader.send_signal(signal.SIGSTOP)
                _preload(cluster.url, {shard: rows[1:] for shard, rows in entries.items()}, progress)
                for leader in leaders:
                    leader.send_signal(signal.SIGCONT)
                label = f"{shards} shard{'s' * (shards > 1)}, {durability.value}: leaders matching"
                seconds = _drain(cluster.url, totals, progress, label)
            finally:
                for leader in leaders:
                    leader.terminate()
                for leader in leaders:
                    leader.wait(30)
    orders = sum(totals.values())
    return Run(shards, durability.value, orders, round(seconds, 3), round(orders / seconds))


def measure(orders: int, seed: int, console: Console) -> Figures:
    markets = flows(orders, seed)
    runs = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        for durability in (Durability.ALWAYS, Durability.REPLICATED):
            for shards in (1, MARKETS):
                runs.append(measure_run(markets, shards, durability, progress))
    rate = {(run.shards, run.durability): run.orders_per_s for run in runs}
    return Figures(
        orders=runs[0].orders,
        runs=runs,
        three_to_one_always=round(rate[MARKETS, "always"] / rate[1, "always"], 2),
        three_to_one_replicated=round(rate[MARKETS, "replicated"] / rate[1, "replicated"], 2),
        replicated_to_always_one=round(rate[1, "replicated"] / rate[1, "always"], 2),
        replicated_to_always_three=round(rate[MARKETS, "replicated"] / rate[MARKETS, "always"], 2),
        cores=os.cpu_count() or 0,
        python=sys.version.split()[0],
    )


def render(f: Figures, console: Console) -> None:
    table = Table(title=f"matchbox bench shards: {f.orders:,} journal entries, 3 markets, on {f.cores} cores")
    for column in ("shards", "durability", "seconds", "orders/s"):
        table.add_column(column, justify="right")
    for run in f.runs:
        table.add_row(str(run.shards), run.durability, f"{run.seconds:.2f}", f"{run.orders_per_s:,.0f}")
    console.print(table)
    console.print(
        f"3 shards / 1 shard: {f.three_to_one_always:.2f}x (always), {f.three_to_one_replicated:.2f}x (replicated); "
        f"replicated / always: {f.replicated_to_always_one:.2f}x (1 shard), {f.replicated_to_always_three:.2f}x "
        "(3 shards)"
    )


def run(*, orders: int, seed: int, json_output: bool) -> int:
    console = Console(stderr=json_output)
    figures = measure(orders, seed, console)
    render(figures, console)
    if json_output:
        sys.stdout.write(msgspec.json.encode(asdict(figures)).decode() + "\n")
    return 0
