"""Property tests: random journals through the engine and a naive reference matcher.

A journal here is what the input journal would hand the engine: three markets (binary, odds and a
small ``ticks`` market), a few accounts, orders of every kind (each with its own self-trade
prevention now and then) with prices clustered so they cross, cancels (one or many at once) and
reduces of live, finished and bogus ids, cancel-all, suspend/resume, the odd close or
settle, time jumps that expire GTD orders, and some deliberately bad input. ``seq`` strictly
increases, ``ts`` never decreases, and new order ids strictly increase except for the occasional
deliberate duplicate. A second kind of journal builds one long queue and cancels it from the
middle, so that cancelled husks pile up in the queue and the level compacts itself.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import examples
from matchbox.engine import Engine
from matchbox.engine.types import (
    AdvanceTime,
    AmendOrder,
    CancelAll,
    CancelOrder,
    CancelOrders,
    CancelReason,
    CloseMarket,
    Command,
    CreateMarket,
    Event,
    MarketState,
    MarketStateChanged,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderKind,
    OrderReduced,
    OrderRested,
    PlaceOrder,
    ReduceOrder,
    Rejected,
    ResumeMarket,
    SelfTradePrevention,
    SettleMarket,
    Side,
    SuspendMarket,
    TickScheme,
    TimeInForce,
    TradeExecuted,
)
from reference_book import ReferenceBook

PROFILE = settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])

MAX_STEPS = 80
ACCOUNTS = ("a", "b", "c")

# market id -> (lowest, highest) tick of the band orders are priced in, and the market's max tick.
# Bands are narrow so that orders cross; "late" is created mid-journal (if at all) and "nowhere" never.
BANDS: dict[str, tuple[int, int, int]] = {
    "bin": (48, 52, 99),
    "odds": (98, 102, 350),
    "tk": (1, 6, 6),
    "late": (1, 4, 4),
    "nowhere": (1, 9, 9),
}
OPENING_MARKETS = (("bin", TickScheme.BINARY, 0), ("odds", TickScheme.ODDS, 0), ("tk", TickScheme.TICKS, 6))
ALL_MARKETS = tuple(BANDS)
LIFECYCLE_MARKETS = ("bin", "odds", "tk") * 2 + ("late", "nowhere")
ORDER_MARKETS = ("bin",) * 8 + ("odds",) * 5 + ("tk",) * 8 + ("late", "nowhere")


def chance(one_in: int) -> st.SearchStrategy[bool]:
    """True about once in ``one_in`` draws; shrinks to False."""
    return st.integers(1, one_in).map(lambda k: k == one_in)


def weighted(**weights: int) -> st.SearchStrategy[str]:
    """One of the names, about as often as its weight; shrinks to the first."""
    return st.sampled_from([name for name, weight in weights.items() for _ in range(weight)])


# Strategies are built once, here: building them inside every draw costs more than the engine does.
ACTIONS = weighted(
    place=30,
    cancel=4,
    cancel_many=2,
    amend=8,
    reduce=4,
    cancel_all=3,
    advance=2,
    suspend=1,
    resume=4,
    end=1,
    create=1,
    duplicate=1,
)
STEPS = st.integers(1, MAX_STEPS)
TICK = st.sampled_from((0, 1, 1, 2))  # time between commands
JUMP = st.integers(1, 8)  # what AdvanceTime adds
ID_GAP = st.sampled_from((1, 1, 1, 2))
RECENT = st.integers(0, 7)  # which of the last eight
ONE_IN_4, ONE_IN_8, ONE_IN_10, ONE_IN_20, ONE_IN_25 = (chance(n) for n in (4, 8, 10, 20, 25))
MAX_QTY = st.sampled_from((1_000_000_000, 12))
STP = st.sampled_from(SelfTradePrevention)
ORDER_STP = st.sampled_from((None, None, None, *SelfTradePrevention))  # mostly the market's
AMEND_QTY = st.sampled_from((0, 0, 1, 2, 3, 5, 8, 13, -1))  # 0 keeps it; 13 is over a small max_qty
CANCEL_COUNT = st.sampled_from((0, 1, 2, 3, 5, 101))  # none and over 100 are refused whole
ORDER_MARKET = st.sampled_from(ORDER_MARKETS)
LIFECYCLE_MARKET = st.sampled_from(LIFECYCLE_MARKETS)
ACCOUNT = st.sampled_from(ACCOUNTS)
ACCOUNT_OR_NONE = st.sampled_from(("", "", *ACCOUNTS))
SIDE = st.sampled_from(Side)
LIMIT_TIF = st.sampled_from((TimeInForce.GTC, TimeInForce.GTD) * 2 + (TimeInForce.IOC, TimeInForce.FOK))
MARKET_TIF = st.sampled_from((TimeInForce.IOC, TimeInForce.FOK) * 2 + (TimeInForce.GTC, TimeInForce.GTD))
OFFSET = st.integers(0, 59)  # a price's place in its market's band (modulo its width)
BAD_PRICE = st.sampled_from(("zero", "above", "negative"))
QTY = st.integers(1, 8)
BAD_QTY = st.sampled_from((0, -2, 13))  # 13 is over a small market's max_qty of 12
LIFETIME = st.integers(1, 20)  # a GTD order's expiry, after its ts
BAD_EXPIRY = st.sampled_from(("zero", "now", "past"))
REDUCE_BY = st.integers(-1, 5)
OUTCOME = st.sampled_from(("yes", "no", ""))
BOGUS_ID = st.sampled_from(("zero", "negative", "next", "far"))
LATE_MARKET = st.sampled_from(
    (  # a market created mid-journal: "late" (once; again it exists), a duplicate, or a bad spec
        {"market_id": "late", "scheme": TickScheme.TICKS, "max_tick": 4},
        {"market_id": "bin", "scheme": TickScheme.BINARY},
        {"market_id": "bad", "scheme": TickScheme.TICKS, "max_tick": 0},
        {"market_id": "bad", "scheme": TickScheme.TICKS, "max_tick": 100_001},
        {"market_id": "", "scheme": TickScheme.ODDS},
        {"market_id": "bad", "scheme": TickScheme.BINARY, "max_qty": 0},
    )
)


class Journal:
    """Stamps commands as the input journal does and remembers the order ids it handed out."""

    def __init__(self) -> None:
        self.commands: list[Command] = []
        self.ts = 1_000
        self.last_order_id = 0
        self.order_ids: list[int] = []
        self.restable_ids: list[int] = []  # ids of GTC/GTD limit orders: the ones likely to be live
        self.markets: dict[int, str] = {}  # each order id's market
        self.suspended: list[str] = []  # markets it suspended and has not resumed
        self.ended = False  # whether it closed or settled a market (once is enough)

    def add(self, command_type: type[Command], **fields: Any) -> None:
        self.commands.append(command_type(seq=len(self.commands) + 1, ts=self.ts, **fields))


@st.composite
def journals(draw: st.DrawFn) -> list[Command]:
    journal = Journal()
    for market_id, scheme, max_tick in OPENING_MARKETS:
        journal.ts += 1
        journal.add(
            CreateMarket,
            market_id=market_id,
            scheme=scheme,
            max_tick=max_tick,
            max_qty=draw(MAX_QTY),
            stp=draw(STP),
            opens_at=draw(st.sampled_from((0, 0, 0, journal.ts - 1, journal.ts + draw(LIFETIME)))),
            closes_at=draw(st.sampled_from((0, 0, journal.ts + draw(st.integers(0, 2 * MAX_STEPS))))),
        )
    for _ in range(draw(STEPS)):
        action = draw(ACTIONS)
        journal.ts += draw(TICK)
        if action == "place":
            journal.last_order_id += draw(ID_GAP)
            journal.order_ids.append(journal.last_order_id)
            fields = draw_order_fields(draw, journal.ts)
            journal.markets[journal.last_order_id] = fields["market_id"]
            if fields["kind"] is OrderKind.LIMIT and fields["tif"] in (TimeInForce.GTC, TimeInForce.GTD):
                journal.restable_ids.append(journal.last_order_id)
            journal.add(PlaceOrder, order_id=journal.last_order_id, **fields)
        elif action == "duplicate" and journal.order_ids:
            reused = pick(draw, journal.order_ids)
            journal.add(PlaceOrder, order_id=reused, **draw_order_fields(draw, journal.ts))
        elif action == "cancel":
            journal.add(CancelOrder, order_id=draw_order_id(draw, journal), account=draw(ACCOUNT_OR_NONE))
        elif action == "cancel_many":
            ids = tuple(draw_order_id(draw, journal) for _ in range(draw(CANCEL_COUNT)))
            journal.add(CancelOrders, order_ids=ids, account=draw(ACCOUNT_OR_NONE))
        elif action == "amend":
            order_id = draw_order_id(draw, journal)
            low, high, max_tick = BANDS[journal.markets.get(order_id, "bin")]
            price = draw(st.sampled_from((0, low, high, low + draw(OFFSET) % (high - low + 1))))  # the edges cross
            if draw(ONE_IN_20):
                price = max_tick + 1
            journal.add(
                AmendOrder,
                order_id=order_id,
                account=draw(ACCOUNT_OR_NONE),
                price=price,
                qty=draw(AMEND_QTY),
                post_only=draw(ONE_IN_4),
                stp=draw(ORDER_STP),
            )
        elif action == "reduce":
            order_id = draw_order_id(draw, journal)
            journal.add(ReduceOrder, order_id=order_id, account=draw(ACCOUNT_OR_NONE), reduce_by=draw(REDUCE_BY))
        elif action == "cancel_all":
            journal.add(CancelAll, market_id=draw(ORDER_MARKET), account=draw(ACCOUNT))
        elif action == "advance":
            journal.ts += draw(JUMP)
            journal.add(AdvanceTime)
        elif action == "suspend":
            market_id = draw(LIFECYCLE_MARKET)
            journal.suspended.append(market_id)
            journal.add(SuspendMarket, market_id=market_id)
        elif action == "resume":
            if journal.suspended and not draw(ONE_IN_10):
                market_id = pick(draw, journal.suspended)
                journal.suspended.remove(market_id)
            else:
                market_id = draw(LIFECYCLE_MARKET)
            journal.add(ResumeMarket, market_id=market_id)
        elif action == "end" and not journal.ended:
            journal.ended = True
            market_id = draw(LIFECYCLE_MARKET)
            if draw(ONE_IN_4):
                journal.add(SettleMarket, market_id=market_id, outcome=draw(OUTCOME))
            else:
                journal.add(CloseMarket, market_id=market_id)
        elif action == "create":
            journal.add(CreateMarket, **draw(LATE_MARKET))
    return journal.commands


def pick(draw: st.DrawFn, items: list[Any]) -> Any:
    """One of the last eight items."""
    recent = items[-8:]
    return recent[draw(RECENT) % len(recent)]


def draw_order_fields(draw: st.DrawFn, ts: int) -> dict[str, Any]:
    """A new order's fields but its id, mostly sound, for a command at time ``ts``."""
    market_id = draw(ORDER_MARKET)
    low, high, max_tick = BANDS[market_id]
    kind = OrderKind.MARKET if draw(ONE_IN_8) else OrderKind.LIMIT
    if kind is OrderKind.MARKET:
        tif = draw(MARKET_TIF)
        price = 0  # ignored
    else:
        tif = draw(LIMIT_TIF)
        price = low + draw(OFFSET) % (high - low + 1)
        if draw(ONE_IN_20):
            price = {"zero": 0, "above": max_tick + 1, "negative": -1}[draw(BAD_PRICE)]
    qty = draw(BAD_QTY) if draw(ONE_IN_20) else draw(QTY)
    if tif is TimeInForce.GTD:
        expires_at = ts + draw(LIFETIME)
        if draw(ONE_IN_20):
            expires_at = {"zero": 0, "now": ts, "past": ts - 1}[draw(BAD_EXPIRY)]
    else:
        expires_at = ts + 3 if draw(ONE_IN_25) else 0
    return {
        "market_id": market_id,
        "account": draw(ACCOUNT),
        "side": draw(SIDE),
        "price": price,
        "qty": qty,
        "tif": tif,
        "kind": kind,
        "post_only": draw(ONE_IN_10),
        "expires_at": expires_at,
        "stp": draw(ORDER_STP),
        "lapse": draw(ONE_IN_4),
    }


