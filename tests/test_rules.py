"""matchbox.engine.rules: an order's status and validity, and the SQL twin of the status rule."""

from __future__ import annotations

import itertools

import pytest
import sqlalchemy as sa

from matchbox.api.projection import Projection
from matchbox.consumers.persistence import _status_sql
from matchbox.engine import Engine
from matchbox.engine.rules import check_order, order_status
from matchbox.engine.types import (
    CreateMarket,
    Event,
    MarketCreated,
    OrderKind,
    OrderStatus,
    PlaceOrder,
    Rejected,
    RejectReason,
    Side,
    TickScheme,
    TimeInForce,
)

# every combination the status rule can meet: no reason or one, and quantities at and around 0
REJECT_REASONS = (None, int(RejectReason.INVALID_PRICE))
CANCEL_REASONS = (None, 0, 4)
QUANTITIES = (0, 1, 7)
INPUTS = list(itertools.product(REJECT_REASONS, CANCEL_REASONS, QUANTITIES, QUANTITIES))


def _sql_value(value: int | None) -> sa.ColumnElement[int]:
    return sa.literal_column("NULL" if value is None else str(value))


def test_the_sql_twin_of_order_status_agrees_on_every_input(database: sa.Engine) -> None:
    expected = []
    cases = []
    for reject, cancel, remaining, filled in INPUTS:
        merged = {
            "reject_reason": _sql_value(reject),
            "cancel_reason": _sql_value(cancel),
            "remaining": _sql_value(remaining),
            "filled": _sql_value(filled),
        }
        cases.append(_status_sql(merged))
        status = order_status(
            rejected=reject is not None, cancelled=cancel is not None, filled=filled, remaining=remaining
        )
        expected.append(status.value)
    with database.connect() as connection:
        found = list(connection.execute(sa.select(*cases)).one())
    assert found == expected
    assert set(found) == {"rejected", "cancelled", "filled", "partially_filled", "open"}  # every branch met


def test_an_order_is_accepted_until_the_engine_tells_how_its_placement_ended() -> None:
    untold = order_status(rejected=False, cancelled=False, filled=0, remaining=5, told=False)
    assert untold is OrderStatus.ACCEPTED
    assert (
        order_status(rejected=False, cancelled=False, filled=2, remaining=3, told=False) is OrderStatus.PARTIALLY_FILLED
    )
    assert order_status(rejected=False, cancelled=False, filled=0, remaining=5) is OrderStatus.OPEN


MARKET = CreateMarket(seq=1, ts=1, market_id="m", scheme=TickScheme.TICKS, max_tick=100, max_qty=50)


def _order(**fields: object) -> PlaceOrder:
    base: dict[str, object] = {"seq": 2, "ts": 1_000, "market_id": "m", "order_id": 1, "account": "ann"}
    base.update({"side": Side.BUY, "price": 10, "qty": 5})
    base.update(fields)
    return PlaceOrder(**base)  # type: ignore[arg-type]


CASES = [
    (_order(), None),
    (_order(qty=0), (RejectReason.INVALID_QUANTITY, "qty")),
    (_order(qty=51), (RejectReason.QUANTITY_OVER_MAX, "qty")),
    (_order(price=0), (RejectReason.INVALID_PRICE, "price")),
    (_order(price=101), (RejectReason.INVALID_PRICE, "price")),
    (_order(kind=OrderKind.MARKET, price=0, tif=TimeInForce.IOC), None),
    (_order(kind=OrderKind.MARKET, tif=TimeInForce.GTC), (RejectReason.INVALID_ORDER_TYPE, "tif")),
    (
        _order(kind=OrderKind.MARKET, tif=TimeInForce.FOK, post_only=True),
        (RejectReason.INVALID_ORDER_TYPE, "post_only"),
    ),
    (_order(tif=TimeInForce.IOC, post_only=True), (RejectReason.INVALID_ORDER_TYPE, "post_only")),
    (_order(tif=TimeInForce.GTD), (RejectReason.INVALID_EXPIRY, "expires_at")),
    (_order(tif=TimeInForce.GTD, expires_at=1_000), (RejectReason.INVALID_EXPIRY, "expires_at")),
    (_order(tif=TimeInForce.GTD, expires_at=1_001), None),
    (_order(expires_at=5_000), (RejectReason.INVALID_EXPIRY, "expires_at")),
]


@pytest.mark.parametrize(("order", "expected"), CASES)
def test_check_order_is_what_the_engine_rejects(order: PlaceOrder, expected: tuple[RejectReason, str] | None) -> None:
    engine = Engine()
    (created,) = engine.apply(MARKET)
    assert isinstance(created, MarketCreated)
    assert check_order(created, order) == expected  # the spec as the events state it, as the API has it
    events = engine.apply(order)
    reasons = [e.reason for e in events if isinstance(e, Rejected)]
    assert reasons == ([] if expected is None else [expected[0]])


def _fold(events: list[Event]) -> list[str]:
    projection = Projection()
    seen = []
    for n, event in enumerate(events, 1):
        for update in projection.apply(event, n, f"{n}-0", "1-0"):
            if hasattr(update, "order_id") and getattr(update, "order_id", None) == 2:
                seen.append(str(update.status))  # type: ignore[union-attr]
    return seen


def test_the_projection_tells_an_order_status_by_the_engine_rule() -> None:
    engine = Engine()
    events = engine.apply(MARKET)
    events += engine.apply(_order(order_id=1, side=Side.SELL, price=10, qty=2, account="bob"))
    events += engine.apply(_order(order_id=2, price=10, qty=5))
    events += engine.apply(_order(order_id=3, side=Side.SELL, price=10, qty=3, account="bob", ts=2_000))
    assert _fold(events) == ["accepted", "partially_filled", "partially_filled", "filled"]
