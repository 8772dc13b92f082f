"""The matcher: ``Engine.apply(command) -> list[Event]``, deterministic and pure.

Rules
=====
Priority
    Price first, then time. A buy takes the lowest ask first, a sell the highest bid first; at
    one price, the order that rested first fills first. Every trade executes at the resting
    (maker) order's price. An incoming order trades while it crosses (buy price >= best ask,
    sell price <= best bid); what is left of a GTC or GTD order then rests at its own price,
    behind every order already at that price.
Time in force
    GTC rests until cancelled. GTD rests until the engine's time reaches ``expires_at``: engine
    time is the ``ts`` of the command being applied, and before applying a command every GTD
    order with ``expires_at <= ts`` is cancelled (reason EXPIRED), oldest expiry first, then
    lowest order id. IOC trades what it can and cancels the rest (reason UNFILLED). FOK trades
    its whole quantity at once or is rejected (FOK_CANNOT_FILL) with nothing executed.
    Post-only (GTC/GTD only) is rejected (POST_ONLY_WOULD_TAKE) if its price crosses the book
    at all, even where the only orders it crosses are the account's own.
    A market order is an IOC or FOK whose limit is the worst tick of the market.
Amending
    ReduceOrder lowers an order's remaining quantity and keeps its place in the queue; reducing
    by the whole remainder cancels it. AmendOrder changes the price and/or the remaining
    quantity in one step. Its ``qty`` is the order's new quantity counted as FIX's OrderQty is:
    what has filled plus what is to remain, so a fill its sender had not seen yet is never traded
    twice; at or below what has filled, the order's remainder is cancelled (reason USER).
    At the same price and less remaining quantity it is a reduce
    (``OrderReduced``; it keeps its place, and works on a suspended market too). A new price or
    more quantity loses the place: the market must be open, and the order is checked as a new
    arrival at its new price (post-only and self-trade prevention as the amend says, a collateral
    account's funds with the order's own reserve counted free); a refusal leaves the order as it
    was. Otherwise ``OrderAmended``, and the order trades as a taker at its new price and rests
    behind every order already there (``OrderRested``), keeping its id, time in force and expiry.
    Never both the old and the new order live, never neither. An amend that changes nothing
    answers nothing. A price off the ladder is INVALID_PRICE, a quantity below zero
    INVALID_QUANTITY, and a ``qty`` above the market's largest order QUANTITY_OVER_MAX (what was
    reduced or cancelled away never counts).
Self-trade prevention (per order, else per market)
    An order never trades with an order of the same account. What happens is the incoming
    order's choice (``PlaceOrder.stp``), else its market's. CANCEL_TAKER ("cancel newest"): on
    reaching such a resting order, the incoming order's remainder is cancelled (reason
    SELF_TRADE); if it is the very first order it would meet, the incoming order is rejected
    (SELF_TRADE) instead. CANCEL_RESTING ("cancel oldest"): the account's resting order is
    cancelled (reason SELF_TRADE) and matching goes on. CANCEL_BOTH: the resting order is
    cancelled and so is the incoming order's remainder (both SELF_TRADE), even when it is the
    first order met. A FOK counts only the liquidity it could really take under these rules.
Order ids
    Order ids are allocated by the input journal in strictly increasing order. A new order whose
    id is not above every id the engine has accepted is rejected (DUPLICATE_ORDER_ID). A cancel
    or reduce of an id above that mark is UNKNOWN_ORDER; of one at or below it that is not live
    is ORDER_NOT_OPEN. A cancel or reduce naming an account must be that order's account, or it
    is UNKNOWN_ORDER (one account never learns of another's orders). ``CancelOrders`` cancels up
    to ``MAX_CANCEL_IDS`` ids in one command, each in turn as ``CancelOrder`` would, with its own
    ``OrderCancelled`` or ``Rejected`` (an id named twice: ORDER_NOT_OPEN the second time); none,
    or more, is INVALID_ORDER_IDS, as is a malformed account (MALFORMED_ID), for the whole.
Trade ids
    A trade's id is the previous trade's plus one, but never below the command's time in ms
    times ``IDS_PER_MS``: when a journal is rolled back (a restored backup, a lost second) and
    refilled later in time, a trade id handed out before the loss is not handed out again
    (unless one millisecond held over ``IDS_PER_MS`` trades). Order ids follow the same rule in
    the journal (see :mod:`matchbox.bus.rollback`). Both carry the shard in their high bits
    (:func:`~matchbox.engine.ids.shard_id`): an engine is one shard's.
Markets
    OPEN <-> SUSPENDED -> CLOSED -> SETTLED, and OPEN or SUSPENDED -> SETTLED directly. A
    suspended market rejects new orders (MARKET_NOT_OPEN) but keeps its book and accepts
    cancels and reduces. Each order says what becomes of it at a suspension: it persists (the
    default), or it lapses (``PlaceOrder.lapse``, Betfair's default in play): right after the
    ``MarketStateChanged``, every live lapsing order of the market is cancelled, lowest id first
    (reason LAPSED); an amended order keeps its choice. Closing or settling cancels every resting
    order (MARKET_CLOSED). A market may be created with an open time (``opens_at``, engine time):
    it is suspended until then (a ``MarketStateChanged`` follows its ``MarketCreated``), and the
    engine opens it then if it is still suspended; and with a close time (``closes_at``, after
    its creation and its open time, else INVALID_MARKET_SPEC), when the engine closes it if it is
    still open or suspended, so nothing trades at or after it. Both are timers, as GTD expiries
    are. Its ``MarketInfo`` (title, question, rules, category, outcome names: two on a binary
    market, one, the selection's, on an odds market, none on a ticks market) is passed on, never read.
Money
    A market created with ``collateral=True`` (binary or odds) trades only what accounts can pay
    for: a new order is refused (INSUFFICIENT_FUNDS) if its reserve is above the account's free
    balance, checked after the order's own fields and before it meets the book. Deposits,
    withdrawals, reserves, positions and settlement are :mod:`matchbox.engine.ledger`'s rules;
    the ledger follows this matcher's events and only for those markets, so markets without
    collateral keep the hot path as it was. A collateral market settles only on an outcome its
    scheme knows (INVALID_OUTCOME).
Dead-man switch
    ``Heartbeat(account, timeout_ms)`` arms an account's switch: its deadline becomes the
    heartbeat's time plus ``timeout_ms`` (replacing any earlier deadline); 0 disarms it. A timeout
    below 0 or above ``MAX_HEARTBEAT_TIMEOUT_MS`` (an hour) is INVALID_TIMEOUT, a heartbeat
    without an account INVALID_ACCOUNT. Each accepted heartbeat answers ``HeartbeatSet`` with the
    deadline (0: disarmed). A deadline is a timer like a GTD expiry: before a command at or past
    it, every resting order of the account, in every market (suspended ones too), is cancelled,
    lowest id first (reason DEADMAN), then ``DeadmanTriggered`` tells how many, and the switch is
    disarmed. Timers fire in time order; at one instant, dead-man switches (by account) come
    before GTD expiries (by order id), and markets' open and close times before both.
Ids
    An account is 1 to 64 characters of ``A-Z a-z 0-9 _ . -``, a market id the same and ``:``
    too (:mod:`matchbox.engine.ids`). A command naming an account, or a market that no book has,
    whose id breaks that rule is MALFORMED_ID before any other check, and its ``Rejected`` leaves
    the bad id out: no reader of the events ever meets one (a book's own id was checked when it
    was created). The empty string names nothing: a command that needs an account is then
    INVALID_ACCOUNT (an order, a cancel-all, a deposit, a withdrawal, a heartbeat), a new market
    INVALID_MARKET_SPEC, a cancel or reduce acts without an account, and any other UNKNOWN_MARKET.
Rejections
    Bad input is never an exception: it is one ``Rejected`` event with a reason code, and the
    book is exactly as it was (timers due at the command's time still fire first). A new order's
    own fields (quantity, price, type, time in force, expiry) are checked by
    :func:`matchbox.engine.rules.check_order`, the one rule the API asks too.

Events for one order, in order: ``OrderAccepted``; then a ``TradeExecuted`` for each fill (and
an ``OrderCancelled`` for each resting order removed by self-trade prevention); then
``OrderRested`` if a remainder rests, or ``OrderCancelled`` if a remainder is cancelled; nothing
more if it filled completely (the last trade shows ``taker_remaining == 0``).

Limits: one slot per tick per side, so a ``ticks`` market has at most 100,000 ticks. Only live
orders are kept: the status of a finished order is in the event stream, not the engine.

Timers share one heap: ``(expires_at, order_id, "")`` for a GTD order, ``(deadline, 0, account)``
for a dead-man switch. Entries are never removed early: an order cancelled before its expiry, or
a deadline replaced by a later heartbeat, leaves a stale entry that is skipped when it comes up,
and the heap is rebuilt when replaced deadlines make up half of it. To find an account's orders
without a walk over every order, the engine keeps, for each account that has ever armed a
switch, the ids of its orders that rested since (a superset of its live ones, pruned as it
grows); accounts that never armed one cost the hot path a single test of an empty dict.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import lru_cache
from heapq import heapify, heappop, heappush
from typing import Any, Generic, TypeVar

from matchbox.engine import ledger, queries, snapshot
from matchbox.engine.book import Book, Level, Order
from matchbox.engine.ids import MAX_SHARDS, shard_id, valid_account, valid_market_id, valid_transfer_id
from matchbox.engine.ledger import Account, Ledger
from matchbox.engine.queries import BookDepth, BookIntegrityError, LiveOrder
from matchbox.engine.rules import RESTING_TIFS, check_order, opening, valid_times
from matchbox.engine.schemes import tick_range
from matchbox.engine.types import (
    IDS_PER_MS,
    MAX_CANCEL_IDS,
    MAX_HEARTBEAT_TIMEOUT_MS,
    MAX_OUTCOMES,
    AdvanceTime,
    AmendOrder,
    BalanceChanged,
    BalanceReason,
    CancelAll,
    CancelOrder,
    CancelOrders,
    CancelReason,
    CloseMarket,
    Command,
    CreateMarket,
    DeadmanTriggered,
    Deposit,
    Event,
    Heartbeat,
    HeartbeatSet,
    MarketCreated,
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
    RejectReason,
    ResumeMarket,
    SelfTradePrevention,
    SettleMarket,
    Side,
    SuspendMarket,
    TickScheme,
    TimeInForce,
    TradeExecuted,
    TransferIn,
    TransferOut,
    TransferredIn,
    TransferredOut,
    TransferRefused,
    Withdraw,
)

_BUY = Side.BUY
_SELL = Side.SELL
_GTC = TimeInForce.GTC
_GTD = TimeInForce.GTD
_LIMIT = OrderKind.LIMIT
_MARKET = OrderKind.MARKET
_FOK = TimeInForce.FOK
_OPEN = MarketState.OPEN
_CANCEL_TAKER = SelfTradePrevention.CANCEL_TAKER
_CANCEL_RESTING = SelfTradePrevention.CANCEL_RESTING
_INT64_MAX = 2**63 - 1
_NS_PER_MS = 1_000_000

_T = TypeVar("_T")
# (time, order_id, "") for a GTD expiry; (time, 0, account) for a dead-man switch; (time, _OPENS or
# _CLOSES, market_id) for a market's open or close time: at one instant, markets first
Timer = tuple[int, int, str]
_OPENS, _CLOSES = -2, -1


class _Watch(Generic[_T]):
    """Some orders that rested, by id, each with a value, found without a walk over the book (an
    account's since its first heartbeat; those that lapse at a suspension; those with their own
    self-trade rule): every live one, and finished ones until they are pruned (when they have
    doubled since the last pruning), so the hot path never removes."""

    __slots__ = ("ids", "prune_at")

    def __init__(self, ids: dict[int, _T]) -> None:
        self.ids = ids
        self.prune_at = max(64, 2 * len(ids))

    def add(self, order_id: int, value: _T, live: dict[int, Order]) -> None:
        ids = self.ids
        ids[order_id] = value
        if len(ids) >= self.prune_at:  # ids are never reused: a live id is still ours
            self.ids = {i: v for i, v in ids.items() if i in live}
            self.prune_at = max(64, 2 * len(self.ids))


class Engine:
    """Many markets, one sequence of commands, one list of events per command."""

    def __init__(self, shard: int = 0) -> None:
        if not 0 <= shard < MAX_SHARDS:
            raise ValueError(f"shard {shard} is not in 0..{MAX_SHARDS - 1}")
        self.shard = shard  # its trade ids carry it; its journal's order ids do too (matchbox.engine.ids)
        self._id_base = shard_id(shard, 0)
        self.books: dict[str, Book] = {}
        self.orders: dict[int, Order] = {}  # every live order, by id
        self.last_order_id = 0  # the highest order id accepted
        self.last_trade_id = 0
        self._timers: list[Timer] = []  # heap of GTD expiries and dead-man deadlines; may hold stale ones
        self._stale_timers = 0  # deadlines replaced or disarmed since the heap was last rebuilt
        self.deadlines: dict[str, int] = {}  # armed dead-man switches: account -> deadline (ns)
        self._watched: dict[str, _Watch[None]] = {}  # accounts that have armed a switch: their orders
        self.ledger = Ledger()  # money: only collateral markets and deposits reach it
        self.transfers: set[str] = set()  # the transfer ids taken out or paid in here: each once
        self.lapsing: _Watch[None] = _Watch({})  # the orders that rested and lapse at a suspension
        self.own_stp: _Watch[SelfTradePrevention] = _Watch({})  # the orders that rested with their own rule
        self._handlers: dict[type[Command], Callable[[Any, list[Event]], None]] = {
            PlaceOrder: self._place,
            CancelOrder: self._cancel,
            CancelOrders: self._cancel_orders,
            AmendOrder: self._amend,
            ReduceOrder: self._reduce,
            CancelAll: self._cancel_all,
            CreateMarket: self._create_market,
            SuspendMarket: self._suspend,
            ResumeMarket: self._resume,
            CloseMarket: self._close,
            SettleMarket: self._settle,
            Deposit: self._deposit,
            Withdraw: self._withdraw,
            TransferOut: self._transfer_out,
            TransferIn: self._transfer_in,
            AdvanceTime: _ignore,
            Heartbeat: self._heartbeat,
        }

    # ------------------------------------------------------------------ entry point

    def apply(self, command: Command) -> list[Event]:
        events: list[Event] = []
        timers = self._timers
        money = self.ledger.markets
        if timers and timers[0][0] <= command.ts:
            self._fire_timers(command, events)
            if money:  # the command must see the money the expiries released
                events = self.ledger.follow(events)
        start = len(events)
        if type(command) is PlaceOrder:  # the most frequent command skips the dispatch table
            self._place(command, events)
        else:
            self._handlers[type(command)](command, events)
        if money:
            events[start:] = self.ledger.follow(events[start:])
        return events

    # ------------------------------------------------------------------ orders

    def _place(self, cmd: PlaceOrder, events: list[Event]) -> None:
        book = self.books.get(cmd.market_id)
        if (  # the plain, valid GTC limit order skips the full check
            book is None
            or book.state is not _OPEN
            or cmd.kind is not _LIMIT
            or cmd.tif is not _GTC
            or cmd.post_only
            or cmd.expires_at
            or not self.last_order_id < cmd.order_id
            or not 0 < cmd.qty <= book.max_qty
            or not book.min_tick <= cmd.price <= book.max_tick
            or book.collateral
            or not _known_account(cmd.account)
        ):
            reason = self._check_order(cmd, book)
            if reason is not None:
                events.append(_reject(cmd, reason, cmd.market_id, cmd.account))
                return
            assert book is not None
            if book.collateral and not self._affordable(cmd, book):
                events.append(_reject(cmd, RejectReason.INSUFFICIENT_FUNDS, cmd.market_id, cmd.account))
                return
        side = cmd.side
        tif = cmd.tif
        if cmd.kind is _MARKET:
            price = book.max_tick if side is _BUY else book.min_tick
        else:
            price = cmd.price
        crosses = price >= book.best_ask if side is _BUY else price <= book.best_bid
        if crosses:
            reason = self._check_taker(cmd, book, side, price)
            if reason is not None:
                events.append(_reject(cmd, reason, cmd.market_id, cmd.account))
                return
        elif tif is _FOK:
            events.append(_reject(cmd, RejectReason.FOK_CANNOT_FILL, cmd.market_id, cmd.account))
            return

        order_id = cmd.order_id
        self.last_order_id = order_id
        seq = cmd.seq
        ts = cmd.ts
        account = cmd.account
        qty = cmd.qty
        market_id = book.market_id
        # hot path: events built positionally, fields in declared order (see types.py)
        events.append(
            OrderAccepted(
                seq,
                ts,
                market_id,
                order_id,
                account,
                side,
                price,
                qty,
                tif,
                cmd.kind,
                cmd.post_only,
                cmd.expires_at,
                cmd.lapse,
            )
        )
        remaining = qty
        stopped = False
        if crosses:
            remaining, stopped = self._match(cmd, book, side, price, events)
        if not remaining:
            return
        if stopped or tif not in RESTING_TIFS:
            reason_c = CancelReason.SELF_TRADE if stopped else CancelReason.UNFILLED
            events.append(OrderCancelled(seq, ts, market_id, order_id, account, remaining, reason_c))
            return
        order = Order(order_id, account, side, price, qty, remaining, qty - remaining, tif, cmd.expires_at, book)
        # Book.rest, inlined: this is the most frequent path of all
        side_levels = book.levels[side]
        level = side_levels[price]
        if level is None:
            level = side_levels[price] = Level(price)
        level.orders.append(order)
        level.total += remaining
        count = level.count + 1
        level.count = count
        if count == 1:
            book.occupied[side].add(price)
        if side is _BUY:
            if price > book.best_bid:
                book.best_bid = price
        elif price < book.best_ask:
            book.best_ask = price
        self.orders[order_id] = order
        if self._watched:  # some account has armed a dead-man switch
            watch = self._watched.get(account)
            if watch is not None:
                watch.add(order_id, None, self.orders)
        if tif is _GTD:
            heappush(self._timers, (cmd.expires_at, order_id, ""))
        if cmd.lapse:
            self.lapsing.add(order_id, None, self.orders)
        if cmd.stp is not None:
            self.own_stp.add(order_id, cmd.stp, self.orders)
        events.append(OrderRested(seq, ts, market_id, order_id, account, side, price, remaining))

    def _check_order(self, cmd: PlaceOrder, book: Book | None) -> RejectReason | None:
        """The reason a new order is refused before it meets the book, or None."""
        reason = _account_problem(cmd.account)
        if reason is not None:
            return reason
        if book is None:
            return _unknown_market(cmd.market_id)
        if book.state is not _OPEN:
            return RejectReason.MARKET_NOT_OPEN
        if cmd.order_id <= self.last_order_id:
            return RejectReason.DUPLICATE_ORDER_ID
        invalid = check_order(book, cmd)  # the order's own fields: the rule the API checks too
        return None if invalid is None else invalid.reason

    def _affordable(self, cmd: PlaceOrder, book: Book) -> bool:
        limit = cmd.price
        if cmd.kind is _MARKET:
            limit = book.max_tick if cmd.side is _BUY else book.min_tick
        return self.ledger.affordable(book, cmd.account, cmd.side, limit, cmd.qty)

    def _check_taker(self, cmd: PlaceOrder, book: Book, side: Side, price: int) -> RejectReason | None:
        """The reason a crossing order is refused before it trades, or None."""
        if cmd.post_only:
            return RejectReason.POST_ONLY_WOULD_TAKE
        stp = book.stp if cmd.stp is None else cmd.stp
        first = _first_live(book, side)
        if first.account == cmd.account and stp is _CANCEL_TAKER:
            return RejectReason.SELF_TRADE
        if cmd.tif is _FOK and _fillable(book, side, price, cmd.account, cmd.qty, stp) < cmd.qty:
            return RejectReason.FOK_CANNOT_FILL
        return None

    def _match(self, cmd: PlaceOrder, book: Book, side: Side, price: int, events: list[Event]) -> tuple[int, bool]:
        """Trade an incoming order against the book; return (remaining, stopped by self-trade)."""
        remaining = cmd.qty
        buying = side is _BUY
        maker_side = _SELL if buying else _BUY
        levels = book.levels[maker_side]
        while remaining:
            best = book.best_ask if buying else book.best_bid
            if (best > price) if buying else (best < price):  # an empty side's sentinel never crosses
                break
            level = levels[best]
            assert level is not None
            remaining, stopped = self._take_level(cmd, book, level, remaining, events)
            if not level.count:
                level.orders.clear()
                book.level_emptied(maker_side, best)
            if stopped:
                return remaining, True
        return remaining, False

    def _take_level(
        self, cmd: PlaceOrder, book: Book, level: Level, remaining: int, events: list[Event]
    ) -> tuple[int, bool]:
        """Fill against one level, oldest first, until the level or the taker is exhausted."""
        queue = level.orders
        taker_account = cmd.account
        seq = cmd.seq
        ts = cmd.ts
        first_trade_id = self._id_base + ts // 1_000_000 * IDS_PER_MS  # the floor: see "Trade ids"
        price = level.price
        index = self.orders
        while remaining and level.count:
            maker = queue[0]  # live: the head of a non-empty level always is
            maker_remaining = maker.remaining
            if maker.account == taker_account:
                stp = book.stp if cmd.stp is None else cmd.stp
                if stp is _CANCEL_TAKER:
                    return remaining, True
                # CANCEL_RESTING or CANCEL_BOTH: take the account's own order off right here, in the queue
                # being walked, rather than through Book.take_off (which may compact it)
                queue.popleft()
                maker.remaining = 0
                level.total -= maker_remaining
                level.count -= 1
                del index[maker.order_id]
                while queue and not queue[0].remaining:
                    queue.popleft()
                events.append(
                    OrderCancelled(
                        seq=seq,
                        ts=ts,
                        market_id=book.market_id,
                        order_id=maker.order_id,
                        account=maker.account,
                        cancelled_qty=maker_remaining,
                        reason=CancelReason.SELF_TRADE,
                    )
                )
                if stp is not _CANCEL_RESTING:  # CANCEL_BOTH: the taker's remainder goes too
                    return remaining, True
                continue
            qty = remaining if remaining < maker_remaining else maker_remaining
            remaining -= qty
            maker_remaining -= qty
            maker.remaining = maker_remaining
            maker.filled += qty
            level.total -= qty
            if not maker_remaining:
                queue.popleft()
                level.count -= 1
                del index[maker.order_id]
                while queue and not queue[0].remaining:  # keep the head live
                    queue.popleft()
            trade_id = self.last_trade_id + 1
            if trade_id < first_trade_id:
                trade_id = first_trade_id
            self.last_trade_id = trade_id
            events.append(
                TradeExecuted(
                    seq,
                    ts,
                    book.market_id,
                    trade_id,
                    price,
                    qty,
                    cmd.side,
                    maker.order_id,
                    cmd.order_id,
                    maker.account,
                    taker_account,
                    maker_remaining,
                    remaining,
                )
            )
        return remaining, False

    def _cancel_resting(self, order: Order, reason: CancelReason, seq: int, ts: int, events: list[Event]) -> None:
        book = order.book
        del self.orders[order.order_id]
        cancelled = book.take_off(order)
        events.append(OrderCancelled(seq, ts, book.market_id, order.order_id, order.account, cancelled, reason))

    def _find_live(self, order_id: int, account: str) -> Order | RejectReason:
        if account and not _known_account(account):
            return RejectReason.MALFORMED_ID
        order = self.orders.get(order_id)
        if order is None:
            return RejectReason.UNKNOWN_ORDER if order_id > self.last_order_id else RejectReason.ORDER_NOT_OPEN
        if account and order.account != account:
            return RejectReason.UNKNOWN_ORDER
        return order

    def _cancel(self, cmd: CancelOrder, events: list[Event]) -> None:
        order = self.orders.get(cmd.order_id)
        if order is not None and not cmd.account:  # the common case, without the checks' detour
            self._cancel_resting(order, CancelReason.USER, cmd.seq, cmd.ts, events)
            return
        found = self._find_live(cmd.order_id, cmd.account)
        if isinstance(found, RejectReason):
            events.append(_reject(cmd, found, "", cmd.account, cmd.order_id))
            return
        self._cancel_resting(found, CancelReason.USER, cmd.seq, cmd.ts, events)

    def _cancel_orders(self, cmd: CancelOrders, events: list[Event]) -> None:
        account = cmd.account
        if account and not _known_account(account):
            events.append(_reject(cmd, RejectReason.MALFORMED_ID, "", account, 0))
            return
        if not 0 < len(cmd.order_ids) <= MAX_CANCEL_IDS:
            events.append(_reject(cmd, RejectReason.INVALID_ORDER_IDS, "", account, 0))
            return
        for order_id in cmd.order_ids:
            found = self._find_live(order_id, account)
            if isinstance(found, RejectReason):
                events.append(_reject(cmd, found, "", account, order_id))
            else:
                self._cancel_resting(found, CancelReason.USER, cmd.seq, cmd.ts, events)

    def _amend(self, cmd: AmendOrder, events: list[Event]) -> None:
        found = self._find_live(cmd.order_id, cmd.account)
        if isinstance(found, RejectReason):
            events.append(_reject(cmd, found, "", cmd.account, cmd.order_id))
            return
        order, book = found, found.book
        price = cmd.price or order.price
        remaining = cmd.qty - order.filled if cmd.qty else order.remaining  # a fill it did not see is counted
        reason = None
        if cmd.price and not book.min_tick <= price <= book.max_tick:
            reason = RejectReason.INVALID_PRICE
        elif cmd.qty < 0:
            reason = RejectReason.INVALID_QUANTITY
        elif cmd.qty > book.max_qty:  # what it trades in all: reduced quantity never will
            reason = RejectReason.QUANTITY_OVER_MAX
        if reason is not None:
            events.append(_reject(cmd, reason, book.market_id, order.account, order.order_id))
            return
        if remaining <= 0:  # no more than has filled already: nothing is left to trade
            self._cancel_resting(order, CancelReason.USER, cmd.seq, cmd.ts, events)
            return
        if price == order.price and remaining <= order.remaining:  # nothing, or a reduce: it keeps its place
            if remaining < order.remaining:
                self._reduce_by(order, order.remaining - remaining, cmd, events)
            return
        side, account, order_id, market_id = order.side, order.account, order.order_id, book.market_id
        arrival = PlaceOrder(
            seq=cmd.seq,
            ts=cmd.ts,
            market_id=market_id,
            order_id=order_id,
            account=account,
            side=side,
            price=price,
            qty=remaining,
            tif=order.tif,
            post_only=cmd.post_only,
            expires_at=order.expires_at,
            stp=self.own_stp.ids.get(order_id) if cmd.stp is None else cmd.stp,  # the amend's, else its own
        )
        # its own side of the book: the order itself is never the first order it would meet
        crosses = price >= book.best_ask if side is _BUY else price <= book.best_bid
        if book.state is not _OPEN:
            reason = RejectReason.MARKET_NOT_OPEN
        elif book.collateral and not self.ledger.affordable(book, account, side, price, remaining, order_id):
            reason = RejectReason.INSUFFICIENT_FUNDS
        elif crosses:
            reason = self._check_taker(arrival, book, side, price)
        if reason is not None:
            events.append(_reject(cmd, reason, market_id, account, order_id))
            return
        old_price, old_remaining, filled = order.price, order.remaining, order.filled
        qty = filled + remaining  # as FIX's OrderQty after a replace: what was reduced away is gone
        book.take_off(order)
        seq, ts = cmd.seq, cmd.ts
        events.append(
            OrderAmended(seq, ts, market_id, order_id, account, side, price, remaining, qty, old_price, old_remaining)
        )
        left, stopped = self._match(arrival, book, side, price, events) if crosses else (remaining, False)
        if not left or stopped:
            del self.orders[order_id]
            if left:
                events.append(OrderCancelled(seq, ts, market_id, order_id, account, left, CancelReason.SELF_TRADE))
            return
        moved = Order(
            order_id, account, side, price, qty, left, filled + remaining - left, order.tif, order.expires_at, book
        )
        book.rest(moved)
        self.orders[order_id] = moved
        if cmd.stp is not None:
            self.own_stp.add(order_id, cmd.stp, self.orders)
        events.append(OrderRested(seq, ts, market_id, order_id, account, side, price, left))

    def _reduce(self, cmd: ReduceOrder, events: list[Event]) -> None:
        found = self._find_live(cmd.order_id, cmd.account)
        if isinstance(found, RejectReason) or cmd.reduce_by <= 0:
            reason = found if isinstance(found, RejectReason) else RejectReason.INVALID_QUANTITY
            events.append(_reject(cmd, reason, "", cmd.account, cmd.order_id))
            return
        self._reduce_by(found, cmd.reduce_by, cmd, events)

    def _reduce_by(self, order: Order, reduce_by: int, cmd: Command, events: list[Event]) -> None:
        """Lower a live order's remainder by ``reduce_by`` (> 0), keeping its place; all of it cancels it."""
        if reduce_by >= order.remaining:
            self._cancel_resting(order, CancelReason.USER, cmd.seq, cmd.ts, events)
            return
        order.remaining -= reduce_by
        level = order.book.levels[order.side][order.price]
        assert level is not None
        level.total -= reduce_by
        events.append(
            OrderReduced(
                seq=cmd.seq,
                ts=cmd.ts,
                market_id=order.book.market_id,
                order_id=order.order_id,
                account=order.account,
                reduced_by=reduce_by,
                remaining=order.remaining,
                price=order.price,
                qty=order.filled + order.remaining,
            )
        )

    def _cancel_all(self, cmd: CancelAll, events: list[Event]) -> None:
        book = self.books.get(cmd.market_id)
        reason = _account_problem(cmd.account)
        if reason is None and book is None:
            reason = _unknown_market(cmd.market_id)
        if reason is not None:
            events.append(_reject(cmd, reason, cmd.market_id, cmd.account))
            return
        assert book is not None
        mine = sorted((o for o in book.live_orders() if o.account == cmd.account), key=_by_id)
        for order in mine:
            self._cancel_resting(order, CancelReason.CANCEL_ALL, cmd.seq, cmd.ts, events)

    # ------------------------------------------------------------------ timers

    def _fire_timers(self, cmd: Command, events: list[Event]) -> None:
        """Fire every timer due at the command's time, earliest first."""
        timers = self._timers
        while timers and timers[0][0] <= cmd.ts:
            timer = heappop(timers)
            if not self._is_live(timer):
                continue
            _, order_id, name = timer
            if order_id > 0:
                self._cancel_resting(self.orders[order_id], CancelReason.EXPIRED, cmd.seq, cmd.ts, events)
            elif not order_id:
                self._deadman(name, cmd, events)
            elif order_id == _OPENS:
                self._transition(cmd, name, (MarketState.SUSPENDED,), MarketState.OPEN, "", events)
            else:
                self._transition(cmd, name, (MarketState.OPEN, MarketState.SUSPENDED), MarketState.CLOSED, "", events)

    def _is_live(self, timer: Timer) -> bool:
        """Whether a timer still stands: its order is live, its deadline is the account's, or its
        market is still to be opened (suspended) or closed (open or suspended) then."""
        at, order_id, name = timer
        if order_id > 0:
            order = self.orders.get(order_id)
            return order is not None and order.expires_at == at
        if not order_id:
            return self.deadlines.get(name) == at
        book = self.books[name]
        if order_id == _OPENS:
            return book.opens_at == at and book.state is MarketState.SUSPENDED
        return book.closes_at == at and book.state in (MarketState.OPEN, MarketState.SUSPENDED)

    def _heartbeat(self, cmd: Heartbeat, events: list[Event]) -> None:
        account = cmd.account
        timeout_ms = cmd.timeout_ms
        reason = _account_problem(account)
        if reason is not None:
            events.append(_reject(cmd, reason, "", account))
            return
        valid = 0 <= timeout_ms <= MAX_HEARTBEAT_TIMEOUT_MS
        deadline = cmd.ts + timeout_ms * _NS_PER_MS if valid else 0
        if not valid or deadline > _INT64_MAX:
            events.append(_reject(cmd, RejectReason.INVALID_TIMEOUT, "", account))
            return
        if self.deadlines.pop(account, None) is not None:
            self._stale_timers += 1  # its timer stays in the heap until it comes up or a rebuild
        if timeout_ms:
            self._arm(account, deadline)
        else:
            deadline = 0
        if self._stale_timers > 64 and 2 * self._stale_timers > len(self._timers):
            self._rebuild_timers()
        events.append(HeartbeatSet(seq=cmd.seq, ts=cmd.ts, account=account, deadline=deadline))

    def _arm(self, account: str, deadline: int) -> None:
        self.deadlines[account] = deadline
        heappush(self._timers, (deadline, 0, account))
        if account not in self._watched:  # once per account: from now on its orders are noted as they rest
            self._watched[account] = _Watch({i: None for i, o in self.orders.items() if o.account == account})

    def _rebuild_timers(self) -> None:
        """Drop stale timers (a sorted list is a heap; the set drops duplicates)."""
        self._timers = sorted({timer for timer in self._timers if self._is_live(timer)})
        self._stale_timers = 0

    def _deadman(self, account: str, cmd: Command, events: list[Event]) -> None:
        """The account's deadline passed: cancel all its resting orders, then disarm."""
        del self.deadlines[account]
        watch = self._watched[account]
        orders = self.orders
        mine = sorted((o for o in map(orders.get, watch.ids) if o is not None), key=_by_id)
        watch.ids.clear()
        for order in mine:
            self._cancel_resting(order, CancelReason.DEADMAN, cmd.seq, cmd.ts, events)
        events.append(DeadmanTriggered(seq=cmd.seq, ts=cmd.ts, account=account, cancelled=len(mine)))

    # ------------------------------------------------------------------ markets

    def _create_market(self, cmd: CreateMarket, events: list[Event]) -> None:
        ticks = tick_range(cmd.scheme, cmd.max_tick)
        if cmd.market_id and not valid_market_id(cmd.market_id):
            events.append(_reject(cmd, RejectReason.MALFORMED_ID))
            return
        if cmd.market_id in self.books:
            events.append(_reject(cmd, RejectReason.MARKET_EXISTS, cmd.market_id))
            return
        opens_at = opening(cmd.ts, cmd.opens_at)
        if (
            ticks is None
            or not cmd.market_id
            or cmd.max_qty <= 0
            or (cmd.collateral and cmd.scheme is TickScheme.TICKS)
            or (cmd.info is not None and len(cmd.info.outcomes) not in (0, MAX_OUTCOMES[cmd.scheme]))
            or not valid_times(cmd.ts, cmd.opens_at, cmd.closes_at)
            or (cmd.fees is not None and not ledger.valid_fees(cmd.scheme, cmd.collateral, cmd.fees))
        ):
            events.append(_reject(cmd, RejectReason.INVALID_MARKET_SPEC, cmd.market_id))
            return
        min_tick, max_tick = ticks
        book = Book(cmd.market_id, cmd.scheme, min_tick, max_tick, cmd.max_qty, cmd.stp, cmd.collateral)
        book.info, book.opens_at, book.closes_at, book.fees = cmd.info, opens_at, cmd.closes_at, cmd.fees
        self.books[cmd.market_id] = book
        if cmd.collateral:
            self.ledger.markets[cmd.market_id] = cmd.scheme
        if cmd.fees is not None:
            self.ledger.set_fees(cmd.market_id, cmd.fees)
        events.append(
            MarketCreated(
                seq=cmd.seq,
                ts=cmd.ts,
                market_id=cmd.market_id,
                scheme=cmd.scheme,
                min_tick=min_tick,
                max_tick=max_tick,
                max_qty=cmd.max_qty,
                stp=cmd.stp,
                collateral=cmd.collateral,
                info=cmd.info,
                opens_at=opens_at,
                closes_at=cmd.closes_at,
                fees=cmd.fees,
            )
        )
        if opens_at:  # suspended until it opens
            book.state = MarketState.SUSPENDED
            events.append(MarketStateChanged(cmd.seq, cmd.ts, cmd.market_id, MarketState.SUSPENDED, ""))
        self.arm_market(book)

    def arm_market(self, book: Book) -> None:
        """Arm the timers of a market's open and close times, if it has them and they are still to
        come (when it is created, or restored from a snapshot)."""
        if book.opens_at and book.state is MarketState.SUSPENDED:
            heappush(self._timers, (book.opens_at, _OPENS, book.market_id))
        if book.closes_at and book.state in (MarketState.OPEN, MarketState.SUSPENDED):
            heappush(self._timers, (book.closes_at, _CLOSES, book.market_id))

    def _suspend(self, cmd: SuspendMarket, events: list[Event]) -> None:
        self._transition(cmd, cmd.market_id, (MarketState.OPEN,), MarketState.SUSPENDED, "", events)
        if isinstance(events[-1], Rejected) or not self.lapsing.ids:
            return
        orders = self.orders
        lapsing = sorted(i for i in self.lapsing.ids if i in orders and orders[i].book.market_id == cmd.market_id)
        for order_id in lapsing:
            self._cancel_resting(orders[order_id], CancelReason.LAPSED, cmd.seq, cmd.ts, events)

    def _resume(self, cmd: ResumeMarket, events: list[Event]) -> None:
        self._transition(cmd, cmd.market_id, (MarketState.SUSPENDED,), MarketState.OPEN, "", events)

    def _close(self, cmd: CloseMarket, events: list[Event]) -> None:
        live = (MarketState.OPEN, MarketState.SUSPENDED)
        self._transition(cmd, cmd.market_id, live, MarketState.CLOSED, "", events)

    def _settle(self, cmd: SettleMarket, events: list[Event]) -> None:
        book = self.books.get(cmd.market_id)
        if book is not None and book.collateral and not ledger.valid_outcome(book.scheme, cmd.outcome):
            events.append(_reject(cmd, RejectReason.INVALID_OUTCOME, cmd.market_id))
            return
        before = (MarketState.OPEN, MarketState.SUSPENDED, MarketState.CLOSED)
        self._transition(cmd, cmd.market_id, before, MarketState.SETTLED, cmd.outcome, events)

    def _transition(
        self,
        cmd: Command,
        market_id: str,
        allowed: tuple[MarketState, ...],
        target: MarketState,
        outcome: str,
        events: list[Event],
    ) -> None:
        book = self.books.get(market_id)
        if book is None or book.state not in allowed:
            reason = _unknown_market(market_id) if book is None else RejectReason.ILLEGAL_TRANSITION
            events.append(_reject(cmd, reason, market_id))
            return
        book.state = target
        book.outcome = outcome
        if target is not MarketState.SUSPENDED:  # opened, early or on time, or ended: no opening is due
            book.opens_at = 0
        events.append(MarketStateChanged(seq=cmd.seq, ts=cmd.ts, market_id=market_id, state=target, outcome=outcome))
        if target in (MarketState.CLOSED, MarketState.SETTLED):
            for order in sorted(book.live_orders(), key=_by_id):
                self._cancel_resting(order, CancelReason.MARKET_CLOSED, cmd.seq, cmd.ts, events)

    # ------------------------------------------------------------------ money

    def _deposit(self, cmd: Deposit, events: list[Event]) -> None:
        self._cash(cmd, self.ledger.deposit, BalanceReason.DEPOSIT, events)

    def _withdraw(self, cmd: Withdraw, events: list[Event]) -> None:
        self._cash(cmd, self.ledger.withdraw, BalanceReason.WITHDRAW, events)

    def _cash(
        self,
        cmd: Deposit | Withdraw,
        move: Callable[[str, int], Account | RejectReason],
        reason: BalanceReason,
        events: list[Event],
    ) -> None:
        problem = _account_problem(cmd.account)
        result = move(cmd.account, cmd.amount) if problem is None else problem
        if isinstance(result, RejectReason):
            events.append(_reject(cmd, result, "", cmd.account))
            return
        events.append(
            BalanceChanged(
                seq=cmd.seq, ts=cmd.ts, account=cmd.account, total=result.total, reserved=result.reserved, reason=reason
            )
        )

    def _transfer_out(self, cmd: TransferOut, events: list[Event]) -> None:
        reason = self._transfer_problem(cmd.account, cmd.transfer_id, cmd.to_shard)
        result = reason or self.ledger.withdraw(cmd.account, cmd.amount)
        if isinstance(result, RejectReason):
            events.append(_reject(cmd, result, "", cmd.account))
            return
        self.transfers.add(cmd.transfer_id)
        seq, ts, account, amount = cmd.seq, cmd.ts, cmd.account, cmd.amount
        events.append(TransferredOut(seq, ts, account, amount, cmd.transfer_id, cmd.to_shard))
        events.append(BalanceChanged(seq, ts, account, result.total, result.reserved, BalanceReason.TRANSFER_OUT))

    def _transfer_in(self, cmd: TransferIn, events: list[Event]) -> None:
        reason = self._transfer_problem(cmd.account, cmd.transfer_id, cmd.from_shard)
        result = reason or self.ledger.deposit(cmd.account, cmd.amount)
        seq, ts, account, amount = cmd.seq, cmd.ts, cmd.account, cmd.amount
        if isinstance(result, RejectReason):
            events.append(TransferRefused(seq, ts, account, amount, cmd.transfer_id, cmd.from_shard, result))
            return
        self.transfers.add(cmd.transfer_id)
        events.append(TransferredIn(seq, ts, account, amount, cmd.transfer_id, cmd.from_shard))
        events.append(BalanceChanged(seq, ts, account, result.total, result.reserved, BalanceReason.TRANSFER_IN))

    def _transfer_problem(self, account: str, transfer_id: str, other_shard: int) -> RejectReason | None:
        """Why a transfer's half refuses to move money here, or None."""
        problem = _account_problem(account)
        if problem is not None:
            return problem
        if not valid_transfer_id(transfer_id) or not 0 <= other_shard < MAX_SHARDS or other_shard == self.shard:
            return RejectReason.INVALID_TRANSFER
        if transfer_id in self.transfers:
            return RejectReason.DUPLICATE_TRANSFER
        return None

    # ------------------------------------------------------------------ state

    def snapshot(self) -> bytes:
        """The whole state as versioned, canonical bytes (see :mod:`matchbox.engine.snapshot`)."""
        return snapshot.encode(self)

    @classmethod
    def restore(cls, data: bytes, shard: int = 0) -> Engine:
        """An engine of ``shard`` in exactly the state a snapshot recorded; SnapshotError if it is not one."""
        return snapshot.decode(data, cls(shard))

    def state_hash(self) -> str:
        """SHA-256 of the canonical snapshot: equal hashes mean equal books, order for order."""
        return hashlib.sha256(self.snapshot()).hexdigest()

    # ------------------------------------------------------------------ queries

    def next_expiry(self) -> int | None:
        """The engine time (ns) of the next timer, if any: a GTD order's expiry or a dead-man deadline."""
        timers = self._timers
        while timers and not self._is_live(timers[0]):
            heappop(timers)  # the order went before its time, or the deadline moved: drop the entry
        return timers[0][0] if timers else None

    def depth(self, market_id: str, max_levels: int = 10) -> BookDepth | None:
        """L2 depth: per side, up to ``max_levels`` of (price, total quantity, order count)."""
        book = self.books.get(market_id)
        return None if book is None else queries.depth(book, max_levels)

    def best_bid_ask(self, market_id: str) -> tuple[int | None, int | None]:
        """Best bid and ask ticks; (None, None) for an empty book or an unknown market."""
        book = self.books.get(market_id)
        if book is None:
            return None, None
        return (book.best_bid or None, book.best_ask if book.best_ask <= book.max_tick else None)

    def order_status(self, order_id: int) -> LiveOrder | None:
        """Status of a live order; finished orders live in the event stream, not here."""
        return queries.live_order(self, order_id)

    def check_invariants(self) -> None:
        queries.check_invariants(self)
        self._check_deadlines()

    def _check_deadlines(self) -> None:
        """Every armed switch has its timer, and its account's watch holds all its live orders."""
        timers = set(self._timers)
        for account, deadline in self.deadlines.items():
            if deadline <= 0 or (deadline, 0, account) not in timers:
                raise BookIntegrityError(f"dead-man switch of {account}: no timer for its deadline {deadline}")
        watched = {account: set(watch.ids) for account, watch in self._watched.items()}
        for order_id, order in self.orders.items():
            ids = watched.get(order.account)
            if ids is not None and order_id not in ids:
                raise BookIntegrityError(f"order {order_id} of watched account {order.account} is not in its watch")

    def add_restored(self, orders: dict[int, Order]) -> None:
        """Take the live orders of a snapshot being restored into this new engine (their books
        hold them already) as its index, and arm the expiries of the GTD ones among them."""
        self.orders = orders
        self._timers += [(order.expires_at, order.order_id, "") for order in orders.values() if order.tif is _GTD]
        heapify(self._timers)  # timers are totally ordered: one heapify pops them as pushes would

    def restore_lapsing(self, order_ids: list[int]) -> None:
        """The live orders that lapse, while restoring a snapshot."""
        self.lapsing = _Watch(dict.fromkeys(order_ids))

    def restore_own_stp(self, rules: list[tuple[int, int]]) -> None:
        """The live orders with their own self-trade rule, while restoring a snapshot."""
        self.own_stp = _Watch({order_id: SelfTradePrevention(stp) for order_id, stp in rules})

    def restore_deadlines(self, deadlines: list[tuple[str, int]]) -> None:
        """Re-arm dead-man switches while restoring a snapshot, after its orders (one walk over them)."""
        mine: dict[str, dict[int, None]] = {account: {} for account, _ in deadlines}
        for order_id, order in self.orders.items():
            ids = mine.get(order.account)
            if ids is not None:
                ids[order_id] = None
        for account, ids in mine.items():
            self._watched[account] = _Watch(ids)
        for account, deadline in deadlines:
            self._arm(account, deadline)


