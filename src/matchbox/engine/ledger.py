"""Balances, reserves, positions and settlement for collateral markets: deterministic, in minor units.

The ledger follows the matcher: the engine matches as it always does, and for a market created
with ``collateral=True`` the ledger reads the events of each command (``follow``) and adds a
``BalanceChanged`` / ``PositionChanged`` after each event that moved money. Markets without
collateral never reach this module, so their hot path is the matcher's alone.

Rules
=====
Money
    Integer minor units (cents). ``Deposit`` adds to an account; ``Withdraw`` takes from its free
    balance (``total - reserved``) and is refused beyond it (INSUFFICIENT_FUNDS). Amounts must be
    positive (INVALID_AMOUNT); the account is the engine's to check (see its "Ids" rule).
Reserves
    A new order reserves, before it meets the book, what it could cost at its limit price (a
    market order's limit is the worst tick): refused (INSUFFICIENT_FUNDS) if that is above the
    free balance, after the order's own fields are checked and before post-only, self-trade and
    FOK checks. Binary: a buy reserves ``p`` per contract; a sell first reserves the account's free
    YES contracts (held minus those committed to its other resting sells), one per contract, and
    ``100 - p`` cash for each contract beyond them. Odds (``qty`` is the stake in minor units): a
    back (SELL) reserves its stake; a lay (BUY) its liability at its limit odds,
    ``ceil(stake * (odds - 1))``. An order's reserve is always that function of its remaining
    quantity, so a cancel, reduce, expiry or unfilled remainder releases exactly the difference;
    a cancel or reduce of a partly covered sell releases cash before contracts. An amend that
    moves the order (a new price or more quantity) releases all of its reserve and reserves
    again, as for a new order of its new price and remaining quantity; it was refused
    (INSUFFICIENT_FUNDS) unless that fits the free balance with the old reserve counted free.
Trades (at the maker's price ``t``)
    Binary: the buyer pays ``t`` per contract and gets YES contracts; the seller delivers its
    committed YES contracts first (receiving ``t`` each) and for the rest pays ``100 - t`` and
    gets NO contracts. Whatever reserve the fill used beyond that (a better price than the
    limit) is released. Netting: an account never holds uncommitted YES and NO together: each
    pair is redeemed on the spot for 100 (a YES and a NO are worth 100 together whatever the
    outcome), which is how buying YES while short closes the short and frees its collateral.
    Odds: the backer pays stake ``s``, the layer the liability ``L = floor(s * (t_odds - 1))``
    (winnings are rounded down to the minor unit; the lay's reserve rounds up, so it always
    covers its fills); both go into the market's pot, which pays ``s + L`` to the backer if the
    selection wins and to the layer if it loses. Odds positions are not netted: a backer who
    also lays keeps both exposures until settlement (a known limit: Betfair-style net exposure
    would free the hedged part sooner).
Settlement (``SettleMarket`` on a collateral market; resting orders are cancelled first)
    Binary ``yes`` pays 100 per YES contract, ``no`` 100 per NO contract. Odds ``win`` pays each
    account its ``yes`` (its backs' stake + liability), ``lose`` its ``no``. ``void``: odds
    return every stake to its backer and every liability to its layer; binary pays 50 per
    contract, YES or NO (the pair's 100 split evenly: once contracts have changed hands a full
    reversal could take back profit already withdrawn, so binary void settles at the neutral
    price, as prediction markets resolve an ambiguous question 50-50). Positions are cleared.
Fees (a market's ``FeeSchedule``; a market without one charges nothing)
    Binary: on each fill, the maker pays its rates and the taker its: ``bps`` of its side's
    notional (a buyer's is ``t`` per contract, a seller's ``100 - t``: selling YES is buying NO),
    rounded up to the minor unit, plus a fixed amount per contract; it goes to the schedule's fee
    account (``BalanceChanged`` with reason FEE for both) and is shown on the fill
    (``TradeExecuted.maker_fee``/``taker_fee``). An order reserves, for each contract, the most a
    fill of it could cost in fees (at its limit price and the higher of the two rates), so a fee
    is always covered: ``ceil(rate * n * q) <= q * ceil(rate * n)`` (a sell covered by YES
    contracts too reserves its fees in cash). Fill fees stand whatever the outcome, a void's too:
    they paid for the matching. Odds: at settlement (a void wins nothing), each account with net
    winnings in the market (its payout less the stakes and liabilities it put in) pays the
    commission rate of them, rounded up, to the fee account.
Invariant
    Sum over accounts of total cash, plus every collateral market's pot (money locked in open
    positions), equals deposits minus withdrawals; no total or reserve is ever negative, and
    no reserve is above its total. After settlement a market holds nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from matchbox.engine.ids import valid_account
from matchbox.engine.schemes import ODDS_LADDER
from matchbox.engine.types import (
    MAX_BPS,
    BalanceChanged,
    BalanceReason,
    Event,
    FeeSchedule,
    MarketState,
    MarketStateChanged,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderReduced,
    PositionChanged,
    RejectReason,
    Side,
    TickScheme,
    TradeExecuted,
)

if TYPE_CHECKING:
    from matchbox.engine.book import Book

CONTRACT = 100  # a binary contract pays 100 minor units
INT64_MAX = 2**63 - 1
BINARY_OUTCOMES = ("yes", "no", "void")
ODDS_OUTCOMES = ("win", "lose", "void")

_BUY = Side.BUY
_SELL = Side.SELL
_BINARY = TickScheme.BINARY


class Account(msgspec.Struct):
    total: int = 0  # cash owned
    reserved: int = 0  # of it, set aside for resting orders


class Position(msgspec.Struct):
    """See ``PositionChanged`` for what the fields mean per scheme."""

    yes: int = 0
    no: int = 0
    committed: int = 0
    stake: int = 0
    liability: int = 0


class Reserve(msgspec.Struct):
    """What one live order of a collateral market holds: its remainder and covering contracts."""

    market_id: str
    account: str
    binary: bool
    side: Side
    price: int  # the limit tick the reserve is priced at
    remaining: int
    covered: int = 0  # binary sells: remaining contracts backed by committed YES contracts
    fee: int = 0  # the most a fill may cost in fees per contract (the market's schedule, at this price)


def cash_reserve(order: Reserve) -> int:
    """The cash an order holds back: a function of its remaining quantity only."""
    remaining = order.remaining
    if order.binary:
        if order.side is _BUY:
            return (order.price + order.fee) * remaining
        return (CONTRACT - order.price) * (remaining - order.covered) + order.fee * remaining
    if order.side is _SELL:
        return remaining
    return -(-remaining * (ODDS_LADDER[order.price - 1] - 100) // 100)


class Ledger:
    """Accounts, positions and order reserves of every collateral market."""

    def __init__(self) -> None:
        self.markets: dict[str, TickScheme] = {}  # collateral markets only
        self.accounts: dict[str, Account] = {}
        self.positions: dict[tuple[str, str], Position] = {}  # (market_id, account)
        self.orders: dict[int, Reserve] = {}
        self.net_deposits = 0  # deposits and transfers in, minus withdrawals and transfers out
        self.fees: dict[str, FeeSchedule] = {}  # the collateral markets that charge fees

    def set_fees(self, market_id: str, fees: FeeSchedule) -> None:
        """A market's fee schedule (at its creation, or while restoring: its orders' reserves then)."""
        self.fees[market_id] = fees
        for order in self.orders.values():
            if order.market_id == market_id:
                order.fee = self._fee_cap(market_id, order.side, order.price)

    def _fee_cap(self, market_id: str, side: Side, price: int) -> int:
        """The most one contract of an order at ``price`` may pay in fees on a fill (0: no fees)."""
        fees = self.fees.get(market_id)
        if fees is None or self.markets[market_id] is not _BINARY:
            return 0
        unit = price if side is _BUY else CONTRACT - price
        maker = _fee(fees.maker_bps, fees.maker_per_contract, unit, 1)
        return max(maker, _fee(fees.taker_bps, fees.taker_per_contract, unit, 1))

    def __bool__(self) -> bool:
        return bool(self.markets or self.accounts)

    # ------------------------------------------------------------------ cash

    def deposit(self, account: str, amount: int) -> RejectReason | Account:
        balance = self.accounts.get(account)
        total = 0 if balance is None else balance.total
        if amount <= 0 or total + amount > INT64_MAX or self.net_deposits + amount > INT64_MAX:
            return RejectReason.INVALID_AMOUNT
        if balance is None:
            balance = self.accounts[account] = Account()
        balance.total += amount
        self.net_deposits += amount
        return balance

    def withdraw(self, account: str, amount: int) -> RejectReason | Account:
        if amount <= 0:
            return RejectReason.INVALID_AMOUNT
        balance = self.accounts.get(account)
        if balance is None or balance.total - balance.reserved < amount:
            return RejectReason.INSUFFICIENT_FUNDS
        balance.total -= amount
        self.net_deposits -= amount
        return balance

    def affordable(self, book: Book, account: str, side: Side, price: int, qty: int, instead_of: int = 0) -> bool:
        """Whether a new order's reserve fits the account's free balance; ``instead_of``, a live
        order it replaces (an amend), whose own reserve and contracts then count as free."""
        old = self.orders.get(instead_of) if instead_of else None
        fee = self._fee_cap(book.market_id, side, price) if self.fees else 0
        order = Reserve(book.market_id, account, book.scheme is _BINARY, side, price, qty, 0, fee)
        if order.binary and side is _SELL:
            contracts = self._free_contracts(book.market_id, account) + (0 if old is None else old.covered)
            order.covered = min(qty, contracts)
        balance = self.accounts.get(account)
        free = 0 if balance is None else balance.total - balance.reserved
        return cash_reserve(order) <= free + (0 if old is None else cash_reserve(old))

    def _free_contracts(self, market_id: str, account: str) -> int:
        position = self.positions.get((market_id, account))
        return 0 if position is None else position.yes - position.committed

    # ------------------------------------------------------------------ following the matcher

    def follow(self, events: list[Event]) -> list[Event]:
        """The command's events with the ledger's own inserted after each that moved money."""
        out: list[Event] = []
        settled: list[MarketStateChanged] = []
        markets = self.markets
        for event in events:
            out.append(event)
            if getattr(event, "market_id", "") not in markets:
                continue
            match event:
                case TradeExecuted():
                    self._trade(event, out)
                case OrderAccepted():
                    self._accept(event, out)
                case OrderAmended(order_id=order_id, old_remaining=old_remaining):
                    self._release(event, order_id, old_remaining, out)  # all of the old reserve, then the new
                    self._accept(event, out)
                case (
                    OrderCancelled(order_id=order_id, cancelled_qty=qty)
                    | OrderReduced(order_id=order_id, reduced_by=qty)
                ):
                    self._release(event, order_id, qty, out)
                case MarketStateChanged(state=MarketState.SETTLED):
                    settled.append(event)
        for event in settled:  # after the cancels of the market's resting orders
            self._settle(event, out)
        return out

    def _accept(self, event: OrderAccepted | OrderAmended, out: list[Event]) -> None:
        market_id = event.market_id
        open_qty = event.qty if isinstance(event, OrderAccepted) else event.remaining
        binary = self.markets[market_id] is _BINARY
        fee = self._fee_cap(market_id, event.side, event.price) if self.fees else 0
        order = Reserve(market_id, event.account, binary, event.side, event.price, open_qty, 0, fee)
        self.orders[event.order_id] = order
        if order.binary and order.side is _SELL:
            order.covered = min(order.remaining, self._free_contracts(market_id, order.account))
            if order.covered:
                position = self._position(market_id, order.account)
                position.committed += order.covered
                self._emit_position(event, market_id, order.account, BalanceReason.RESERVE, out)
        amount = cash_reserve(order)
        if amount:
            balance = self.accounts[order.account]  # affordable() saw money there
            balance.reserved += amount
            out.append(self._balance_event(event, order.account, balance, BalanceReason.RESERVE, market_id))

    def _release(self, event: Event, order_id: int, qty: int, out: list[Event]) -> None:
        order = self.orders[order_id]
        before = cash_reserve(order)
        from_cash = min(qty, order.remaining - order.covered)
        from_contracts = qty - from_cash
        order.remaining -= qty
        order.covered -= from_contracts
        if not order.remaining:
            del self.orders[order_id]
        account = order.account
        if from_contracts:
            position = self._position(order.market_id, account)
            position.committed -= from_contracts
            self._redeem(position, account)
        released = before - cash_reserve(order)
        balance = self.accounts[account]
        balance.reserved -= released
        if released or from_contracts:
            out.append(self._balance_event(event, account, balance, BalanceReason.RELEASE, order.market_id))
        if from_contracts:
            self._emit_position(event, order.market_id, account, BalanceReason.RELEASE, out)

    def _trade(self, event: TradeExecuted, out: list[Event]) -> None:
        at = len(out) - 1  # where follow() put the event
        maker = self.orders[event.maker_order_id]
        taker = self.orders[event.taker_order_id]
        buyer, seller = (taker, maker) if event.taker_side is _BUY else (maker, taker)
        buyer_id, seller_id = (
            (event.taker_order_id, event.maker_order_id)
            if event.taker_side is _BUY
            else (event.maker_order_id, event.taker_order_id)
        )
        qty = event.qty
        price = event.price
        if buyer.binary:
            self._binary_fill(buyer, seller, qty, price)
        else:
            self._odds_fill(buyer, seller, qty, price)
        for order_id, order in ((buyer_id, buyer), (seller_id, seller)):
            if not order.remaining:
                del self.orders[order_id]
        for order in (maker, taker):
            account = order.account
            out.append(
                self._balance_event(event, account, self.accounts[account], BalanceReason.TRADE, order.market_id)
            )
            self._emit_position(event, order.market_id, account, BalanceReason.TRADE, out)
        fees = self.fees.get(event.market_id) if self.fees else None
        if fees is not None and buyer.binary:
            maker_unit = price if event.taker_side is _SELL else CONTRACT - price  # the maker bought, or sold
            maker_fee = _fee(fees.maker_bps, fees.maker_per_contract, maker_unit, qty)
            taker_fee = _fee(fees.taker_bps, fees.taker_per_contract, CONTRACT - maker_unit, qty)
            out[at] = msgspec.structs.replace(event, maker_fee=maker_fee, taker_fee=taker_fee)
            for order, fee in ((maker, maker_fee), (taker, taker_fee)):
                self._charge(out[at], order.account, fee, fees.account, out)

    def _binary_fill(self, buyer: Reserve, seller: Reserve, qty: int, price: int) -> None:
        market_id = buyer.market_id
        # the buyer: pays the traded price, gets YES
        balance = self.accounts[buyer.account]
        before = cash_reserve(buyer)
        buyer.remaining -= qty
        balance.reserved -= before - cash_reserve(buyer)
        balance.total -= price * qty
        position = self._position(market_id, buyer.account)
        position.yes += qty
        self._redeem(position, buyer.account)
        # the seller: delivers committed YES first, then goes short (gets NO) for the rest
        balance = self.accounts[seller.account]
        before = cash_reserve(seller)
        delivered = min(seller.covered, qty)
        seller.remaining -= qty
        seller.covered -= delivered
        balance.reserved -= before - cash_reserve(seller)
        balance.total += price * delivered - (CONTRACT - price) * (qty - delivered)
        position = self._position(market_id, seller.account)
        position.yes -= delivered
        position.committed -= delivered
        position.no += qty - delivered
        self._redeem(position, seller.account)

    def _odds_fill(self, lay: Reserve, back: Reserve, stake: int, tick: int) -> None:
        market_id = lay.market_id
        liability = stake * (ODDS_LADDER[tick - 1] - 100) // 100
        pot = stake + liability
        balance = self.accounts[back.account]
        back.remaining -= stake
        balance.reserved -= stake
        balance.total -= stake
        position = self._position(market_id, back.account)
        position.yes += pot
        position.stake += stake
        balance = self.accounts[lay.account]
        before = cash_reserve(lay)
        lay.remaining -= stake
        balance.reserved -= before - cash_reserve(lay)
        balance.total -= liability
        position = self._position(market_id, lay.account)
        position.no += pot
        position.liability += liability

    def _redeem(self, position: Position, account: str) -> None:
        """Binary netting: every uncommitted YES with a NO is a pair worth 100, paid out now."""
        pairs = min(position.yes - position.committed, position.no)
        if pairs > 0:
            position.yes -= pairs
            position.no -= pairs
            self.accounts[account].total += CONTRACT * pairs

    def _emit_position(
        self, cause: Event, market_id: str, account: str, reason: BalanceReason, out: list[Event]
    ) -> None:
        """Report a position; forget it once it is empty (so equal states have equal ledgers)."""
        key = (market_id, account)
        position = self.positions[key]
        out.append(self._position_event(cause, market_id, account, position, reason))
        if position == _EMPTY:
            del self.positions[key]

    def _position(self, market_id: str, account: str) -> Position:
        key = (market_id, account)
        position = self.positions.get(key)
        if position is None:
            position = self.positions[key] = Position()
        return position

    # ------------------------------------------------------------------ settlement

    def _settle(self, event: MarketStateChanged, out: list[Event]) -> None:
        market_id = event.market_id
        binary = self.markets[market_id] is _BINARY
        outcome = event.outcome
        reason = BalanceReason.VOID if outcome == "void" else BalanceReason.SETTLEMENT
        mine = sorted(key for key in self.positions if key[0] == market_id)
        for key in mine:
            position = self.positions.pop(key)
            payout = _payout(position, binary, outcome)
            account = key[1]
            balance = self.accounts[account]
            balance.total += payout
            out.append(self._balance_event(event, account, balance, reason, market_id))
            out.append(self._position_event(event, market_id, account, Position(), reason))
            fees = self.fees.get(market_id)
            winnings = payout - position.stake - position.liability
            if fees is not None and not binary and winnings > 0:  # a void returns what was put in: none
                self._charge(event, account, _fee(fees.commission_bps, 0, winnings, 1), fees.account, out)

    def _charge(self, cause: Event, account: str, fee: int, to: str, out: list[Event]) -> None:
        """``account`` pays ``fee`` (covered by what it just released or was paid) to the fee account ``to``."""
        if not fee:
            return
        market_id = getattr(cause, "market_id", "")
        balance = self.accounts[account]
        balance.total -= fee
        out.append(self._balance_event(cause, account, balance, BalanceReason.FEE, market_id))
        receiver = self.accounts.get(to)
        if receiver is None:
            receiver = self.accounts[to] = Account()
        receiver.total += fee
        out.append(self._balance_event(cause, to, receiver, BalanceReason.FEE, market_id))

    # ------------------------------------------------------------------ events and totals

    @staticmethod
    def _balance_event(
        cause: Event, account: str, balance: Account, reason: BalanceReason, market_id: str = ""
    ) -> BalanceChanged:
        return BalanceChanged(
            seq=cause.seq,
            ts=cause.ts,
            account=account,
            total=balance.total,
            reserved=balance.reserved,
            reason=reason,
            market_id=market_id,
        )

    @staticmethod
    def _position_event(
        cause: Event, market_id: str, account: str, position: Position, reason: BalanceReason
    ) -> PositionChanged:
        return PositionChanged(
            seq=cause.seq,
            ts=cause.ts,
            market_id=market_id,
            account=account,
            yes=position.yes,
            no=position.no,
            committed=position.committed,
            stake=position.stake,
            liability=position.liability,
            reason=reason,
        )

    def pot(self, market_id: str) -> int:
        """The money locked in a market's open positions (what settlement will pay out)."""
        yes = sum(p.yes for (m, _), p in self.positions.items() if m == market_id)
        return yes * CONTRACT if self.markets[market_id] is _BINARY else yes


