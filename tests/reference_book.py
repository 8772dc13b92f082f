"""A deliberately naive reference matcher, written from the rules, to check the engine against.

Nothing here is clever or fast. Each market keeps a plain list of its resting orders; to match,
the opposite side is filtered and sorted by (price, arrival) from scratch. Expiry scans every
resting order before each command. Rejections are a flat list of ``if`` checks, in the order the
engine applies them. It shares only the command and event vocabulary (and the depth/status
structs) with the engine, none of its logic.

Rules followed (see the module docstring of :mod:`matchbox.engine.engine`):

- before any command, every resting GTD order with ``expires_at <= ts`` is cancelled (EXPIRED),
  by (expires_at, order id);
- price-time priority, trades at the maker's price, trade ids count up from 1 across markets;
- GTC/GTD remainders rest, IOC remainders are cancelled (UNFILLED), FOK fills whole or is
  rejected, post-only is rejected if it would trade, a market order is an IOC/FOK at the worst tick;
- self-trade prevention, the order's own choice else its market's: CANCEL_TAKER stops the taker
  (or rejects it if its first maker is its own), CANCEL_RESTING cancels the account's resting
  order and goes on, CANCEL_BOTH cancels that resting order and stops the taker;
- reduce keeps queue position, reducing by the whole remainder cancels; cancel-all by order id;
- cancel by ids: up to 100, each as a single cancel would, in the order given;
- amend: the same price and less quantity is a reduce; a new price or more quantity takes the
  order off and it arrives again (checked, matched and rested as a new order of its kind);
- market lifecycle OPEN <-> SUSPENDED -> CLOSED -> SETTLED; closing/settling cancels the book,
  suspending cancels the orders that lapse (by id).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from matchbox.engine.queries import BookDepth, LiveOrder, PriceLevel
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
    MarketCreated,
    MarketState,
    MarketStateChanged,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderKind,
    OrderReduced,
    OrderRested,
    OrderStatus,
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
)

BINARY_TICKS = 99  # cents 1..99
ODDS_TICKS = 350  # decimal odds 1.01..1000: 100 + 50 + 20 + 20 + 20 + 20 + 10 + 10 + 10 + 90 ticks
TICKS_LIMIT = 100_000  # the largest ``max_tick`` of a TICKS market


@dataclass
class RefOrder:
    order_id: int
    market_id: str
    account: str
    side: Side
    price: int
    qty: int
    remaining: int
    filled: int
    tif: TimeInForce
    expires_at: int
    arrival: int  # when it started resting: its time priority
    lapse: bool = False  # cancelled when its market is suspended
    stp: SelfTradePrevention | None = None  # its own self-trade rule, when it was given one


@dataclass
class RefMarket:
    market_id: str
    scheme: TickScheme
    min_tick: int
    max_tick: int
    max_qty: int
    stp: SelfTradePrevention
    state: MarketState = MarketState.OPEN
    resting: list[RefOrder] = field(default_factory=list)
    opens_at: int = 0  # while it has not come: suspended, then opened (if still suspended)
    closes_at: int = 0  # when it comes: closed (if open or suspended)


class ReferenceBook:
    """``apply(command) -> list[Event]``, like the engine, the slow and obvious way."""

    def __init__(self) -> None:
        self.markets: dict[str, RefMarket] = {}
        self.highest_accepted_id = 0
        self.trades_so_far = 0
        self.arrivals = 0

    # ------------------------------------------------------------------ entry point

    def apply(self, cmd: Command) -> list[Event]:
        events = self._expire(cmd)
        if isinstance(cmd, CreateMarket):
            events += self._create_market(cmd)
        elif isinstance(cmd, PlaceOrder):
            events += self._place(cmd)
        elif isinstance(cmd, CancelOrder):
            events += self._cancel(cmd)
        elif isinstance(cmd, CancelOrders):
            events += self._cancel_orders(cmd)
        elif isinstance(cmd, AmendOrder):
            events += self._amend(cmd)
        elif isinstance(cmd, ReduceOrder):
            events += self._reduce(cmd)
        elif isinstance(cmd, CancelAll):
            events += self._cancel_all(cmd)
        elif isinstance(cmd, SuspendMarket):
            events += self._transition(cmd, cmd.market_id, [MarketState.OPEN], MarketState.SUSPENDED)
        elif isinstance(cmd, ResumeMarket):
            events += self._transition(cmd, cmd.market_id, [MarketState.SUSPENDED], MarketState.OPEN)
        elif isinstance(cmd, CloseMarket):
            allowed = [MarketState.OPEN, MarketState.SUSPENDED]
            events += self._transition(cmd, cmd.market_id, allowed, MarketState.CLOSED)
        elif isinstance(cmd, SettleMarket):
            allowed = [MarketState.OPEN, MarketState.SUSPENDED, MarketState.CLOSED]
            events += self._transition(cmd, cmd.market_id, allowed, MarketState.SETTLED, cmd.outcome)
        elif isinstance(cmd, AdvanceTime):
            pass
        else:
            raise TypeError(f"unknown command {cmd!r}")
        return events

    # ------------------------------------------------------------------ queries

    def all_resting(self) -> list[RefOrder]:
        return [order for market in self.markets.values() for order in market.resting]

    def find(self, order_id: int) -> RefOrder | None:
        for order in self.all_resting():
            if order.order_id == order_id:
                return order
        return None

    def order_statuses(self) -> dict[int, LiveOrder]:
        """The status of every live order, by id (stated here on its own, not by the engine's rules)."""
        statuses = {}
        for order in self.all_resting():
            status = OrderStatus.PARTIALLY_FILLED if order.filled > 0 else OrderStatus.OPEN
            o = order
            statuses[o.order_id] = LiveOrder(
                o.order_id, o.account, o.side, o.price, o.qty, o.remaining, o.filled, o.market_id, status
            )
        return statuses

    def depth(self, market_id: str, max_levels: int = 10) -> BookDepth | None:
        market = self.markets.get(market_id)
        if market is None:
            return None
        bids = self._levels([o for o in market.resting if o.side == Side.BUY], highest_first=True)
        asks = self._levels([o for o in market.resting if o.side == Side.SELL], highest_first=False)
        return BookDepth(market_id, bids[:max_levels], asks[:max_levels])

    def best_bid_ask(self, market_id: str) -> tuple[int | None, int | None]:
        resting = self.markets[market_id].resting
        bids = [o.price for o in resting if o.side == Side.BUY]
        asks = [o.price for o in resting if o.side == Side.SELL]
        return (max(bids) if bids else None, min(asks) if asks else None)

    @staticmethod
    def _levels(orders: list[RefOrder], highest_first: bool) -> list[PriceLevel]:
        prices = sorted({o.price for o in orders}, reverse=highest_first)
        levels = []
        for price in prices:
            at_price = [o for o in orders if o.price == price]
            levels.append(PriceLevel(price, sum(o.remaining for o in at_price), len(at_price)))
        return levels

    # ------------------------------------------------------------------ time

    def _expire(self, cmd: Command) -> list[Event]:
        """Every timer due by the command's time, earliest first, one at a time: GTD expiries and
        markets' open and close times (at one instant, the markets' first, opening before closing)."""
        events: list[Event] = []
        while True:
            due: list[tuple[int, int, str]] = [
                (o.expires_at, o.order_id, "")
                for o in self.all_resting()
                if o.tif == TimeInForce.GTD and o.expires_at <= cmd.ts
            ]
            for m in self.markets.values():
                if m.opens_at and m.opens_at <= cmd.ts:
                    due.append((m.opens_at, -2, m.market_id))
                if m.closes_at and m.closes_at <= cmd.ts:
                    due.append((m.closes_at, -1, m.market_id))
            if not due:
                return events
            _, kind, market_id = min(due)
            if kind == -2:
                self.markets[market_id].opens_at = 0
                if self.markets[market_id].state == MarketState.SUSPENDED:
                    events += self._transition(cmd, market_id, [MarketState.SUSPENDED], MarketState.OPEN)
            elif kind == -1:
                self.markets[market_id].closes_at = 0
                if self.markets[market_id].state in (MarketState.OPEN, MarketState.SUSPENDED):
                    allowed = [MarketState.OPEN, MarketState.SUSPENDED]
                    events += self._transition(cmd, market_id, allowed, MarketState.CLOSED)
            else:
                order = next(o for o in self.all_resting() if o.order_id == kind)
                events.append(self._take_off(order, CancelReason.EXPIRED, cmd))

    # ------------------------------------------------------------------ orders

    def _place(self, cmd: PlaceOrder) -> list[Event]:
        reason = self._check_fields(cmd)
        if reason is not None:
            return [self._rejected(cmd, reason, cmd.market_id, cmd.order_id, cmd.account)]
        market = self.markets[cmd.market_id]

        limit = cmd.price
        if cmd.kind == OrderKind.MARKET:
            limit = market.max_tick if cmd.side == Side.BUY else market.min_tick
        makers = self._makers_in_priority(market, cmd.side, limit)
        stp = market.stp if cmd.stp is None else cmd.stp

        if makers:  # the order crosses the book
            if cmd.post_only:
                reason = RejectReason.POST_ONLY_WOULD_TAKE
            elif makers[0].account == cmd.account and stp == SelfTradePrevention.CANCEL_TAKER:
                reason = RejectReason.SELF_TRADE
            elif cmd.tif == TimeInForce.FOK and self._could_take(stp, makers, cmd.account) < cmd.qty:
                reason = RejectReason.FOK_CANNOT_FILL
        elif cmd.tif == TimeInForce.FOK:
            reason = RejectReason.FOK_CANNOT_FILL
        if reason is not None:
            return [self._rejected(cmd, reason, cmd.market_id, cmd.order_id, cmd.account)]

        self.highest_accepted_id = cmd.order_id
        events: list[Event] = [
            OrderAccepted(
                seq=cmd.seq,
                ts=cmd.ts,
                market_id=cmd.market_id,
                order_id=cmd.order_id,
                account=cmd.account,
                side=cmd.side,
                price=limit,
                qty=cmd.qty,
                tif=cmd.tif,
                kind=cmd.kind,
                post_only=cmd.post_only,
                expires_at=cmd.expires_at,
                lapse=cmd.lapse,
            )
        ]

        return events + self._fill_and_rest(cmd, market, makers, limit, stp)

    def _fill_and_rest(
        self,
        cmd: PlaceOrder,
        market: RefMarket,
        makers: list[RefOrder],
        limit: int,
        stp: SelfTradePrevention,
        spent: int = 0,
        filled: int = 0,
    ) -> list[Event]:
        """An accepted order (or an amended one: ``spent`` of its quantity filled or cancelled
        before, ``filled`` of it filled) meets the makers, then rests or is cancelled."""
        events: list[Event] = []
        remaining = cmd.qty
        stopped_by_self_trade = False
        for maker in makers:
            if remaining == 0:
                break
            if maker.account == cmd.account:
                if stp != SelfTradePrevention.CANCEL_TAKER:
                    events.append(self._take_off(maker, CancelReason.SELF_TRADE, cmd))
                if stp != SelfTradePrevention.CANCEL_RESTING:
                    stopped_by_self_trade = True
                    break
                continue
            qty = min(remaining, maker.remaining)
            remaining -= qty
            maker.remaining -= qty
            maker.filled += qty
            if maker.remaining == 0:
                market.resting.remove(maker)
            self.trades_so_far += 1
            events.append(
                TradeExecuted(
                    seq=cmd.seq,
                    ts=cmd.ts,
                    market_id=cmd.market_id,
                    trade_id=self.trades_so_far,
                    price=maker.price,
                    qty=qty,
                    taker_side=cmd.side,
                    maker_order_id=maker.order_id,
                    taker_order_id=cmd.order_id,
                    maker_account=maker.account,
                    taker_account=cmd.account,
                    maker_remaining=maker.remaining,
                    taker_remaining=remaining,
                )
            )

        if remaining == 0:
            return events
        if stopped_by_self_trade or cmd.tif in (TimeInForce.IOC, TimeInForce.FOK):
            why = CancelReason.SELF_TRADE if stopped_by_self_trade else CancelReason.UNFILLED
            events.append(self._cancelled(cmd, cmd.market_id, cmd.order_id, cmd.account, remaining, why))
            return events
        self.arrivals += 1
        market.resting.append(
            RefOrder(
                order_id=cmd.order_id,
                market_id=cmd.market_id,
                account=cmd.account,
                side=cmd.side,
                price=limit,
                qty=spent + cmd.qty,
                remaining=remaining,
                filled=filled + cmd.qty - remaining,
                tif=cmd.tif,
                expires_at=cmd.expires_at,
                arrival=self.arrivals,
                lapse=cmd.lapse,
                stp=cmd.stp,
            )
        )
        events.append(
            OrderRested(
                seq=cmd.seq,
                ts=cmd.ts,
                market_id=cmd.market_id,
                order_id=cmd.order_id,
                account=cmd.account,
                side=cmd.side,
                price=limit,
                remaining=remaining,
            )
        )
        return events

    def _check_fields(self, cmd: PlaceOrder) -> RejectReason | None:
        """Refusals that do not depend on the book, in the engine's order."""
        market = self.markets.get(cmd.market_id)
        if market is None:
            return RejectReason.UNKNOWN_MARKET
        if market.state != MarketState.OPEN:
            return RejectReason.MARKET_NOT_OPEN
        if cmd.order_id <= self.highest_accepted_id:
            return RejectReason.DUPLICATE_ORDER_ID
        if cmd.qty <= 0:
            return RejectReason.INVALID_QUANTITY
        if cmd.qty > market.max_qty:
            return RejectReason.QUANTITY_OVER_MAX
        resting_tif = cmd.tif in (TimeInForce.GTC, TimeInForce.GTD)
        if cmd.kind == OrderKind.MARKET and (resting_tif or cmd.post_only):
            return RejectReason.INVALID_ORDER_TYPE
        if cmd.kind == OrderKind.LIMIT and not market.min_tick <= cmd.price <= market.max_tick:
            return RejectReason.INVALID_PRICE
        if cmd.post_only and not resting_tif:
            return RejectReason.INVALID_ORDER_TYPE
        if cmd.tif == TimeInForce.GTD and (cmd.expires_at == 0 or cmd.expires_at <= cmd.ts):
            return RejectReason.INVALID_EXPIRY
        if cmd.tif != TimeInForce.GTD and cmd.expires_at != 0:
            return RejectReason.INVALID_EXPIRY
        return None

    @staticmethod
    def _makers_in_priority(market: RefMarket, side: Side, limit: int) -> list[RefOrder]:
        """Resting orders an incoming order at ``limit`` may meet, in the order it meets them."""
        if side == Side.BUY:
            asks = [o for o in market.resting if o.side == Side.SELL and o.price <= limit]
            return sorted(asks, key=lambda o: (o.price, o.arrival))
        bids = [o for o in market.resting if o.side == Side.BUY and o.price >= limit]
        return sorted(bids, key=lambda o: (-o.price, o.arrival))

    @staticmethod
    def _could_take(stp: SelfTradePrevention, makers: list[RefOrder], account: str) -> int:
        total = 0
        for maker in makers:
            if maker.account == account:
                if stp != SelfTradePrevention.CANCEL_RESTING:
                    break  # the taker would stop here
                continue  # it would be cancelled, not traded with
            total += maker.remaining
        return total

    def _find_live(self, order_id: int, account: str) -> RefOrder | RejectReason:
        order = self.find(order_id)
        if order is None:
            if order_id > self.highest_accepted_id:
                return RejectReason.UNKNOWN_ORDER
            return RejectReason.ORDER_NOT_OPEN
        if account not in ("", order.account):  # a named account must own the order
            return RejectReason.UNKNOWN_ORDER
        return order

    def _cancel(self, cmd: CancelOrder) -> list[Event]:
        found = self._find_live(cmd.order_id, cmd.account)
        if isinstance(found, RejectReason):
            return [self._rejected(cmd, found, "", cmd.order_id, cmd.account)]
        return [self._take_off(found, CancelReason.USER, cmd)]

    def _cancel_orders(self, cmd: CancelOrders) -> list[Event]:
        if not 1 <= len(cmd.order_ids) <= 100:
            return [self._rejected(cmd, RejectReason.INVALID_ORDER_IDS, "", 0, cmd.account)]
        events: list[Event] = []
        for order_id in cmd.order_ids:
            found = self._find_live(order_id, cmd.account)
            if isinstance(found, RejectReason):
                events.append(self._rejected(cmd, found, "", order_id, cmd.account))
            else:
                events.append(self._take_off(found, CancelReason.USER, cmd))
        return events

    def _amend(self, cmd: AmendOrder) -> list[Event]:
        found = self._find_live(cmd.order_id, cmd.account)
        if isinstance(found, RejectReason):
            return [self._rejected(cmd, found, "", cmd.order_id, cmd.account)]
        market = self.markets[found.market_id]
        price = cmd.price if cmd.price else found.price
        remaining = cmd.qty - found.filled if cmd.qty else found.remaining  # qty: filled + remaining
        reason = None
        if cmd.price and not market.min_tick <= price <= market.max_tick:
            reason = RejectReason.INVALID_PRICE
        elif cmd.qty < 0:
            reason = RejectReason.INVALID_QUANTITY
        elif cmd.qty > market.max_qty:
            reason = RejectReason.QUANTITY_OVER_MAX
        elif remaining <= 0:
            return [self._take_off(found, CancelReason.USER, cmd)]
        elif price == found.price and remaining == found.remaining:
            return []
        elif price == found.price and remaining < found.remaining:
            return self._reduce(
                ReduceOrder(seq=cmd.seq, ts=cmd.ts, order_id=found.order_id, reduce_by=found.remaining - remaining)
            )
        elif market.state != MarketState.OPEN:
            reason = RejectReason.MARKET_NOT_OPEN
        makers = self._makers_in_priority(market, found.side, price)
        own = found.stp if cmd.stp is None else cmd.stp  # the amend's rule, else the order's own
        stp = market.stp if own is None else own
        if reason is None and makers:
            if cmd.post_only:
                reason = RejectReason.POST_ONLY_WOULD_TAKE
            elif makers[0].account == found.account and stp == SelfTradePrevention.CANCEL_TAKER:
                reason = RejectReason.SELF_TRADE
        if reason is not None:
            return [self._rejected(cmd, reason, found.market_id, found.order_id, found.account)]
        market.resting.remove(found)
        spent = found.filled  # its new quantity: filled + remaining (what was reduced away is gone)
        arrival = PlaceOrder(
            seq=cmd.seq,
            ts=cmd.ts,
            market_id=found.market_id,
            order_id=found.order_id,
            account=found.account,
            side=found.side,
            price=price,
            qty=remaining,
            tif=found.tif,
            expires_at=found.expires_at,
            lapse=found.lapse,
            stp=own,
        )
        amended = OrderAmended(
            seq=cmd.seq,
            ts=cmd.ts,
            market_id=found.market_id,
            order_id=found.order_id,
            account=found.account,
            side=found.side,
            price=price,
            remaining=remaining,
            qty=spent + remaining,
            old_price=found.price,
            old_remaining=found.remaining,
        )
        return [amended, *self._fill_and_rest(arrival, market, makers, price, stp, spent, found.filled)]

    def _reduce(self, cmd: ReduceOrder) -> list[Event]:
        found = self._find_live(cmd.order_id, cmd.account)
        if isinstance(found, RejectReason):
            return [self._rejected(cmd, found, "", cmd.order_id, cmd.account)]
        if cmd.reduce_by <= 0:
            return [self._rejected(cmd, RejectReason.INVALID_QUANTITY, "", cmd.order_id, cmd.account)]
        if cmd.reduce_by >= found.remaining:
            return [self._take_off(found, CancelReason.USER, cmd)]
        found.remaining -= cmd.reduce_by
        return [
            OrderReduced(
                seq=cmd.seq,
                ts=cmd.ts,
                market_id=found.market_id,
                order_id=found.order_id,
                account=found.account,
                reduced_by=cmd.reduce_by,
                remaining=found.remaining,
                price=found.price,
                qty=found.filled + found.remaining,
            )
        ]

    def _cancel_all(self, cmd: CancelAll) -> list[Event]:
        market = self.markets.get(cmd.market_id)
        if market is None:
            return [self._rejected(cmd, RejectReason.UNKNOWN_MARKET, cmd.market_id, 0, cmd.account)]
        mine = sorted((o for o in market.resting if o.account == cmd.account), key=lambda o: o.order_id)
        return [self._take_off(order, CancelReason.CANCEL_ALL, cmd) for order in mine]

    # ------------------------------------------------------------------ markets

    def _create_market(self, cmd: CreateMarket) -> list[Event]:
        if cmd.market_id in self.markets:
            return [self._rejected(cmd, RejectReason.MARKET_EXISTS, cmd.market_id)]
        if cmd.scheme == TickScheme.BINARY:
            max_tick = BINARY_TICKS
        elif cmd.scheme == TickScheme.ODDS:
            max_tick = ODDS_TICKS
        else:
            max_tick = cmd.max_tick
        opens_at = cmd.opens_at if cmd.opens_at > cmd.ts else 0
        names = {TickScheme.BINARY: (0, 2), TickScheme.ODDS: (0, 1), TickScheme.TICKS: (0,)}[cmd.scheme]
        if (
            not 1 <= max_tick <= TICKS_LIMIT
            or cmd.market_id == ""
            or cmd.max_qty <= 0
            or (cmd.info is not None and len(cmd.info.outcomes) not in names)
            or cmd.opens_at < 0
            or (cmd.closes_at != 0 and cmd.closes_at <= max(cmd.ts, opens_at))
        ):
            return [self._rejected(cmd, RejectReason.INVALID_MARKET_SPEC, cmd.market_id)]
        market = RefMarket(cmd.market_id, cmd.scheme, 1, max_tick, cmd.max_qty, cmd.stp)
        market.opens_at, market.closes_at = opens_at, cmd.closes_at
        self.markets[cmd.market_id] = market
        created: list[Event] = [
            MarketCreated(
                seq=cmd.seq,
                ts=cmd.ts,
                market_id=cmd.market_id,
                scheme=cmd.scheme,
                min_tick=1,
                max_tick=max_tick,
                max_qty=cmd.max_qty,
                stp=cmd.stp,
                info=cmd.info,
                opens_at=opens_at,
                closes_at=cmd.closes_at,
            )
        ]
        if opens_at:
            market.state = MarketState.SUSPENDED
            created.append(
                MarketStateChanged(
                    seq=cmd.seq, ts=cmd.ts, market_id=cmd.market_id, state=MarketState.SUSPENDED, outcome=""
                )
            )
        return created

    def _transition(
        self, cmd: Command, market_id: str, allowed: list[MarketState], target: MarketState, outcome: str = ""
    ) -> list[Event]:
        market = self.markets.get(market_id)
        if market is None:
            return [self._rejected(cmd, RejectReason.UNKNOWN_MARKET, market_id)]
        if market.state not in allowed:
            return [self._rejected(cmd, RejectReason.ILLEGAL_TRANSITION, market_id)]
        market.state = target
        if target != MarketState.SUSPENDED:
            market.opens_at = 0
        events: list[Event] = [
            MarketStateChanged(seq=cmd.seq, ts=cmd.ts, market_id=market_id, state=target, outcome=outcome)
        ]
        if target in (MarketState.CLOSED, MarketState.SETTLED):
            for order in sorted(market.resting, key=lambda o: o.order_id):
                events.append(self._take_off(order, CancelReason.MARKET_CLOSED, cmd))
        if target == MarketState.SUSPENDED:
            for order in sorted((o for o in market.resting if o.lapse), key=lambda o: o.order_id):
                events.append(self._take_off(order, CancelReason.LAPSED, cmd))
        return events

    # ------------------------------------------------------------------ helpers

    def _take_off(self, order: RefOrder, reason: CancelReason, cmd: Command) -> OrderCancelled:
        self.markets[order.market_id].resting.remove(order)
        return self._cancelled(cmd, order.market_id, order.order_id, order.account, order.remaining, reason)

    @staticmethod
    def _cancelled(
        cmd: Command, market_id: str, order_id: int, account: str, qty: int, reason: CancelReason
    ) -> OrderCancelled:
        return OrderCancelled(
            seq=cmd.seq,
            ts=cmd.ts,
            market_id=market_id,
            order_id=order_id,
            account=account,
            cancelled_qty=qty,
            reason=reason,
        )

    @staticmethod
    def _rejected(
        cmd: Command, reason: RejectReason, market_id: str = "", order_id: int = 0, account: str = ""
    ) -> Rejected:
        return Rejected(
            seq=cmd.seq,
            ts=cmd.ts,
            command=type(cmd).__name__,
            reason=reason,
            market_id=market_id,
            order_id=order_id,
            account=account,
        )
