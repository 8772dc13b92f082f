"""Commands in, events out: the engine's whole vocabulary.

Every command carries ``seq`` (its position in the input journal) and ``ts`` (its time in
nanoseconds, stamped at the edge); the engine never reads a clock. Every event repeats the
``seq`` and ``ts`` of the command that caused it. Commands are named in the imperative,
events in the past tense. All are frozen msgspec Structs: slotted, immutable, cheap to build,
and ready for the bus codec. Prices are integer ticks, quantities integer units.

In JSON (the bus codec) each is tagged with its class name in a ``"type"`` field, and enums
are their integer values. Commands are keyword-only. Events may also be built positionally,
fields in declared order (``seq``, ``ts``, then the event's own): the engine does so on its hot
path, where a keyword call costs two to three times as much; everyone else should use keywords.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Annotated

import msgspec


class Side(IntEnum):
    """Which side of the book an order rests on.

    Odds markets name them differently: a *lay* is a bid (it wants low odds) and a *back* is an
    ask (it wants high odds); see :mod:`matchbox.engine.schemes`.
    """

    BUY = 0
    SELL = 1


class TimeInForce(IntEnum):
    GTC = 0  # good till cancelled: the remainder rests
    GTD = 1  # good till date: rests until ``expires_at`` (engine time), then is cancelled
    IOC = 2  # immediate or cancel: the remainder is cancelled
    FOK = 3  # fill or kill: fills completely at once, or is rejected with nothing executed


class OrderKind(IntEnum):
    LIMIT = 0
    MARKET = 1  # an IOC or FOK at the worst tick the market allows


class TickScheme(IntEnum):
    BINARY = 0  # ticks 1..99 are cents for a YES contract
    ODDS = 1  # ticks 1..350 index the decimal odds ladder 1.01..1000
    TICKS = 2  # ticks 1..max_tick, plain integers


class SelfTradePrevention(IntEnum):
    CANCEL_TAKER = 0  # the incoming order's remainder is cancelled
    CANCEL_RESTING = 1  # the account's resting order is cancelled and matching goes on
    CANCEL_BOTH = 2  # the account's resting order and the incoming order's remainder are both cancelled


class MarketState(IntEnum):
    OPEN = 0
    SUSPENDED = 1  # orders are rejected, the book is kept, cancels still work
    CLOSED = 2  # resting orders were cancelled; nothing trades again
    SETTLED = 3  # the outcome is known; final


class OrderStatus(StrEnum):
    """An order's status, the one list every reader of the events uses (the engine's queries, the
    API's projection, the SQL ``orders`` table); derived by :func:`matchbox.engine.rules.order_status`.
    The values are the public JSON's and the stored column's."""

    ACCEPTED = "accepted"  # the engine took it; the events that say whether it rests are still to come
    OPEN = "open"  # resting, nothing filled yet
    PARTIALLY_FILLED = "partially_filled"  # something filled, the rest is live
    FILLED = "filled"
    CANCELLED = "cancelled"  # by its owner, a timer, the market or self-trade prevention; fills stand
    REJECTED = "rejected"
    PENDING = "pending"  # the API's answer only: journalled, the engine's outcome not known in time


class RejectReason(IntEnum):
    """Why a command changed nothing. Grouped in ranges by area, as result codes."""

    # 1xx: markets
    UNKNOWN_MARKET = 100
    MARKET_NOT_OPEN = 101
    MARKET_EXISTS = 102
    INVALID_MARKET_SPEC = 103
    ILLEGAL_TRANSITION = 104
    INVALID_OUTCOME = 105  # a collateral market settled with an outcome its scheme does not know
    # 2xx: an order's own fields
    INVALID_PRICE = 200  # off the market's ladder
    INVALID_QUANTITY = 201  # zero or negative
    QUANTITY_OVER_MAX = 202  # above the market's maximum order size
    DUPLICATE_ORDER_ID = 203  # not above every order id the engine has accepted
    INVALID_EXPIRY = 204  # GTD without a future expiry, or an expiry on another TIF
    INVALID_ORDER_TYPE = 205  # a market order that is GTC/GTD or post-only
    INVALID_ORDER_IDS = 206  # a cancel by ids with none, or more than MAX_CANCEL_IDS
    # 3xx: matching
    POST_ONLY_WOULD_TAKE = 300
    FOK_CANNOT_FILL = 301
    SELF_TRADE = 302  # the first match would be against the same account (CANCEL_TAKER)
    # 4xx: managing an order
    UNKNOWN_ORDER = 400  # above every id accepted so far, or another account's live order
    ORDER_NOT_OPEN = 401  # at or below that mark and not live: filled, cancelled, expired, never accepted
    # 5xx: the input's form: found by the bus before the engine sees it, or by the id rules
    MALFORMED_COMMAND = 500  # not a command: bad JSON, unknown type, wrong field types
    MALFORMED_ID = 501  # an account or market id that breaks the rules of matchbox.engine.ids
    # 6xx: money (collateral markets, deposits, withdrawals)
    INSUFFICIENT_FUNDS = 600  # the order's reserve, or the withdrawal, is above the free balance
    INVALID_AMOUNT = 601  # a deposit or withdrawal of zero or less, or one that would overflow
    INVALID_ACCOUNT = 602  # a command that needs an account names none (the empty string)
    INVALID_TIMEOUT = 603  # a heartbeat timeout below zero or above MAX_HEARTBEAT_TIMEOUT_MS
    INVALID_TRANSFER = 604  # a transfer to its own shard, to none, or with a malformed transfer id
    DUPLICATE_TRANSFER = 605  # this transfer id was taken out, or paid in, on this shard before


class BalanceReason(IntEnum):
    """Why an account's balance or position changed (see :mod:`matchbox.engine.ledger`)."""

    DEPOSIT = 0
    WITHDRAW = 1
    RESERVE = 2  # an order was accepted: cash (or YES contracts) set aside for it
    RELEASE = 3  # an order was cancelled, reduced or expired: its unused reserve is free again
    TRADE = 4  # a fill: reserve turned into position (and a better price released)
    SETTLEMENT = 5  # the market settled: winning positions paid out
    VOID = 6  # the market was voided: stakes returned
    TRANSFER_OUT = 7  # cash taken out toward another shard (TransferOut)
    TRANSFER_IN = 8  # cash paid in from another shard (TransferIn), or a refused transfer's return
    FEE = 9  # a fee for a fill, or a commission on winnings, paid by the account or to the fee account


