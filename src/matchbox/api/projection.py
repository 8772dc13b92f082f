"""What an API instance knows: the output stream folded into markets, orders, books and trades.

Every instance tails the whole output stream and folds every event into the same projection, so
all instances answer alike and a fill caused through one is seen through all. Folding an event
returns the updates it caused (a trade, a changed book level, an order's new state), which the
WebSocket hub fans out. No I/O here: the tail feeds it.

Finished orders are kept for lookups up to a limit (oldest dropped first); live orders always.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from matchbox.engine.ids import RETURN_SUFFIX
from matchbox.engine.rules import order_status
from matchbox.engine.types import (
    BalanceChanged,
    CancelReason,
    Event,
    FeeSchedule,
    MarketCreated,
    MarketInfo,
    MarketState,
    MarketStateChanged,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderKind,
    OrderReduced,
    OrderRested,
    OrderStatus,
    PositionChanged,
    Rejected,
    RejectReason,
    SelfTradePrevention,
    Side,
    TickScheme,
    TimeInForce,
    TradeExecuted,
    TransferredIn,
    TransferredOut,
    TransferRefused,
)

RECENT_TRADES = 1000


@dataclass(slots=True)
class MarketView:
    market_id: str
    scheme: TickScheme
    min_tick: int
    max_tick: int
    max_qty: int
    stp: SelfTradePrevention
    state: MarketState = MarketState.OPEN
    outcome: str = ""
    collateral: bool = False
    shard: int = 0  # whose engine matches it
    info: MarketInfo | None = None
    opens_at: int = 0  # engine time (ns); 0: none
    closes_at: int = 0
    fees: FeeSchedule | None = None


@dataclass(frozen=True, slots=True)
class Fill:
    trade_id: int
    price: int
    qty: int
    role: Literal["maker", "taker"]
    ts: int
    fee: int = 0  # what this side paid its market's fee account for it


@dataclass(slots=True)
class OrderView:
    order_id: int
    market_id: str
    account: str
    entry_id: str
    ts: int
    # as the OrderAccepted states them; a rejected order states none, and keeps these defaults
    side: Side = Side.BUY
    price: int = 0
    qty: int = 0
    tif: TimeInForce = TimeInForce.GTC
    kind: OrderKind = OrderKind.LIMIT
    post_only: bool = False
    expires_at: int = 0
    lapse: bool = False
    remaining: int = 0
    filled: int = 0
    resting: bool = False
    cancel_reason: CancelReason | None = None
    reject_reason: RejectReason | None = None
    fills: list[Fill] = field(default_factory=list)

    @property
    def status(self) -> OrderStatus:
        """By the engine's rule; until the events say whether it rests, an order with no fill is ACCEPTED."""
        return order_status(
            rejected=self.reject_reason is not None,
            cancelled=self.cancel_reason is not None,
            filled=self.filled,
            remaining=self.remaining,
            told=self.resting,
        )


@dataclass(frozen=True, slots=True)
class TradeView:
    trade_id: int
    market_id: str
    price: int
    qty: int
    taker_side: Side
    maker_order_id: int
    taker_order_id: int
    ts: int
    n: int


@dataclass(frozen=True, slots=True)
class LevelChange:
    market_id: str
    side: Side
    price: int
    qty: int  # the level's new total; 0 = gone
    orders: int


@dataclass(slots=True)
class BookView:
    bids: dict[int, list[int]] = field(default_factory=dict)  # price -> [qty, orders]
    asks: dict[int, list[int]] = field(default_factory=dict)

    def side(self, side: Side) -> dict[int, list[int]]:
        return self.bids if side is Side.BUY else self.asks

    def levels(self, side: Side, depth: int | None = None) -> list[tuple[int, int, int]]:
        """(price, qty, orders), best first: bids highest first, asks lowest first."""
        levels = self.side(side)
        prices = sorted(levels, reverse=side is Side.BUY)
        if depth is not None:
            prices = prices[:depth]
        return [(price, levels[price][0], levels[price][1]) for price in prices]

    def best(self, side: Side) -> int | None:
        levels = self.side(side)
        if not levels:
            return None
        return max(levels) if side is Side.BUY else min(levels)


@dataclass(slots=True)
class BalanceView:
    """An account's cash on one shard, as that shard's engine last stated it."""

    account: str
    total: int = 0
    reserved: int = 0


@dataclass(slots=True)
class TransferView:
    """A transfer between shards as the events tell it: ``in_flight`` once taken out, ``done`` once
    paid in; ``returning`` if the target refused it, ``returned`` once paid back."""

    transfer_id: str  # the engine's: "<account>:<the client's id>"
    account: str
    amount: int
    from_shard: int
    to_shard: int
    status: Literal["in_flight", "done", "returning", "returned"] = "in_flight"


