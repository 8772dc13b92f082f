"""``matchbox bench recovery``: how fast a large book comes back from a snapshot.

A seeded book of ``orders`` resting orders (1,000,000 by default) over ten markets of the three
tick schemes (four binary, three odds, three plain ticks), bids below and asks above each
market's middle so that nothing trades, 5 % of them GTD, 10,000 accounts. Timed, in one run:

- **rebuild** (the baseline): the same book built again by applying its commands (the markets,
  then one ``PlaceOrder`` per resting order: the least any journal that built it holds) to a
  fresh ``Engine``;
- **snapshot**: ``Engine.snapshot()`` of it, and its size;
- **restore**: ``Engine.restore()`` of those bytes (checked: the same state hash);
- **replay**: what a recovery does after the restore: ``tail`` journal entries (the leader's
  ``snapshot_every``, 50,000, by default) applied as recovery replays them (``apply_entry``:
  decoded from their journal form, output suppressed): 55 % orders that rest, 25 % cancels,
  20 % orders that cross the spread.

Rebuild and restore alternate for ``repeat`` passes, after a full garbage collection each, so
both see the same machine weather; the best pass of each is reported, with their ratio, which
must be at least ``REQUIRED_RATIO`` (the exit code says). ``matchbox bench recovery`` runs with
the garbage-collector thresholds ``matchbox engine`` runs with, so the baseline is the rebuild as
an engine process would do it.
"""

from __future__ import annotations

import gc
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from typing import TypeVar

import msgspec
from rich.console import Console
from rich.table import Table

from matchbox.bus.codec import encode_command
from matchbox.engine import Engine
from matchbox.engine.types import CancelOrder, Command, CreateMarket, PlaceOrder, Side, TickScheme, TimeInForce
from matchbox.leader.apply import apply_entry

MARKETS = (
    ("binary", TickScheme.BINARY, 4),
    ("odds", TickScheme.ODDS, 3),
    ("ticks", TickScheme.TICKS, 3),
)
MAX_TICK = 1000  # of the plain-ticks markets
ACCOUNTS = 10_000
GTD_SHARE = 0.05
FAR_FUTURE_NS = 2**62  # GTD expiries that never come during the run
REQUIRED_RATIO = 3.0  # restore must be at least this many times faster than the rebuild

Entry = tuple[str, dict[bytes, bytes]]  # a journal entry: id and fields
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Book:
    """The commands that build the book, and the journal tail after its snapshot."""

    commands: list[Command]
    tail: list[Entry]
    orders: int  # resting orders the commands leave


@dataclass(frozen=True, slots=True)
class Figures:
    orders: int
    markets: int
    commands: int
    snapshot_bytes: int
    rebuild_s: float  # the baseline
    snapshot_s: float
    restore_s: float
    replay_entries: int
    replay_s: float
    ratio: float  # rebuild_s / restore_s
    required_ratio: float
    gc_thresholds: tuple[int, ...]


# --------------------------------------------------------------------------- the book


def _markets() -> list[CreateMarket]:
    found = []
    for name, scheme, count in MARKETS:
        for i in range(count):
            max_tick = MAX_TICK if scheme is TickScheme.TICKS else 0
            found.append(CreateMarket(seq=0, ts=0, market_id=f"{name}-{i}", scheme=scheme, max_tick=max_tick))
    return found


def _ticks(market: CreateMarket) -> int:
    return {TickScheme.BINARY: 99, TickScheme.ODDS: 350}.get(market.scheme, MAX_TICK)


def _resting(rng: random.Random, market: CreateMarket, order_id: int, seq: int) -> PlaceOrder:
    """An order on its side of the middle tick, so that it rests."""
    middle = (_ticks(market) + 1) // 2
    buy = rng.random() < 0.5
    gtd = rng.random() < GTD_SHARE
    return PlaceOrder(
        seq=seq,
        ts=seq,
        market_id=market.market_id,
        order_id=order_id,
        account=f"a{rng.randrange(ACCOUNTS)}",
        side=Side.BUY if buy else Side.SELL,
        price=rng.randint(1, middle - 1) if buy else rng.randint(middle + 1, _ticks(market)),
        qty=rng.randint(1, 100),
        tif=TimeInForce.GTD if gtd else TimeInForce.GTC,
        expires_at=FAR_FUTURE_NS if gtd else 0,
    )


def generate(orders: int, tail: int, seed: int = 7) -> Book:
    rng = random.Random(seed)
    markets = _markets()
    commands: list[Command] = [
        CreateMarket(seq=i, ts=i, market_id=m.market_id, scheme=m.scheme, max_tick=m.max_tick)
        for i, m in enumerate(markets, start=1)
    ]
    seq = len(commands)
    for order_id in range(1, orders + 1):
        seq += 1
        commands.append(_resting(rng, markets[order_id % len(markets)], order_id, seq))
    return Book(commands, _tail(rng, markets, orders, tail, seq), orders)