def draw_order_id(draw: st.DrawFn, journal: Journal) -> int:
    """Mostly a recent order that may rest, sometimes any recent order, or one never handed out."""
    if not journal.order_ids or draw(ONE_IN_8):
        bogus = draw(BOGUS_ID)
        return {"zero": 0, "negative": -1, "next": journal.last_order_id + 1, "far": journal.last_order_id + 7}[bogus]
    if journal.restable_ids and not draw(ONE_IN_4):
        return int(pick(draw, journal.restable_ids))
    return int(pick(draw, journal.order_ids))


CROWD = st.sampled_from(tuple("abcdefgh"))
QUEUE_LENGTH = st.integers(20, 60)
CROWDED_ACTIONS = weighted(cancel=8, place=1, sweep=1, reduce=1)
CROWDED_STEPS = st.integers(20, 120)
CROWDED_PRICE = st.sampled_from((2, 2, 2, 2, 2, 2, 1, 3))
SWEEP_TIF = st.sampled_from((TimeInForce.IOC, TimeInForce.IOC, TimeInForce.GTC))
SWEEP_QTY = st.integers(1, 30)
ANY_INDEX = st.integers(0, 10**6)


@st.composite
def crowded_journals(draw: st.DrawFn) -> list[Command]:
    """One tiny market: a long queue of asks at one price is built, then cancelled from the middle.

    Cancelled orders leave husks in a level's queue until they reach its head or the level
    compacts itself; neither may change which order fills next. Occasional buys sweep the asks.
    """
    journal = Journal()
    journal.add(CreateMarket, market_id="deep", scheme=TickScheme.TICKS, max_tick=3, stp=draw(STP))
    queue_length = draw(QUEUE_LENGTH)
    actions = ["queue"] * queue_length + [draw(CROWDED_ACTIONS) for _ in range(draw(CROWDED_STEPS))]
    for action in actions:
        journal.ts += 1
        if action in ("queue", "place", "sweep"):
            journal.last_order_id += 1
            fields: dict[str, Any] = {"side": Side.SELL, "qty": draw(QTY), "tif": TimeInForce.GTC}
            if action == "sweep":
                fields = {"side": Side.BUY, "qty": draw(SWEEP_QTY), "tif": draw(SWEEP_TIF)}
            else:
                journal.restable_ids.append(journal.last_order_id)
            order_id, account = journal.last_order_id, draw(CROWD)
            price = 2 if action == "queue" else draw(CROWDED_PRICE)
            journal.add(PlaceOrder, market_id="deep", order_id=order_id, account=account, price=price, **fields)
        elif len(journal.restable_ids) > 1:
            # an ask the journal has not cancelled yet (a sweep may have filled it), but not the
            # oldest: the head of the queue stays, so the husks behind it pile up
            order_id = journal.restable_ids.pop(1 + draw(ANY_INDEX) % (len(journal.restable_ids) - 1))
            if action == "cancel":
                journal.add(CancelOrder, order_id=order_id)
            else:
                journal.add(ReduceOrder, order_id=order_id, reduce_by=draw(REDUCE_BY))
    return journal.commands