TRANSFERS_KEPT = 100_000

Update = TradeView | LevelChange | OrderView | MarketView


@dataclass(slots=True)
class Projection:
    keep_finished: int = 100_000
    markets: dict[str, MarketView] = field(default_factory=dict)
    books: dict[str, BookView] = field(default_factory=dict)
    orders: dict[int, OrderView] = field(default_factory=dict)
    trades: dict[str, deque[TradeView]] = field(default_factory=dict)
    balances: dict[str, dict[int, BalanceView]] = field(default_factory=dict)  # account -> shard -> cash there
    positions: dict[str, dict[str, PositionChanged]] = field(default_factory=dict)  # account -> market -> latest
    live: dict[str, dict[int, None]] = field(default_factory=dict)  # account -> its live order ids, oldest first
    transfers: OrderedDict[str, TransferView] = field(default_factory=OrderedDict)  # the newest, by id
    last_n: dict[int, int] = field(default_factory=dict)  # shard -> the n of its last event folded
    _finished: OrderedDict[int, None] = field(default_factory=OrderedDict)
    _shard: int = 0  # the shard of the event being folded

    def apply(self, event: Event, n: int, stream_id: str, entry_id: str, shard: int = 0) -> list[Update]:
        """Fold one event of ``shard``'s stream in; return what it changed."""
        self.last_n[shard] = n
        self._shard = shard
        handler = _HANDLERS.get(type(event))
        return handler(self, event, n, entry_id) if handler else []

    def sequence(self, market: MarketView) -> int:
        """The n of the last event folded from the market's shard: book images and deltas carry it."""
        return self.last_n.get(market.shard, 0)

    # ------------------------------------------------------------------ folds

    def _market_created(self, e: MarketCreated, n: int, entry_id: str) -> list[Update]:
        market = MarketView(
            e.market_id,
            e.scheme,
            e.min_tick,
            e.max_tick,
            e.max_qty,
            e.stp,
            collateral=e.collateral,
            shard=self._shard,
            info=e.info,
            opens_at=e.opens_at,
            closes_at=e.closes_at,
            fees=e.fees,
        )
        self.markets[e.market_id] = market
        self.books[e.market_id] = BookView()
        self.trades[e.market_id] = deque(maxlen=RECENT_TRADES)
        return [market]

    def _market_state(self, e: MarketStateChanged, n: int, entry_id: str) -> list[Update]:
        market = self.markets[e.market_id]
        market.state, market.outcome = e.state, e.outcome
        return [market]

    def _accepted(self, e: OrderAccepted, n: int, entry_id: str) -> list[Update]:
        order = OrderView(e.order_id, e.market_id, e.account, entry_id, e.ts, e.side, e.price, e.qty, e.tif, e.kind)
        order.post_only, order.expires_at, order.lapse, order.remaining = e.post_only, e.expires_at, e.lapse, e.qty
        self.orders[e.order_id] = order
        self.live.setdefault(e.account, {})[e.order_id] = None
        return [order]

    def _rested(self, e: OrderRested, n: int, entry_id: str) -> list[Update]:
        order = self.orders[e.order_id]
        order.resting, order.price, order.remaining = True, e.price, e.remaining
        return [order, self._level(e.market_id, e.side, e.price, e.remaining, 1)]

    def _trade(self, e: TradeExecuted, n: int, entry_id: str) -> list[Update]:
        trade = TradeView(
            e.trade_id,
            e.market_id,
            e.price,
            e.qty,
            e.taker_side,
            e.maker_order_id,
            e.taker_order_id,
            e.ts,
            n,
        )
        self.trades[e.market_id].append(trade)
        updates: list[Update] = [trade]
        maker_side = Side.SELL if e.taker_side is Side.BUY else Side.BUY
        updates.append(self._level(e.market_id, maker_side, e.price, -e.qty, 0 if e.maker_remaining else -1))
        for order_id, remaining, role, fee in (
            (e.maker_order_id, e.maker_remaining, "maker", e.maker_fee),
            (e.taker_order_id, e.taker_remaining, "taker", e.taker_fee),
        ):
            order = self.orders.get(order_id)
            if order is None:  # finished long ago and dropped: cannot happen for a live maker
                continue
            order.filled += e.qty
            order.remaining = remaining
            order.fills.append(Fill(e.trade_id, e.price, e.qty, role, e.ts, fee))  # type: ignore[arg-type]
            if remaining == 0:
                order.resting = False
                self._finish(order_id)
            updates.append(order)
        return updates

    def _cancelled(self, e: OrderCancelled, n: int, entry_id: str) -> list[Update]:
        order = self.orders.get(e.order_id)
        if order is None:
            return []
        updates: list[Update] = [order]
        if order.resting:
            updates.append(self._level(order.market_id, order.side, order.price, -e.cancelled_qty, -1))
        order.resting, order.remaining, order.cancel_reason = False, 0, e.reason
        self._finish(e.order_id)
        return updates

    def _reduced(self, e: OrderReduced, n: int, entry_id: str) -> list[Update]:
        order = self.orders[e.order_id]
        order.remaining = e.remaining
        if e.qty:  # what it may trade in all now, as an amend says it (FIX's OrderQty)
            order.qty = e.qty
        return [order, self._level(order.market_id, order.side, order.price, -e.reduced_by, 0)]

    def _amended(self, e: OrderAmended, n: int, entry_id: str) -> list[Update]:
        """The order left the book; it arrives again: its trades, then OrderRested (or a cancel), follow."""
        order = self.orders[e.order_id]
        updates: list[Update] = [order]
        if order.resting:
            updates.append(self._level(order.market_id, order.side, order.price, -e.old_remaining, -1))
        order.resting, order.price, order.qty, order.remaining = False, e.price, e.qty, e.remaining
        return updates

    def _rejected(self, e: Rejected, n: int, entry_id: str) -> list[Update]:
        if e.command != "PlaceOrder" or not e.order_id:
            return []
        order = OrderView(e.order_id, e.market_id, e.account, entry_id, e.ts, reject_reason=e.reason)
        self.orders[e.order_id] = order
        self._finish(e.order_id)
        return [order]

    def _balance(self, e: BalanceChanged, n: int, entry_id: str) -> list[Update]:
        parts = self.balances.setdefault(e.account, {})
        balance = parts.get(self._shard)
        if balance is None:
            balance = parts[self._shard] = BalanceView(e.account)
        balance.total, balance.reserved = e.total, e.reserved
        return []

    def _position(self, e: PositionChanged, n: int, entry_id: str) -> list[Update]:
        held = self.positions.setdefault(e.account, {})
        if e.yes or e.no or e.committed or e.stake or e.liability:
            held[e.market_id] = e
        else:
            held.pop(e.market_id, None)
        return []

    def _transferred_out(self, e: TransferredOut, n: int, entry_id: str) -> list[Update]:
        self.transfers[e.transfer_id] = TransferView(e.transfer_id, e.account, e.amount, self._shard, e.to_shard)
        if len(self.transfers) > TRANSFERS_KEPT:
            self.transfers.popitem(last=False)
        return []

    def _transferred_in(self, e: TransferredIn, n: int, entry_id: str) -> list[Update]:
        returned = e.transfer_id.endswith(RETURN_SUFFIX)
        transfer = self.transfers.get(e.transfer_id.removesuffix(RETURN_SUFFIX) if returned else e.transfer_id)
        if transfer is not None:
            transfer.status = "returned" if returned else "done"
        return []

    def _transfer_refused(self, e: TransferRefused, n: int, entry_id: str) -> list[Update]:
        transfer = self.transfers.get(e.transfer_id)
        if transfer is not None and e.reason is not RejectReason.DUPLICATE_TRANSFER:
            transfer.status = "returning"
        return []

    # ------------------------------------------------------------------ helpers

    def _level(self, market_id: str, side: Side, price: int, qty: int, orders: int) -> LevelChange:
        levels = self.books[market_id].side(side)
        level = levels.setdefault(price, [0, 0])
        level[0] += qty
        level[1] += orders
        if level[1] <= 0 or level[0] <= 0:
            del levels[price]
            return LevelChange(market_id, side, price, 0, 0)
        return LevelChange(market_id, side, price, level[0], level[1])

    def _finish(self, order_id: int) -> None:
        order = self.orders.get(order_id)
        if order is not None:
            live = self.live.get(order.account)
            if live is not None:
                live.pop(order_id, None)
                if not live:
                    del self.live[order.account]
        finished = self._finished
        finished[order_id] = None
        while len(finished) > self.keep_finished:
            old, _ = finished.popitem(last=False)
            self.orders.pop(old, None)


_HANDLERS: dict[type[Event], Callable[[Projection, Any, int, str], list[Update]]] = {
    MarketCreated: Projection._market_created,
    MarketStateChanged: Projection._market_state,
    OrderAccepted: Projection._accepted,
    OrderRested: Projection._rested,
    TradeExecuted: Projection._trade,
    OrderCancelled: Projection._cancelled,
    OrderReduced: Projection._reduced,
    OrderAmended: Projection._amended,
    Rejected: Projection._rejected,
    BalanceChanged: Projection._balance,
    PositionChanged: Projection._position,
    TransferredOut: Projection._transferred_out,
    TransferredIn: Projection._transferred_in,
    TransferRefused: Projection._transfer_refused,
}
