"""``matchbox bench engine``: the engine against a bare baseline book, side by side in one run.

The flow is seeded and generated before anything is timed: on one binary market (ticks 1..99),
about 55 % passive limit orders a few ticks either side of a drifting mid, 25 % cancels of
orders that are live at that moment, and 20 % aggressive limits that cross the spread. Buyers
and sellers use disjoint accounts, so self-trade prevention never fires and both books must
produce exactly the same fills.

The baseline is the least a price-time book can do: a ``SortedDict`` of price -> deque per side,
a dict index, lazy cancel, fills appended as tuples, no events, no validation. The engine does
all its real work (validation, events, STP checks, GTD bookkeeping). Timed passes alternate
between the two, so both see the same machine weather; the best pass of each is reported, with
their ratio. Latency and memory are measured in separate passes so that the timers and
``tracemalloc`` do not slow the throughput passes.
"""

from __future__ import annotations

import gc
import platform
import random
import sys
import time
import tracemalloc
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import msgspec
from rich.console import Console
from rich.table import Table
from sortedcontainers import SortedDict

from matchbox.engine import Engine
from matchbox.engine.types import (
    CancelOrder,
    Command,
    CreateMarket,
    PlaceOrder,
    SelfTradePrevention,
    Side,
    TickScheme,
    TradeExecuted,
)

MARKET = "bench"
Fill = tuple[int, int, int, int]  # maker order id, taker order id, price, qty


# --------------------------------------------------------------------------- the baseline


class BaselineBook:
    """A minimal price-time book: sorted price levels of FIFO queues, lazy cancel, no events."""

    def __init__(self) -> None:
        self.bids: SortedDict = SortedDict()  # price -> deque of [order_id, qty]; qty 0 = cancelled
        self.asks: SortedDict = SortedDict()
        self.index: dict[int, list[int]] = {}  # live order id -> its queue entry
        self.fills: list[Fill] = []

    def place(self, order_id: int, is_buy: bool, price: int, qty: int) -> None:
        fills = self.fills
        if is_buy:
            opposite, own = self.asks, self.bids
            while qty and opposite:
                best, queue = opposite.peekitem(0)
                if best > price:
                    break
                qty = self._take(queue, order_id, best, qty, fills)
                if not queue:
                    del opposite[best]
        else:
            opposite, own = self.bids, self.asks
            while qty and opposite:
                best, queue = opposite.peekitem(-1)
                if best < price:
                    break
                qty = self._take(queue, order_id, best, qty, fills)
                if not queue:
                    del opposite[best]
        if qty:
            entry = [order_id, qty]
            queue = own.get(price)
            if queue is None:
                queue = own[price] = deque()
            queue.append(entry)
            self.index[order_id] = entry

    def _take(self, queue: deque[list[int]], taker_id: int, price: int, qty: int, fills: list[Fill]) -> int:
        index = self.index
        while qty and queue:
            entry = queue[0]
            resting = entry[1]
            if resting == 0:  # a lazily cancelled husk
                queue.popleft()
                continue
            traded = min(resting, qty)
            fills.append((entry[0], taker_id, price, traded))
            qty -= traded
            if traded == resting:
                queue.popleft()
                del index[entry[0]]
            else:
                entry[1] = resting - traded
        return qty

    def cancel(self, order_id: int) -> bool:
        found = self.index.pop(order_id, None)
        if found is None:
            return False
        found[1] = 0  # the husk stays queued until matching reaches it
        return True

    def best(self) -> tuple[int | None, int | None]:
        """Best live bid and ask (skipping levels that hold only husks); used to generate the flow."""
        bid = next((p for p in reversed(self.bids) if any(e[1] for e in self.bids[p])), None)
        ask = next((p for p in self.asks if any(e[1] for e in self.asks[p])), None)
        return bid, ask


# --------------------------------------------------------------------------- the flow


@dataclass(frozen=True, slots=True)
class Flow:
    """The same flow in the engine's commands and the baseline's plain tuples."""

    commands: list[Command]
    ops: list[tuple[int, int, bool, int, int]]  # (kind 0=place 1=cancel, order id, is buy, price, qty)
    places: int
    cancels: int
    aggressive: int


