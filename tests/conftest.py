"""Shared test helpers: a small driver that numbers commands the way the input journal does."""

from __future__ import annotations

from typing import Any

import pytest

from matchbox.engine import Engine
from matchbox.engine.types import (
    CancelOrder,
    Command,
    CreateMarket,
    Event,
    PlaceOrder,
    Side,
    TickScheme,
)


class Driver:
    """Feeds an engine with seq/ts stamped commands and checks invariants after every step."""

    def __init__(self) -> None:
        self.engine = Engine()
        self.seq = 0
        self.ts = 1_000
        self.next_order_id = 0

    def apply(self, command_type: type[Command], **fields: Any) -> list[Event]:
        self.seq += 1
        self.ts = fields.pop("ts", self.ts + 1)
        events = self.engine.apply(command_type(seq=self.seq, ts=self.ts, **fields))
        self.engine.check_invariants()
        return events

    def market(self, market_id: str = "m", scheme: TickScheme = TickScheme.TICKS, **fields: Any) -> list[Event]:
        if scheme is TickScheme.TICKS:
            fields.setdefault("max_tick", 1000)
        return self.apply(CreateMarket, market_id=market_id, scheme=scheme, **fields)

    def place(
        self, side: Side, price: int, qty: int, account: str = "a", market_id: str = "m", **fields: Any
    ) -> list[Event]:
        if "order_id" not in fields:
            self.next_order_id += 1
            fields["order_id"] = self.next_order_id
        return self.apply(PlaceOrder, market_id=market_id, account=account, side=side, price=price, qty=qty, **fields)

    def cancel(self, order_id: int, **fields: Any) -> list[Event]:
        return self.apply(CancelOrder, order_id=order_id, **fields)


@pytest.fixture
def driver() -> Driver:
    d = Driver()
    d.market()
    return d