class CancelReason(IntEnum):
    USER = 0  # CancelOrder, or ReduceOrder down to nothing
    CANCEL_ALL = 1
    UNFILLED = 2  # the remainder of an IOC or market order
    SELF_TRADE = 3  # self-trade prevention
    EXPIRED = 4  # a GTD order reached its expiry
    MARKET_CLOSED = 5  # the market was closed or settled
    DEADMAN = 6  # the account's dead-man switch fired: no heartbeat before its deadline
    LAPSED = 7  # its market was suspended, and the order said it lapses then (PlaceOrder.lapse)


# --------------------------------------------------------------------------- commands

# Limits that decoding enforces (constructors do not validate): integers fit in 64 bits, as
# every store downstream needs; names and accounts are short texts.
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
Text = Annotated[str, msgspec.Meta(max_length=256)]
# a market's question and rules: at their longest, in the costliest characters JSON has (6 bytes:
# an escaped control character), a CreateMarket still fits an input entry (MAX_COMMAND_BYTES)
MAX_LONG_TEXT = 4096
LongText = Annotated[str, msgspec.Meta(max_length=MAX_LONG_TEXT)]
MAX_OUTCOMES = {TickScheme.BINARY: 2, TickScheme.ODDS: 1, TickScheme.TICKS: 0}  # outcome names a market may give