def generate(ops: int, seed: int) -> Flow:
    """A seeded flow; a baseline book runs alongside so cancels pick orders live at that moment."""
    rng = random.Random(seed)
    book = BaselineBook()
    live: list[int] = []
    commands: list[Command] = []
    plain: list[tuple[int, int, bool, int, int]] = []
    mid = 50
    order_id = 0
    cancels = aggressive = 0
    ts = 1_000_000_000
    for seq in range(1, ops + 1):
        ts += 1_000
        roll = rng.random()
        if roll < 0.25 and live:
            order_id_to_cancel = _pop_live(live, book, rng)
            if order_id_to_cancel is not None:
                book.cancel(order_id_to_cancel)
                commands.append(CancelOrder(seq=seq, ts=ts, order_id=order_id_to_cancel))
                plain.append((1, order_id_to_cancel, False, 0, 0))
                cancels += 1
                continue
        order_id += 1
        is_buy = rng.random() < 0.5
        if roll >= 0.80:  # aggressive: cross the spread by up to two ticks
            bid, ask = book.best()
            if is_buy:
                price = min(99, (ask if ask is not None else mid + 1) + rng.randint(0, 2))
            else:
                price = max(1, (bid if bid is not None else mid - 1) - rng.randint(0, 2))
            qty = rng.randint(1, 20)
            aggressive += 1
        else:  # passive: one to five ticks off a slowly drifting mid
            mid = min(90, max(10, mid + rng.choice((-1, 0, 0, 0, 0, 0, 0, 1))))
            offset = rng.randint(1, 5)
            price = mid - offset if is_buy else mid + offset
            qty = rng.randint(1, 10)
        account = f"{'b' if is_buy else 's'}{rng.randrange(100)}"
        side = Side.BUY if is_buy else Side.SELL
        commands.append(
            PlaceOrder(
                seq=seq, ts=ts, market_id=MARKET, order_id=order_id, account=account, side=side, price=price, qty=qty
            )
        )
        plain.append((0, order_id, is_buy, price, qty))
        book.place(order_id, is_buy, price, qty)
        if order_id in book.index:
            live.append(order_id)
    return Flow(commands, plain, places=order_id, cancels=cancels, aggressive=aggressive)


def _pop_live(live: list[int], book: BaselineBook, rng: random.Random) -> int | None:
    """Take a random id out of ``live`` that is still resting (filled ones are dropped on the way)."""
    while live:
        i = rng.randrange(len(live))
        live[i], live[-1] = live[-1], live[i]
        candidate = live.pop()
        if candidate in book.index:
            return candidate
    return None


def _with_options(command: Command) -> Command:
    """The command, as an order that lapses at a suspension and keeps its own self-trade rule."""
    if type(command) is not PlaceOrder:
        return command
    return msgspec.structs.replace(command, lapse=True, stp=SelfTradePrevention.CANCEL_TAKER)


def _create_market() -> CreateMarket:
    return CreateMarket(seq=0, ts=0, market_id=MARKET, scheme=TickScheme.BINARY)


# --------------------------------------------------------------------------- passes


def engine_pass(commands: Sequence[Command]) -> float:
    engine = Engine()
    engine.apply(_create_market())
    apply = engine.apply
    gc.collect()
    start = time.perf_counter()
    for command in commands:
        apply(command)
    return time.perf_counter() - start


def baseline_pass(ops: Sequence[tuple[int, int, bool, int, int]]) -> float:
    book = BaselineBook()
    place, cancel = book.place, book.cancel
    gc.collect()
    start = time.perf_counter()
    for kind, order_id, is_buy, price, qty in ops:
        if kind:
            cancel(order_id)
        else:
            place(order_id, is_buy, price, qty)
    return time.perf_counter() - start


def engine_fills(commands: Sequence[Command]) -> tuple[list[Fill], int]:
    """The engine's fills, and how many events it produced in all."""
    engine = Engine()
    engine.apply(_create_market())
    fills: list[Fill] = []
    count = 0
    for command in commands:
        events = engine.apply(command)
        count += len(events)
        fills.extend((e.maker_order_id, e.taker_order_id, e.price, e.qty) for e in events if type(e) is TradeExecuted)
    engine.check_invariants()
    return fills, count


def baseline_fills(ops: Sequence[tuple[int, int, bool, int, int]]) -> list[Fill]:
    book = BaselineBook()
    for kind, order_id, is_buy, price, qty in ops:
        if kind:
            book.cancel(order_id)
        else:
            book.place(order_id, is_buy, price, qty)
    return book.fills