_EMPTY = Position()


def _payout(position: Position, binary: bool, outcome: str) -> int:
    if binary:
        if outcome == "yes":
            return CONTRACT * position.yes
        if outcome == "no":
            return CONTRACT * position.no
        return CONTRACT // 2 * (position.yes + position.no)
    if outcome == "win":
        return position.yes
    if outcome == "lose":
        return position.no
    return position.stake + position.liability


def _fee(bps: int, per_contract: int, unit: int, qty: int) -> int:
    """A fee: ``bps`` of ``unit * qty``, rounded up to the minor unit, plus ``per_contract * qty``."""
    return -(-bps * unit * qty // MAX_BPS) + per_contract * qty


def valid_fees(scheme: TickScheme, collateral: bool, fees: FeeSchedule) -> bool:
    """Whether a market may charge these fees: only a collateral market, rates from 0 to 100 %,
    at most a contract's worth per contract; fills only on a binary market, commission only on
    an odds one; and a fee account that is an account."""
    rates = (fees.maker_bps, fees.taker_bps, fees.commission_bps)
    fixed = (fees.maker_per_contract, fees.taker_per_contract)
    on_fills = any(rates[:2]) or any(fixed)
    return (
        collateral
        and all(0 <= rate <= MAX_BPS for rate in rates)
        and all(0 <= amount <= CONTRACT for amount in fixed)
        and not (on_fills and scheme is not _BINARY)
        and not (fees.commission_bps and scheme is not TickScheme.ODDS)
        and valid_account(fees.account)
    )


def valid_outcome(scheme: TickScheme, outcome: str) -> bool:
    return outcome in (BINARY_OUTCOMES if scheme is _BINARY else ODDS_OUTCOMES)