def _tail(rng: random.Random, markets: list[CreateMarket], orders: int, count: int, seq: int) -> list[Entry]:
    """Journal entries after the snapshot: new orders, cancels, and orders that cross."""
    entries: list[Entry] = []
    order_id = orders
    for k in range(count):
        roll = rng.random()
        market = markets[rng.randrange(len(markets))]
        command: Command
        if roll < 0.25:
            command = CancelOrder(seq=0, ts=0, order_id=rng.randint(1, order_id))
        else:
            order_id += 1
            command = _resting(rng, market, order_id, 0)
            if roll > 0.8:  # priced through the middle: it takes the other side's best levels
                through = _ticks(market) - command.price + 1
                command = msgspec.structs.replace(command, price=through, tif=TimeInForce.IOC, expires_at=0)
        fields = {b"c": encode_command(command)}
        if isinstance(command, PlaceOrder):
            fields[b"oid"] = str(command.order_id).encode()
        entries.append((f"{seq + k + 1}-0", fields))
    return entries


# --------------------------------------------------------------------------- measuring


def _timed(work: Callable[[], T]) -> tuple[float, T]:
    """Seconds ``work()`` took, from a clean heap, and its result."""
    gc.collect()
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


def _rebuild(commands: list[Command]) -> Engine:
    engine = Engine()
    apply = engine.apply
    for command in commands:
        apply(command)
    return engine


def _replay(engine: Engine, tail: list[Entry], first_seq: int) -> int:
    for seq, (entry_id, fields) in enumerate(tail, start=first_seq):
        apply_entry(engine, entry_id, fields, seq, quiet=True)
    return len(tail)


def measure(orders: int, tail: int, repeat: int, seed: int = 7, console: Console | None = None) -> Figures:
    console = console or Console(stderr=True)
    with console.status(f"generating a book of {orders:,} resting orders"):
        book = generate(orders, tail, seed)
    rebuilds, restores, snapshots = [], [], []
    for i in range(repeat):
        with console.status(f"pass {i + 1} of {repeat}: rebuild, snapshot, restore"):
            seconds, built = _timed(lambda: _rebuild(book.commands))
            rebuilds.append(seconds)
            seconds, data = _timed(built.snapshot)
            snapshots.append(seconds)
            expected = built.state_hash()
            del built
            seconds, restored = _timed(partial(Engine.restore, data))
            restores.append(seconds)
            if restored.state_hash() != expected:
                raise AssertionError("the restored engine differs from the rebuilt one")
    with console.status(f"replaying {tail:,} journal entries after the restore"):
        replay_s, _ = _timed(partial(_replay, restored, book.tail, len(book.commands) + 1))
    rebuild_s, restore_s = min(rebuilds), min(restores)
    return Figures(
        orders=book.orders,
        markets=len(_markets()),
        commands=len(book.commands),
        snapshot_bytes=len(data),
        rebuild_s=round(rebuild_s, 4),
        snapshot_s=round(min(snapshots), 4),
        restore_s=round(restore_s, 4),
        replay_entries=tail,
        replay_s=round(replay_s, 4),
        ratio=round(rebuild_s / restore_s, 2),
        required_ratio=REQUIRED_RATIO,
        gc_thresholds=gc.get_threshold(),
    )


# --------------------------------------------------------------------------- report


def render(figures: Figures, console: Console) -> None:
    table = Table(title=f"matchbox bench recovery: {figures.orders:,} resting orders in {figures.markets} markets")
    table.add_column("step")
    table.add_column("seconds", justify="right")
    table.add_column("per order / entry", justify="right")
    table.add_column("note")
    per_order = 1e6 / figures.orders
    table.add_row(
        "rebuild (baseline)",
        f"{figures.rebuild_s:.3f}",
        f"{figures.rebuild_s * per_order:.2f} µs",
        f"{figures.commands:,} commands applied to a fresh engine",
    )
    table.add_row(
        "snapshot",
        f"{figures.snapshot_s:.3f}",
        f"{figures.snapshot_s * per_order:.2f} µs",
        f"{figures.snapshot_bytes / 1e6:.1f} MB",
    )
    table.add_row("restore", f"{figures.restore_s:.3f}", f"{figures.restore_s * per_order:.2f} µs", "same state hash")
    table.add_row(
        "replay",
        f"{figures.replay_s:.3f}",
        f"{figures.replay_s * 1e6 / max(1, figures.replay_entries):.2f} µs",
        f"{figures.replay_entries:,} journal entries after the snapshot",
    )
    console.print(table)
    verdict = "[green]ok[/]" if figures.ratio >= figures.required_ratio else "[red]below the required ratio[/]"
    console.print(
        f"restore is [bold]{figures.ratio:.2f}x[/] faster than the rebuild (required: {figures.required_ratio:.0f}x) "
        f"{verdict}   (best of each over the passes; gc thresholds {figures.gc_thresholds})"
    )


def run(
    *,
    orders: int = 1_000_000,
    tail: int = 50_000,
    repeat: int = 2,
    gc_thresholds: tuple[int, int, int] | None = None,
    json_output: bool = False,
) -> int:
    """Measure, print, and return the exit code (1 if restore is not ``REQUIRED_RATIO`` times
    faster). ``gc_thresholds``: the collector's, for the run (the engine process's, say)."""
    console = Console(stderr=json_output)
    if orders < 1 or tail < 0 or repeat < 1:
        console.print("[red]orders and repeat must be at least 1, tail at least 0[/]")
        return 2
    before = gc.get_threshold()
    gc.set_threshold(*(gc_thresholds or before))
    try:
        figures = measure(orders, tail, repeat, console=console)
    finally:
        gc.set_threshold(*before)
    render(figures, console)
    if json_output:
        sys.stdout.write(msgspec.json.encode(asdict(figures)).decode() + "\n")
    return 0 if figures.ratio >= figures.required_ratio else 1