AMEND_PRICE = st.integers(0, 7)  # 0 keeps it; 7 is off the ladder
AMEND_STEPS = st.integers(5, 60)
TWO_ACCOUNTS = st.sampled_from(("a", "b"))
AMEND_TIF = st.sampled_from((TimeInForce.GTC,) * 3 + (TimeInForce.GTD, TimeInForce.IOC))


@st.composite
def amend_journals(draw: st.DrawFn) -> list[Command]:
    """One small market where half the commands amend a live order (the reference, run as the
    journal is drawn, says which are live): new prices that cross or not, more or less quantity,
    post-only, self-trade prevention of its own, while the market is now and then suspended."""
    journal, reference = Journal(), ReferenceBook()

    def add(command_type: type[Command], **fields: Any) -> None:
        journal.add(command_type, **fields)
        reference.apply(journal.commands[-1])

    add(CreateMarket, market_id="am", scheme=TickScheme.TICKS, max_tick=6, max_qty=draw(MAX_QTY), stp=draw(STP))
    for _ in range(draw(AMEND_STEPS)):
        journal.ts += draw(TICK)
        live = sorted(order.order_id for order in reference.all_resting())
        if draw(st.booleans()) and live:
            add(
                AmendOrder,
                order_id=draw(st.sampled_from(live)),
                account=draw(ACCOUNT_OR_NONE),
                price=draw(AMEND_PRICE),
                qty=draw(AMEND_QTY),
                post_only=draw(ONE_IN_4),
                stp=draw(ORDER_STP),
            )
        elif draw(ONE_IN_20):
            suspended = reference.markets["am"].state is MarketState.SUSPENDED
            add(ResumeMarket if suspended else SuspendMarket, market_id="am")
        else:
            journal.last_order_id += 1
            tif = draw(AMEND_TIF)
            add(
                PlaceOrder,
                market_id="am",
                order_id=journal.last_order_id,
                account=draw(TWO_ACCOUNTS),
                side=draw(SIDE),
                price=draw(st.integers(1, 6)),
                qty=draw(QTY),
                tif=tif,
                expires_at=journal.ts + draw(LIFETIME) if tif is TimeInForce.GTD else 0,
                stp=draw(ORDER_STP),
                lapse=draw(ONE_IN_4),
            )
    return journal.commands


