"""Request and response bodies (pydantic), as the OpenAPI schema shows them."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Generic, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from matchbox.api.codes import ALL_CODES
from matchbox.engine.ids import ACCOUNT_PATTERN, MARKET_ID_PATTERN, MAX_ID_LENGTH, MAX_SHARDS
from matchbox.engine.ledger import INT64_MAX
from matchbox.engine.types import (
    MAX_BPS,
    MAX_CANCEL_IDS,
    MAX_HEARTBEAT_TIMEOUT_MS,
    MAX_LONG_TEXT,
    OrderStatus,
    SelfTradePrevention,
)

# Numbers are bounded before they are used (JSON numbers as they are parsed: see
# matchbox.api.routing). Every integer field has a bound within 64 bits, as every integer of a
# command must (a larger one would reach the journal as a command no engine decodes). Odds given
# as text are refused past a few dozen characters before Decimal reads them, and have few digits,
# so a giant exponent is refused before any arithmetic.
MAX_ODDS_CHARS = 32
T = TypeVar("T")
# The units of the API's numbers, said once (docs/api.md#units) and in every field's description.
PRICE_UNIT = "in the market's units: cents of a YES contract (binary), decimal odds (odds), ticks (ticks)"
QTY_UNIT = "contracts (binary), stake in cents (odds), units (ticks)"
ID_BITS = "an id: its shard is in the bits above bit 52"
SEQUENCE = "the number of the last event of the market's shard folded in (book messages carry it too)"
NS_PER_MS = 1_000_000  # engine time is in ns; the API speaks unix ms


def _short_text(value: object) -> object:
    if isinstance(value, str) and len(value) > MAX_ODDS_CHARS:
        raise ValueError(f"at most {MAX_ODDS_CHARS} characters")
    return value


Int64 = Annotated[int, Field(ge=-INT64_MAX, le=INT64_MAX)]
Odds = Annotated[Decimal, Field(max_digits=12), BeforeValidator(_short_text)]

# Ids keep the engine's rules (matchbox.engine.ids), in bodies, paths and queries alike: a bad one
# is a 422 naming its field here, never a command the engine has to refuse.
# Self-trade prevention: cancel the incoming order (the newest), the resting one (the oldest), or both
SelfTrade = Literal["cancel_taker", "cancel_resting", "cancel_both"]
SELF_TRADE = {name.lower(): rule for name, rule in SelfTradePrevention.__members__.items()}
AccountId = Annotated[str, StringConstraints(max_length=MAX_ID_LENGTH, pattern=ACCOUNT_PATTERN)]
MarketId = Annotated[str, StringConstraints(max_length=MAX_ID_LENGTH, pattern=MARKET_ID_PATTERN)]


class Page(BaseModel, Generic[T]):
    """The one list shape: a page of items, and the cursor of the next (see :mod:`matchbox.api.pages`)."""

    items: list[T]
    next: str | None = Field(description="pass as cursor= for the next page; null: there is no more")


class ErrorDetail(BaseModel):
    code: str = Field(
        description="A stable code (docs/api.md lists them): the API's own, or the engine's reject reason",
        json_schema_extra={"enum": list(ALL_CODES)},
    )
    message: str = Field(description="What went wrong, in words (wording may change: match on code)")
    field: str | None = Field(default=None, description="The request field at fault, if one is")
    order_id: int | None = Field(default=None, description="The order concerned: a rejected order's id")


class ErrorBody(BaseModel):
    """Every non-2xx answer."""

    error: ErrorDetail


FEE_PAID = "what this side paid its market's fee account for the fill: minor units (cents); absent if nothing"


class FeesIn(BaseModel):
    """A market's fees (collateral markets). Binary: each fill, the maker and the taker at their
    rates: basis points of their own side's notional (a buy of YES at p pays on p per contract, a
    sell on 100 - p), rounded up to the cent, plus a fixed amount per contract. Odds: a commission
    on each account's net winnings in the market at settlement, rounded up."""

    model_config = ConfigDict(extra="forbid")
    maker_bps: int = Field(default=0, ge=0, le=MAX_BPS, description="binary: basis points of the maker's notional")
    taker_bps: int = Field(default=0, ge=0, le=MAX_BPS, description="binary: basis points of the taker's notional")
    maker_per_contract: int = Field(default=0, ge=0, le=100, description="binary: cents per contract the maker pays")
    taker_per_contract: int = Field(default=0, ge=0, le=100, description="binary: cents per contract the taker pays")
    commission_bps: int = Field(default=0, ge=0, le=MAX_BPS, description="odds: basis points of net winnings")
    account: AccountId = Field(default="fees", description="the account the fees are paid to")