class MarketInfo(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """What a market is about, for people: the engine keeps it, passes it on in ``MarketCreated``
    and its snapshots, and never reads it."""

    title: Text = ""
    question: LongText = ""  # or the description
    rules: LongText = ""  # how it settles
    category: Text = ""
    # the outcomes' names: YES and NO on a binary market, the selection's on an odds market (none: the defaults)
    outcomes: Annotated[tuple[Text, ...], msgspec.Meta(max_length=2)] = ()


class Command(msgspec.Struct, frozen=True, gc=False, kw_only=True, tag=True):
    seq: Int64
    ts: Int64


MAX_BPS = 10_000  # a fee of 100 %


class FeeSchedule(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """What a collateral market charges, paid to ``account`` (see the ledger's "Fees" rule).

    Binary markets charge on each fill, the maker at its rates and the taker at its: ``*_bps``
    basis points of that side's notional (its own price per contract times the quantity: a buy
    of YES at ``t`` costs ``t``, a sell of YES is a buy of NO at ``100 - t``), rounded up to the
    minor unit, plus ``*_per_contract`` minor units per contract. Odds markets charge instead
    ``commission_bps`` of each account's net winnings in the market at settlement (none on a
    void), rounded up to the minor unit."""

    maker_bps: Int64 = 0
    taker_bps: Int64 = 0
    maker_per_contract: Int64 = 0
    taker_per_contract: Int64 = 0
    commission_bps: Int64 = 0
    account: Text = "fees"


class CreateMarket(Command, frozen=True, gc=False, kw_only=True):
    market_id: Text
    scheme: TickScheme
    max_tick: Int64 = 0  # only for TickScheme.TICKS
    max_qty: Int64 = 1_000_000_000
    stp: SelfTradePrevention = SelfTradePrevention.CANCEL_TAKER
    collateral: bool = False  # binary or odds only: orders need funds, settlement pays out
    info: MarketInfo | None = None
    opens_at: Int64 = 0  # engine time (ns): until then it is suspended, then the engine opens it
    closes_at: Int64 = 0  # engine time (ns): then the engine closes it (0: only by command)
    fees: FeeSchedule | None = None  # collateral markets only; none: it charges nothing


class SuspendMarket(Command, frozen=True, gc=False, kw_only=True):
    market_id: Text


class ResumeMarket(Command, frozen=True, gc=False, kw_only=True):
    market_id: Text


class CloseMarket(Command, frozen=True, gc=False, kw_only=True):
    market_id: Text


class SettleMarket(Command, frozen=True, gc=False, kw_only=True):
    """Settle a market. On a collateral market the outcome must be ``yes``/``no`` (binary),
    ``win``/``lose`` (odds, for the selection) or ``void`` (either); elsewhere it is free text."""

    market_id: Text
    outcome: Text = ""


class PlaceOrder(Command, frozen=True, gc=False, kw_only=True):
    market_id: Text
    order_id: Int64
    account: Text
    side: Side
    price: Int64  # a tick; ignored for market orders
    qty: Int64
    tif: TimeInForce = TimeInForce.GTC
    kind: OrderKind = OrderKind.LIMIT
    post_only: bool = False
    expires_at: Int64 = 0  # engine time (ns) for GTD
    stp: SelfTradePrevention | None = None  # this order's self-trade prevention; None: its market's
    lapse: bool = False  # cancelled (LAPSED) when its market is suspended; else it persists


class CancelOrder(Command, frozen=True, gc=False, kw_only=True):
    order_id: Int64
    account: Text = ""  # when given, must own the order


class AmendOrder(Command, frozen=True, gc=False, kw_only=True):
    """Change a live order's price and/or its quantity in one step (see the engine's "Amending"
    rule). ``price`` 0 keeps the price. ``qty`` is the order's new quantity as FIX's OrderQty:
    filled plus the new remaining (remaining = qty - filled; at or below filled, the order is
    cancelled); 0 keeps the remaining quantity. The amended order is checked as a new arrival
    with ``post_only`` and ``stp`` (None: the order's own, else its market's)."""

    order_id: Int64
    account: Text = ""  # when given, must own the order
    price: Int64 = 0
    qty: Int64 = 0  # filled + the new remaining
    post_only: bool = False
    stp: SelfTradePrevention | None = None


MAX_CANCEL_IDS = 100  # the most orders one CancelOrders names


class CancelOrders(Command, frozen=True, gc=False, kw_only=True):
    """Cancel several orders at once, each as a ``CancelOrder`` would (in the order given): each
    is cancelled (``OrderCancelled``, reason USER) or refused on its own (``Rejected`` with its
    order id). None, or more than ``MAX_CANCEL_IDS``, is refused whole (INVALID_ORDER_IDS)."""

    order_ids: tuple[Int64, ...]
    account: Text = ""  # when given, must own each order


class ReduceOrder(Command, frozen=True, gc=False, kw_only=True):
    order_id: Int64
    reduce_by: Int64  # reducing by the whole remainder cancels the order
    account: Text = ""


class CancelAll(Command, frozen=True, gc=False, kw_only=True):
    market_id: Text
    account: Text


class Deposit(Command, frozen=True, gc=False, kw_only=True):
    """Add ``amount`` minor units (cents) to an account's balance, creating the account."""

    account: Text
    amount: Int64


class Withdraw(Command, frozen=True, gc=False, kw_only=True):
    """Take ``amount`` minor units out of an account; refused beyond its free balance."""

    account: Text
    amount: Int64


class TransferOut(Command, frozen=True, gc=False, kw_only=True):
    """Take ``amount`` of an account's free cash on this shard, toward ``to_shard``: the first half
    of a transfer between shards. A relay pays it in there (``TransferIn``, the same
    ``transfer_id``). Refused beyond the free balance, to this shard itself, or when this shard
    has seen the transfer id before."""

    account: Text
    amount: Int64
    transfer_id: Text
    to_shard: Int64


class TransferIn(Command, frozen=True, gc=False, kw_only=True):
    """Pay in ``amount`` taken out on ``from_shard`` by the transfer ``transfer_id``: the second half.
    Paid in once: the same transfer id again is refused (DUPLICATE_TRANSFER), so a relay may
    send it as often as it likes. Any other refusal (``TransferRefused``) sends the money back."""

    account: Text
    amount: Int64
    transfer_id: Text
    from_shard: Int64


class AdvanceTime(Command, frozen=True, gc=False, kw_only=True):
    """Moves engine time forward so GTD orders expire, and dead-man switches fire, when no other
    command arrives."""


MAX_HEARTBEAT_TIMEOUT_MS = 3_600_000  # one hour: a longer dead-man switch protects no one
# Ids never go below their time in ms times this (trade ids in the engine, order ids in the
# journal): ids lost with a rolled-back Redis are not handed out again (see engine.py, "Trade ids")
IDS_PER_MS = 1024


class Heartbeat(Command, frozen=True, gc=False, kw_only=True):
    """Arm, re-arm or disarm an account's dead-man switch.

    ``timeout_ms`` above zero (at most ``MAX_HEARTBEAT_TIMEOUT_MS``) sets the deadline to
    ``ts + timeout_ms * 1_000_000`` (engine time is in ns), replacing any earlier one; zero
    disarms. When engine time reaches the deadline, every resting order of the
    account, in every market, is cancelled (reason DEADMAN).
    """

    account: Text
    timeout_ms: Int64


# --------------------------------------------------------------------------- events


class Event(msgspec.Struct, frozen=True, gc=False, tag=True):
    seq: int
    ts: int


class MarketCreated(Event, frozen=True, gc=False):
    market_id: str
    scheme: TickScheme
    min_tick: int
    max_tick: int
    max_qty: int
    stp: SelfTradePrevention
    collateral: bool = False
    info: MarketInfo | None = None
    opens_at: int = 0  # engine time (ns); a MarketStateChanged to SUSPENDED follows when it is still to come
    closes_at: int = 0  # engine time (ns); 0: none
    fees: FeeSchedule | None = None


class MarketStateChanged(Event, frozen=True, gc=False):
    market_id: str
    state: MarketState
    outcome: str = ""


class OrderAccepted(Event, frozen=True, gc=False):
    market_id: str
    order_id: int
    account: str
    side: Side
    price: int  # for market orders, the worst tick it may trade at
    qty: int
    tif: TimeInForce
    kind: OrderKind
    post_only: bool
    expires_at: int
    lapse: bool = False  # it is cancelled (LAPSED) if its market is suspended


class OrderRested(Event, frozen=True, gc=False):
    """The order's remainder now rests on the book at ``price``."""

    market_id: str
    order_id: int
    account: str
    side: Side
    price: int
    remaining: int


class TradeExecuted(Event, frozen=True, gc=False):
    market_id: str
    trade_id: int
    price: int  # always the maker's price
    qty: int
    taker_side: Side
    maker_order_id: int
    taker_order_id: int
    maker_account: str
    taker_account: str
    maker_remaining: int  # zero: the maker is filled
    taker_remaining: int  # zero: the taker is filled
    maker_fee: int = 0  # what the maker paid its market's fee account for this fill (see FeeSchedule)
    taker_fee: int = 0


class OrderCancelled(Event, frozen=True, gc=False):
    market_id: str
    order_id: int
    account: str
    cancelled_qty: int  # the remainder taken off (or never rested)
    reason: CancelReason


class OrderReduced(Event, frozen=True, gc=False):
    """A live order's remaining quantity was lowered; it keeps its place. ``price`` and ``qty``
    say what it is now, as an ``OrderAmended`` would: its price, and filled plus remaining (FIX's
    OrderQty after the replace; 0 for both from an engine before they were told)."""

    market_id: str
    order_id: int
    account: str
    reduced_by: int
    remaining: int
    price: int = 0
    qty: int = 0


class OrderAmended(Event, frozen=True, gc=False):
    """A live order was given a new price or more quantity: it left the book, and now trades
    and rests as a new arrival would (its ``TradeExecuted``, then ``OrderRested`` or
    ``OrderCancelled``, follow), behind every order already at its price. ``qty`` is its new
    quantity, as FIX's OrderQty after a replace: what has filled plus the new remaining (what was
    reduced away before is no longer counted in it)."""

    market_id: str
    order_id: int
    account: str
    side: Side
    price: int
    remaining: int
    qty: int
    old_price: int
    old_remaining: int


class BalanceChanged(Event, frozen=True, gc=False):
    """An account's cash after a change, in minor units: ``total`` owned, ``reserved`` of it
    set aside for resting orders (free = total - reserved). Absolute values, so the last one
    per account is its balance."""

    account: str
    total: int
    reserved: int
    reason: BalanceReason
    market_id: str = ""  # the market that caused it ("" for deposits and withdrawals)


class PositionChanged(Event, frozen=True, gc=False):
    """An account's position in a collateral market after a change (absolute values).

    Binary: ``yes`` and ``no`` are contracts held (never both above ``committed`` at once: a
    YES+NO pair is redeemed for 100 at once), ``committed`` the YES contracts reserved for
    resting sells. Odds: ``yes`` is what the account is paid if the selection wins, ``no`` what
    it is paid if it loses, ``stake`` and ``liability`` what it put in as backer and as layer
    (what a void returns); ``committed`` is 0.
    """

    market_id: str
    account: str
    yes: int
    no: int
    committed: int
    stake: int
    liability: int
    reason: BalanceReason


class Rejected(Event, frozen=True, gc=False):
    """A command refused; the engine's state is exactly as before it."""

    command: str  # the command's type name
    reason: RejectReason
    market_id: str = ""
    order_id: int = 0
    account: str = ""


class TransferredOut(Event, frozen=True, gc=False):
    """Cash left this shard toward ``to_shard`` (its ``BalanceChanged``, reason TRANSFER_OUT, comes
    with it); it is in flight until ``TransferredIn`` (or ``TransferRefused``) there."""

    account: str
    amount: int
    transfer_id: str
    to_shard: int


class TransferredIn(Event, frozen=True, gc=False):
    """Cash from ``from_shard`` paid in here (its ``BalanceChanged``, reason TRANSFER_IN, comes with it)."""

    account: str
    amount: int
    transfer_id: str
    from_shard: int


class TransferRefused(Event, frozen=True, gc=False):
    """A ``TransferIn`` changed nothing here. DUPLICATE_TRANSFER: it was paid in before (nothing to
    do); any other reason: the relay pays it back on ``from_shard``."""

    account: str
    amount: int
    transfer_id: str
    from_shard: int
    reason: RejectReason


class HeartbeatSet(Event, frozen=True, gc=False):
    """A heartbeat was accepted: the account's dead-man deadline (engine time, ns) is now
    ``deadline``, or 0 if the switch is disarmed."""

    account: str
    deadline: int


class DeadmanTriggered(Event, frozen=True, gc=False):
    """An account's deadline passed without a heartbeat: its ``cancelled`` resting orders were
    cancelled (the ``OrderCancelled`` events, reason DEADMAN, come just before) and the switch is
    disarmed."""

    account: str
    cancelled: int


AnyCommand = (
    CreateMarket
    | SuspendMarket
    | ResumeMarket
    | CloseMarket
    | SettleMarket
    | PlaceOrder
    | CancelOrder
    | CancelOrders
    | AmendOrder
    | ReduceOrder
    | CancelAll
    | Deposit
    | Withdraw
    | TransferOut
    | TransferIn
    | AdvanceTime
    | Heartbeat
)
AnyEvent = (
    MarketCreated
    | MarketStateChanged
    | OrderAccepted
    | OrderRested
    | TradeExecuted
    | OrderCancelled
    | OrderReduced
    | OrderAmended
    | BalanceChanged
    | PositionChanged
    | Rejected
    | TransferredOut
    | TransferredIn
    | TransferRefused
    | HeartbeatSet
    | DeadmanTriggered
)