# ---------------------------------------------------------------------- helpers


class Ledger:
    """Every accepted order's quantity, followed through the event stream alone."""

    def __init__(self) -> None:
        self.qty: dict[int, int] = {}
        self.filled: Counter[int] = Counter()
        self.cancelled: Counter[int] = Counter()  # cancelled, expired or reduced away

    def outstanding(self, order_id: int) -> int:
        return self.qty[order_id] - self.filled[order_id] - self.cancelled[order_id]

    def record(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, OrderAccepted):
                assert event.order_id not in self.qty, f"order {event.order_id} accepted twice"
                self.qty[event.order_id] = event.qty
            elif isinstance(event, TradeExecuted):
                assert event.qty > 0
                for order_id in (event.maker_order_id, event.taker_order_id):
                    self.filled[order_id] += event.qty
                assert event.maker_remaining == self.outstanding(event.maker_order_id), event
                assert event.taker_remaining == self.outstanding(event.taker_order_id), event
            elif isinstance(event, OrderCancelled):
                assert event.cancelled_qty > 0, event
                self.cancelled[event.order_id] += event.cancelled_qty
                assert self.outstanding(event.order_id) == 0, event
            elif isinstance(event, OrderAmended):
                assert event.old_remaining == self.outstanding(event.order_id), event
                self.qty[event.order_id] = event.qty
                self.cancelled[event.order_id] = 0  # its new quantity counts no more what was reduced away
                assert event.remaining == self.outstanding(event.order_id) > 0, event
            elif isinstance(event, OrderReduced):
                self.cancelled[event.order_id] += event.reduced_by
                assert event.qty == self.filled[event.order_id] + event.remaining, event  # as an amend states it
                assert 0 < event.remaining == self.outstanding(event.order_id), event
            elif isinstance(event, OrderRested):
                assert 0 < event.remaining == self.outstanding(event.order_id), event

    def check(self, engine: Engine) -> None:
        """filled + remaining + cancelled == qty for every accepted order; remaining is 0 unless live."""
        for order_id, qty in self.qty.items():
            status = engine.order_status(order_id)
            remaining = 0 if status is None else status.remaining
            filled, cancelled = self.filled[order_id], self.cancelled[order_id]
            assert filled + remaining + cancelled == qty, (order_id, qty, filled, remaining, cancelled)
            if status is not None:
                assert (status.qty, status.filled) == (qty, filled), (order_id, status)
        assert set(engine.orders) <= set(self.qty), "a live order that was never accepted"