class FeesOut(FeesIn):
    """A market's fees, as it was created with them."""


class MarketIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    market_id: MarketId
    scheme: Literal["binary", "odds", "ticks"]
    max_tick: int | None = Field(default=None, ge=1, le=100_000, description="ticks markets only: prices 1..max_tick")
    max_qty: int = Field(default=1_000_000_000, ge=1, le=2**62, description="largest order quantity (or stake)")
    self_trade: SelfTrade = Field(
        default="cancel_taker", description="what an order meeting its own account's does, unless it says itself"
    )
    collateral: bool = Field(
        default=False, description="binary or odds only: orders need funds, settlement pays out (see /account)"
    )
    shard: int | None = Field(
        default=None, ge=0, lt=MAX_SHARDS, description="the shard that matches it; default: the one with fewest markets"
    )
    fees: FeesIn | None = Field(default=None, description="collateral markets only; none: it charges nothing")
    title: str = Field(default="", max_length=256, description="a short name for people")
    question: str = Field(
        default="", max_length=MAX_LONG_TEXT, description="the question it answers, or its description"
    )
    rules: str = Field(default="", max_length=MAX_LONG_TEXT, description="how it settles")
    category: str = Field(default="", max_length=256, description="for filtering: GET /markets?category=")
    outcomes: list[Annotated[str, Field(min_length=1, max_length=256)]] | None = Field(
        default=None,
        max_length=2,
        description="the outcomes' names: two on a binary market (default YES, NO), one (the selection) on an odds one",
    )
    opens_at_ms: int | None = Field(
        default=None, ge=0, le=INT64_MAX // NS_PER_MS, description="unix ms: suspended until then, then opened"
    )
    closes_at_ms: int | None = Field(
        default=None,
        ge=1,
        le=INT64_MAX // NS_PER_MS,
        description="unix ms, in the future: the engine closes it then (journal time): nothing trades at or after it",
    )


class SettleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    outcome: str = Field(default="", max_length=64)


class MarketOut(BaseModel):
    market_id: str
    scheme: str
    state: str
    min_tick: int = Field(description="the lowest tick")
    max_tick: int = Field(description="the highest tick")
    max_qty: int = Field(description=f"{QTY_UNIT}: the largest order")
    self_trade: str
    outcome: str
    collateral: bool
    shard: int = Field(description="the shard whose engine matches it (its order and trade ids carry it)")
    best_bid: float | int | None = Field(description=PRICE_UNIT)
    best_ask: float | int | None = Field(description=PRICE_UNIT)
    fees: FeesOut | None = None
    title: str = ""
    question: str = ""
    rules: str = ""
    category: str = ""
    outcomes: list[str] = Field(default_factory=list, description="the outcomes' names (binary: YES and NO by default)")
    opens_at_ms: int | None = Field(default=None, description="unix ms it opens, or opened, at (null: at once)")
    closes_at_ms: int | None = Field(default=None, description="unix ms the engine closes it at (null: none)")


class MarketsPage(Page[MarketOut]):
    """Markets, by id."""


class OrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    market_id: MarketId | None = Field(default=None, description="default: the default market")
    side: Literal["buy", "sell", "back", "lay"] = Field(description="buy/sell; back/lay on odds markets")
    price: Int64 | None = Field(default=None, description="cents (binary) or ticks (ticks markets)")
    odds: Odds | None = Field(default=None, description="decimal odds on the ladder (odds markets)")
    qty: Int64 | None = Field(default=None, description="contracts or units")
    stake: Int64 | None = Field(default=None, description="the stake (odds markets; same as qty)")
    type: Literal["limit", "market"] = "limit"
    tif: Literal["GTC", "GTD", "IOC", "FOK"] | None = Field(
        default=None, description="default: GTC for a limit order, IOC for a market order (which is IOC or FOK)"
    )
    post_only: bool = False
    expires_at_ms: int | None = Field(
        default=None, ge=0, le=INT64_MAX // NS_PER_MS, description="GTD only: when it expires, unix ms"
    )
    client_order_id: str | None = Field(default=None, min_length=1, max_length=64)
    account: AccountId | None = Field(
        default=None,
        description="with a key, the key's own (may be left out); open mode: whose (default: a fresh anonymous one)",
    )
    self_trade: SelfTrade | None = Field(
        default=None,
        description="on meeting an order of the same account: cancel this one (cancel_taker), the resting one "
        "(cancel_resting) or both (cancel_both); default: the market's rule",
    )
    on_suspend: Literal["persist", "lapse"] = Field(
        default="persist", description="if its market is suspended: kept on the book, or cancelled (reason LAPSED)"
    )


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    orders: list[OrderIn] = Field(min_length=1, max_length=100)


class AmendIn(BaseModel):
    """A reduce (``reduce_by``, or a lower ``qty`` at the same price: it keeps its place) or an
    amend (a new ``price``/``odds`` or more ``qty``: it is re-queued as a new arrival)."""

    model_config = ConfigDict(extra="forbid")
    reduce_by: Int64 | None = Field(default=None, description="lower the remaining quantity by this much")
    qty: int | None = Field(
        default=None,
        ge=1,
        le=INT64_MAX,
        description=(
            "or: the order's new quantity, contracts or units, counting what has filled (FIX's OrderQty):"
            " the remaining becomes qty - filled; at or below filled, the rest is cancelled"
        ),
    )
    price: Int64 | None = Field(default=None, description="a new price: cents (binary) or ticks (ticks markets)")
    odds: Odds | None = Field(default=None, description="a new price in decimal odds (odds markets)")
    post_only: bool | None = Field(
        default=None, description="refuse the amend if it would trade; default: as the order was placed"
    )
    self_trade: SelfTrade | None = Field(
        default=None, description="as on a new order; default: the order's own rule, else its market's"
    )
    account: AccountId | None = None


class CancelManyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    order_ids: list[Annotated[int, Field(ge=1, le=INT64_MAX)]] = Field(
        min_length=1, max_length=MAX_CANCEL_IDS, description="up to 100 orders, cancelled in this order"
    )
    account: AccountId | None = Field(default=None, description="open mode: whose they must be")


class FillOut(BaseModel):
    trade_id: int = Field(description=ID_BITS)
    price: float | int = Field(description=PRICE_UNIT)
    qty: int = Field(description=QTY_UNIT)
    role: Literal["maker", "taker"]
    time_ms: int = Field(description="when it traded: unix ms, the engine's (journal) time")
    fee: int | None = Field(default=None, description=FEE_PAID)


class OrderOut(BaseModel):
    order_id: int = Field(description=ID_BITS)
    market_id: str
    account: str
    side: str | None = Field(default=None, description="absent for an order the engine rejected")
    price: float | int | None = Field(default=None, description="absent for market orders and rejected orders")
    qty: int | None = Field(default=None, description="absent for an order the engine rejected")
    remaining: int = Field(description=f"{QTY_UNIT}: still to fill (0 once done)")
    filled: int = Field(description=f"{QTY_UNIT}: filled so far")
    status: OrderStatus
    tif: str | None = None
    type: str | None = None
    post_only: bool = False
    on_suspend: Literal["persist", "lapse"] = Field(
        default="persist", description="what becomes of it if its market is suspended: kept, or cancelled (LAPSED)"
    )
    fills: list[FillOut] = []
    reject_reason: str | None = None
    cancel_reason: str | None = None
    client_order_id: str | None = None
    entry_id: str | None = Field(default=None, description="the input journal entry; events carry it as 'in'")


class BatchItemOut(BaseModel):
    status: int = Field(description="the HTTP status this order alone would have had")
    order: OrderOut | None = None
    error: ErrorDetail | None = None


class BatchOut(BaseModel):
    items: list[BatchItemOut] = Field(description="one result per order, in the request's order")


class LevelOut(BaseModel):
    price: float | int = Field(description=PRICE_UNIT)
    qty: int = Field(description=f"{QTY_UNIT}: resting at the level")
    orders: int | None = Field(default=None, description="orders resting at the level")