def _ignore(command: Command, events: list[Event]) -> None:
    """AdvanceTime does its work (timers) before dispatch."""


# The hot path asks about the same accounts over and over: a memo of the pure check costs about
# 100 ns an order where the regular expression costs 250.
_known_account = lru_cache(maxsize=16_384)(valid_account)


def _account_problem(account: str) -> RejectReason | None:
    """Why a command that needs an account refuses this one: none named, or one that breaks the rule."""
    if _known_account(account):
        return None
    return RejectReason.MALFORMED_ID if account else RejectReason.INVALID_ACCOUNT


def _unknown_market(market_id: str) -> RejectReason:
    """Why a command naming a market that no book has is refused."""
    return RejectReason.MALFORMED_ID if market_id and not valid_market_id(market_id) else RejectReason.UNKNOWN_MARKET


def _by_id(order: Order) -> int:
    return order.order_id


def _reject(
    cmd: Command, reason: RejectReason, market_id: str = "", account: str = "", order_id: int | None = None
) -> Rejected:
    if order_id is None:
        order_id = getattr(cmd, "order_id", 0)
    if reason is RejectReason.MALFORMED_ID:  # the bad id goes no further: the event's readers store what it names
        market_id = market_id if valid_market_id(market_id) else ""
        account = account if valid_account(account) else ""
    return Rejected(
        seq=cmd.seq,
        ts=cmd.ts,
        command=type(cmd).__name__,
        reason=reason,
        market_id=market_id,
        order_id=order_id,
        account=account,
    )


def _first_live(book: Book, taker_side: Side) -> Order:
    """The first resting order an incoming order of ``taker_side`` would meet."""
    if taker_side is _BUY:
        level = book.levels[_SELL][book.best_ask]
    else:
        level = book.levels[_BUY][book.best_bid]
    assert level is not None
    return level.orders[0]  # the head of a non-empty level is live (see Book.take_off)


def _fillable(book: Book, taker_side: Side, limit: int, account: str, wanted: int, stp: SelfTradePrevention) -> int:
    """How much a FOK could take at ``limit`` under self-trade prevention ``stp``, up to ``wanted``."""
    maker_side = _SELL if taker_side is _BUY else _BUY
    total = 0
    for level in book.side_levels(maker_side):
        if (level.price > limit) if taker_side is _BUY else (level.price < limit):
            break
        for order in level.live():
            if order.account == account:
                if stp is not _CANCEL_RESTING:  # the taker stops there
                    return total
                continue
            total += order.remaining
            if total >= wanted:
                return total
    return total