def apply_all(engine: Engine, commands: list[Command]) -> list[list[Event]]:
    return [engine.apply(command) for command in commands]


def assert_same_books(engine: Engine, reference: ReferenceBook, market_ids: tuple[str, ...]) -> None:
    for market_id in market_ids:
        for max_levels in (2, 1_000):
            assert engine.depth(market_id, max_levels) == reference.depth(market_id, max_levels), market_id
        if market_id in reference.markets:
            assert engine.best_bid_ask(market_id) == reference.best_bid_ask(market_id), market_id
    assert {order_id: engine.order_status(order_id) for order_id in engine.orders} == reference.order_statuses()


def run_against_reference(commands: list[Command], market_ids: tuple[str, ...]) -> None:
    """Apply each command to an engine and the reference: same events, same books, sound invariants."""
    engine, reference = Engine(), ReferenceBook()
    for step, command in enumerate(commands):
        events = engine.apply(command)
        expected = reference.apply(command)
        assert events == expected, f"step {step}: {command}"
        engine.check_invariants()
        assert_same_books(engine, reference, market_ids)


def is_effective(events: list[Event]) -> bool:
    """Whether a command's events record a change of state (anything but a rejection)."""
    return any(not isinstance(event, Rejected) for event in events)


# ---------------------------------------------------------------------- properties