class BookOut(BaseModel):
    market_id: str
    bids: list[LevelOut]
    asks: list[LevelOut]
    sequence: int = Field(description=SEQUENCE)


class TradeOut(BaseModel):
    trade_id: int = Field(description=ID_BITS)
    price: float | int = Field(description=f"{PRICE_UNIT} (the maker's)")
    qty: int = Field(description=QTY_UNIT)
    taker_side: str
    maker_order_id: int = Field(description=ID_BITS)
    taker_order_id: int = Field(description=ID_BITS)
    time_ms: int = Field(description="when it traded: unix ms, the engine's (journal) time")


class TradesPage(Page[TradeOut]):
    """A market's trades, newest first."""


class TickerOut(BaseModel):
    market_id: str
    best_bid: float | int | None = Field(description=PRICE_UNIT)
    best_ask: float | int | None = Field(description=PRICE_UNIT)
    mid: float | None = Field(description=f"(best bid + best ask) / 2, {PRICE_UNIT}")
    spread: float | int | None = Field(description=f"best ask - best bid, {PRICE_UNIT}")
    last_price: float | int | None = Field(description=PRICE_UNIT)
    last_qty: int | None = Field(description=QTY_UNIT)
    sequence: int = Field(description=SEQUENCE)


class EngineOut(BaseModel):
    shard: int = Field(description="the shard")
    leader: str | None
    epoch: int | None = Field(description="the leader's fencing epoch: one more at each new term")
    committed_offset: str | None
    inputs: int = Field(description="journal entries committed")
    events: int = Field(description="events committed")
    state_hash: str | None
    state_hash_at: str | None = Field(default=None, description="the input id the state hash was taken at")
    tail_position: str


class CancelItemOut(BaseModel):
    order_id: int = Field(description=ID_BITS)
    status: int = Field(description="the HTTP status a cancel of this order alone would have had")
    order: OrderOut | None = None
    error: ErrorDetail | None = None


class CancelManyOut(BaseModel):
    items: list[CancelItemOut] = Field(description="one result per order id, in the request's order")


class CancelAllOut(BaseModel):
    market_id: str
    account: str
    cancelled: list[int]


class CandleOut(BaseModel):
    start_ms: int = Field(description="The candle's start, unix ms; it covers [start_ms, start_ms + interval).")
    open: float | int = Field(description=PRICE_UNIT)
    high: float | int = Field(description=PRICE_UNIT)
    low: float | int = Field(description=PRICE_UNIT)
    close: float | int = Field(description=PRICE_UNIT)
    volume: int = Field(description=f"{QTY_UNIT}: traded in the candle")
    trades: int = Field(description="how many trades")
    vwap: float | None = Field(description="Volume-weighted average price (ticks markets and binary cents).")


class CandlesPage(Page[CandleOut]):
    """Candles, newest first."""


class StatsOut(BaseModel):
    market_id: str
    last_price: float | int | None = Field(description=PRICE_UNIT)
    last_qty: int | None = Field(description=QTY_UNIT)
    last_trade_ms: int | None = Field(description="Unix ms of the last trade.")
    vwap_24h: float | None = Field(description=f"volume-weighted average price over 24 hours, {PRICE_UNIT}")
    volume_24h: int = Field(description=f"{QTY_UNIT}: traded in 24 hours")
    trades_24h: int = Field(description="trades in 24 hours")
    best_bid: float | int | None = Field(description=PRICE_UNIT)
    best_ask: float | int | None = Field(description=PRICE_UNIT)
    spread: float | int | None = Field(description=f"best ask - best bid, {PRICE_UNIT}")
    mid: float | None = Field(description=f"(best bid + best ask) / 2, {PRICE_UNIT}")


# --------------------------------------------------------------------------- accounts


class AccountIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    account: AccountId | None = Field(default=None, description="default: acct-…")
    name: str = Field(default="", max_length=128, description="a display name")


class KeyOut(BaseModel):
    account: str
    api_key: str = Field(description="shown this once: only its hash is kept")
    key_id: str = Field(description="names the key, to revoke it")


class AccountInfoOut(BaseModel):
    account: str
    name: str
    created_ms: int = Field(description="unix ms")
    key_ids: list[str]


class AccountsPage(Page[AccountInfoOut]):
    """Accounts, by id."""


class AmountIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: int = Field(gt=0, le=2**53, description="minor units (cents)")
    shard: int | None = Field(
        default=None, ge=0, lt=MAX_SHARDS, description="whose cash: the shard's (default: the first shard)"
    )


class ShardBalanceOut(BaseModel):
    shard: int = Field(description="the shard")
    total: int = Field(description="cents: cash on this shard, reserved or not")
    reserved: int = Field(description="cents set aside for resting orders in this shard's markets")
    free: int = Field(description="total - reserved: what this shard's orders and withdrawals may use")


class BalanceOut(BaseModel):
    account: str
    total: int = Field(description="cents: cash, reserved or not (on every shard)")
    reserved: int = Field(description="cents set aside for resting orders")
    free: int = Field(description="total - reserved: what new orders and withdrawals may use")
    shards: list[ShardBalanceOut] | None = Field(
        default=None, description="with several shards: each shard's part (an order spends its market's shard's)"
    )


class PositionOut(BaseModel):
    market_id: str
    scheme: str
    yes: int = Field(description="binary: YES contracts held; odds: what the account is paid if the selection wins")
    no: int = Field(description="binary: NO contracts held (short YES); odds: what it is paid if it loses")
    committed: int = Field(description="binary: YES contracts set aside for resting sells")
    stake: int = Field(description="odds: cents staked on backs")
    liability: int = Field(description="odds: cents at risk on lays")


class PositionsPage(Page[PositionOut]):
    """Positions, by market id."""


class OrdersPage(Page[OrderOut]):
    """Orders, newest first."""


class AccountTradeOut(BaseModel):
    trade_id: int = Field(description=ID_BITS)
    market_id: str
    price: float | int = Field(description=PRICE_UNIT)
    qty: int = Field(description=QTY_UNIT)
    side: str = Field(description="this account's side: buy/sell, or back/lay on odds markets")
    role: Literal["maker", "taker"]
    time_ms: int = Field(description="when it traded: unix ms, the engine's (journal) time")
    fee: int | None = Field(default=None, description=FEE_PAID)


class AccountTradesPage(Page[AccountTradeOut]):
    """An account's trades, newest first."""


class BalanceEntryOut(BaseModel):
    total: int = Field(description="cents after the change: the shard's cash, reserved or not")
    reserved: int = Field(description="cents after the change: set aside for resting orders")
    change: int = Field(description="cents: how much total moved")
    reason: str = Field(description="why: DEPOSIT, WITHDRAW, TRADE, SETTLEMENT, ... (the engine's BalanceReason)")
    market_id: str | None = Field(description="the market it concerns; null for deposits, withdrawals, transfers")
    shard: int = Field(description="the shard whose cash changed")
    time_ms: int = Field(description="unix ms, the engine's (journal) time")


class HistoryPage(Page[BalanceEntryOut]):
    """An account's balance changes, newest first."""


class TransferIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: int = Field(gt=0, le=2**53, description="cents to move")
    from_shard: int = Field(ge=0, lt=MAX_SHARDS, description="the shard whose cash it leaves")
    to_shard: int = Field(ge=0, lt=MAX_SHARDS, description="the shard whose cash it joins")
    transfer_id: str | None = Field(
        default=None,
        max_length=MAX_ID_LENGTH,
        pattern=ACCOUNT_PATTERN,
        description="your id for it (default: a new one): the same id again moves nothing twice",
    )


class TransferOut(BaseModel):
    transfer_id: str
    account: str
    amount: int = Field(description="cents")
    from_shard: int = Field(description="the shard whose cash it leaves")
    to_shard: int = Field(description="the shard whose cash it joins")
    status: Literal["in_flight", "done", "returning", "returned"] = Field(
        description="in_flight: taken out, on its way; done: paid in; returning: refused there, on its way "
        "back; returned: paid back"
    )


class HeartbeatIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timeout_ms: int = Field(
        ge=0,
        le=MAX_HEARTBEAT_TIMEOUT_MS,
        description="cancel all my resting orders unless another heartbeat comes within this; 0 disarms",
    )


class HeartbeatOut(BaseModel):
    account: str
    deadline_ms: int | None = Field(description="unix ms when the orders go if no heartbeat comes; null: disarmed")