def latencies_ns(step: Callable[[int], object], n: int) -> tuple[int, int]:
    """p50 and p99 of ``step(i)`` over ``i in range(n)``, each call timed on its own."""
    clock = time.perf_counter_ns
    samples = [0] * n
    for i in range(n):
        start = clock()
        step(i)
        samples[i] = clock() - start
    samples.sort()
    return samples[n // 2], samples[min(n - 1, (n * 99) // 100)]


def engine_latency(commands: Sequence[Command]) -> tuple[int, int]:
    engine = Engine()
    engine.apply(_create_market())
    apply = engine.apply
    return latencies_ns(lambda i: apply(commands[i]), len(commands))


def baseline_latency(ops: Sequence[tuple[int, int, bool, int, int]]) -> tuple[int, int]:
    book = BaselineBook()

    def step(i: int) -> None:
        kind, order_id, is_buy, price, qty = ops[i]
        if kind:
            book.cancel(order_id)
        else:
            book.place(order_id, is_buy, price, qty)

    return latencies_ns(step, len(ops))


def peak_memory(run: Callable[[], object]) -> int:
    """Peak bytes allocated while ``run`` builds its book (the flow itself already exists)."""
    gc.collect()
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# --------------------------------------------------------------------------- report


@dataclass(frozen=True, slots=True)
class Figures:
    ops: int
    seed: int
    repeat: int
    engine_ops_per_s: float
    baseline_ops_per_s: float
    ratio: float
    options_ops_per_s: float  # the engine on the same flow, every order lapsing and with its own self-trade rule
    options_ratio: float  # options_ops_per_s / engine_ops_per_s: what keeping those orders costs
    engine_p50_ns: int
    engine_p99_ns: int
    baseline_p50_ns: int
    baseline_p99_ns: int
    engine_peak_bytes: int
    baseline_peak_bytes: int
    fills: int
    fills_match: bool
    events: int
    places: int
    cancels: int
    aggressive: int
    python: str


def measure(ops: int, seed: int, repeat: int) -> Figures:
    flow = generate(ops, seed)
    commands, plain = flow.commands, flow.ops
    fills, events = engine_fills(commands)
    expected = baseline_fills(plain)
    with_options = [_with_options(c) for c in commands]
    engine_best = baseline_best = options_best = float("inf")
    for _ in range(repeat):  # interleaved, so all sides share the machine's weather
        engine_best = min(engine_best, engine_pass(commands))
        baseline_best = min(baseline_best, baseline_pass(plain))
        options_best = min(options_best, engine_pass(with_options))
    engine_p50, engine_p99 = engine_latency(commands)
    baseline_p50, baseline_p99 = baseline_latency(plain)
    engine_rate, baseline_rate = len(commands) / engine_best, len(plain) / baseline_best
    options_rate = len(commands) / options_best
    return Figures(
        ops=len(commands),
        seed=seed,
        repeat=repeat,
        engine_ops_per_s=round(engine_rate),
        baseline_ops_per_s=round(baseline_rate),
        ratio=round(engine_rate / baseline_rate, 3),
        options_ops_per_s=round(options_rate),
        options_ratio=round(options_rate / engine_rate, 3),
        engine_p50_ns=engine_p50,
        engine_p99_ns=engine_p99,
        baseline_p50_ns=baseline_p50,
        baseline_p99_ns=baseline_p99,
        engine_peak_bytes=peak_memory(lambda: engine_fills(commands)),
        baseline_peak_bytes=peak_memory(lambda: baseline_fills(plain)),
        fills=len(fills),
        fills_match=fills == expected,
        events=events,
        places=flow.places,
        cancels=flow.cancels,
        aggressive=flow.aggressive,
        python=f"{platform.python_implementation()} {platform.python_version()}",
    )


def render(figures: Figures, console: Console) -> None:
    table = Table(title=f"matchbox bench engine: {figures.ops:,} ops, seed {figures.seed}, best of {figures.repeat}")
    table.add_column("")
    table.add_column("engine (full events)", justify="right")
    table.add_column("baseline (SortedDict, no events)", justify="right")
    table.add_row("ops/s", f"{figures.engine_ops_per_s:,.0f}", f"{figures.baseline_ops_per_s:,.0f}")
    table.add_row("latency p50", f"{figures.engine_p50_ns / 1000:.2f} µs", f"{figures.baseline_p50_ns / 1000:.2f} µs")
    table.add_row("latency p99", f"{figures.engine_p99_ns / 1000:.2f} µs", f"{figures.baseline_p99_ns / 1000:.2f} µs")
    table.add_row(
        "peak memory", f"{figures.engine_peak_bytes / 2**20:.1f} MiB", f"{figures.baseline_peak_bytes / 2**20:.1f} MiB"
    )
    console.print(table)
    console.print(
        f"ratio engine/baseline: [bold]{figures.ratio:.2f}x[/]   "
        f"flow: {figures.places:,} places ({figures.aggressive:,} aggressive), {figures.cancels:,} cancels   "
        f"fills: {figures.fills:,} ({'same in both' if figures.fills_match else '[red]DIFFERENT[/]'})   "
        f"events: {figures.events:,}   {figures.python}"
    )
    console.print(
        f"every order lapsing, with its own self-trade rule: {figures.options_ops_per_s:,.0f} ops/s, "
        f"[bold]{figures.options_ratio:.2f}x[/] the plain flow's"
    )


def run(*, ops: int, seed: int, repeat: int, json_output: bool) -> int:
    """Measure, print, and return the exit code: 1 if the two books disagree on the fills."""
    console = Console(stderr=json_output)
    with console.status(f"generating {ops:,} commands and timing {repeat} interleaved passes of each book"):
        figures = measure(ops, seed, repeat)
    render(figures, console)
    if json_output:
        sys.stdout.write(msgspec.json.encode(asdict(figures)).decode() + "\n")
    if not figures.fills_match:
        console.print("[red]the engine and the baseline produced different fills[/]")
        return 1
    return 0