@PROFILE
@given(journals())
def test_engine_agrees_with_the_reference_at_every_step(commands: list[Command]) -> None:
    run_against_reference(commands, ALL_MARKETS)


@PROFILE
@given(crowded_journals())
def test_long_queues_with_many_cancels_agree_with_the_reference(commands: list[Command]) -> None:
    run_against_reference(commands, ("deep",))


@PROFILE
@given(amend_journals())
def test_amends_agree_with_the_reference(commands: list[Command]) -> None:
    run_against_reference(commands, ("am",))


@PROFILE
@given(st.one_of(journals(), crowded_journals(), amend_journals()))
def test_every_accepted_order_conserves_its_quantity(commands: list[Command]) -> None:
    engine, ledger = Engine(), Ledger()
    for command in commands:
        ledger.record(engine.apply(command))
        ledger.check(engine)


@PROFILE
@given(st.one_of(journals(), amend_journals()))
def test_a_suspension_lapses_exactly_the_lapsing_orders(commands: list[Command]) -> None:
    """Every live order of the market that said it lapses, and no other, at the suspension only."""
    engine, lapses = Engine(), dict[int, bool]()
    for command in commands:
        live = {order_id: order.book.market_id for order_id, order in engine.orders.items()}
        events = engine.apply(command)
        lapses |= {e.order_id: e.lapse for e in events if isinstance(e, OrderAccepted)}
        lapsed = [e.order_id for e in events if isinstance(e, OrderCancelled) and e.reason is CancelReason.LAPSED]
        expired = {e.order_id for e in events if isinstance(e, OrderCancelled) and e.reason is CancelReason.EXPIRED}
        if isinstance(command, SuspendMarket) and any(isinstance(e, MarketStateChanged) for e in events):
            market = command.market_id
            assert lapsed == sorted(i for i, m in live.items() if m == market and lapses[i] and i not in expired)
        else:
            assert lapsed == [], command


@PROFILE
@given(journals())
def test_a_rejected_command_changes_nothing(commands: list[Command]) -> None:
    engine = Engine()
    for command in commands:
        before, before_hash = engine.snapshot(), engine.state_hash()
        events = engine.apply(command)
        if not any(isinstance(event, Rejected) for event in events):
            continue
        # the timers due at the command's time (expiries, markets opening or closing) fire first
        twin = Engine.restore(before)
        timers = twin.apply(AdvanceTime(seq=command.seq, ts=command.ts))
        expired, outcome = events[: len(timers)], events[len(timers) :]
        assert expired == timers, events
        if isinstance(command, CancelOrders) and not all(isinstance(e, Rejected) for e in outcome):
            continue  # partly refused: each id has its own outcome, and the others were cancelled
        assert outcome, events
        assert all(isinstance(e, Rejected) for e in outcome), events
        assert len(outcome) == 1 or isinstance(command, CancelOrders), events
        if not expired:
            assert engine.state_hash() == before_hash, command
            continue
        # the timers due at the command's time fire; nothing else happens
        assert engine.state_hash() == twin.state_hash(), command


@PROFILE
@given(st.one_of(journals(), crowded_journals(), amend_journals()), st.integers(0, 200))
def test_restoring_a_snapshot_midway_changes_nothing(commands: list[Command], cut: int) -> None:
    cut %= len(commands) + 1
    straight = Engine()
    straight_events = apply_all(straight, commands)

    first_half = Engine()
    apply_all(first_half, commands[:cut])
    restored = Engine.restore(first_half.snapshot())
    assert restored.state_hash() == first_half.state_hash()
    restored.check_invariants()

    assert apply_all(restored, commands[cut:]) == straight_events[cut:]
    assert restored.state_hash() == straight.state_hash()
    restored.check_invariants()


@PROFILE
@given(journals())
def test_replaying_a_journal_gives_the_same_state_hash(commands: list[Command]) -> None:
    first, replay = Engine(), Engine()
    previous = first.state_hash()
    for command in commands:
        events = first.apply(command)
        assert replay.apply(command) == events
        now = first.state_hash()
        assert replay.state_hash() == now
        # the hash moves exactly when something happened
        assert (now != previous) == is_effective(events), (command, events)
        previous = now
