"""Market history from the analytics consumer's tables: candles and 24-hour statistics.

These read the SQL database the consumers write (``DATABASE_URL``, else SQLite in the data
folder), so they trail the live feed by the analytics group's lag. The routes are plain ``def``:
FastAPI runs them on its worker threads, where a blocking database call belongs.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from matchbox.api.errors import ERRORS, ApiError
from matchbox.api.models import CandleOut, StatsOut
from matchbox.api.prices import price_out
from matchbox.api.services import market_of, services_of
from matchbox.consumers import queries
from matchbox.engine.ledger import INT64_MAX
from matchbox.engine.types import TickScheme

router = APIRouter(tags=["market data"])

Interval = Literal["1s", "1m", "1h", "1d"]


@router.get("/markets/{market_id}/candles", response_model=list[CandleOut], responses=ERRORS)
def candles(
    request: Request,
    market_id: str,
    interval: Interval = "1m",
    start: Annotated[int | None, Query(alias="from", ge=0, le=INT64_MAX, description="Unix ms, inclusive.")] = None,
    end: Annotated[int | None, Query(alias="to", ge=0, le=INT64_MAX, description="Unix ms, exclusive.")] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[CandleOut]:
    """OHLCV candles, oldest first; without ``from``, the latest ``limit``. Intervals with no trade have none."""
    services = services_of(request)
    scheme = market_of(services, market_id).scheme
    if start is not None and end is not None and end <= start:
        raise ApiError(400, "to must be after from", "to")
    found = queries.candles(services.database(), market_id, interval, start, end, limit)
    return [
        CandleOut(
            start=c.start_ms,
            open=price_out(scheme, c.open),
            high=price_out(scheme, c.high),
            low=price_out(scheme, c.low),
            close=price_out(scheme, c.close),
            volume=c.volume,
            trades=c.trade_count,
            vwap=None if scheme is TickScheme.ODDS else round(c.vwap, 4),
        )
        for c in found
    ]


@router.get("/markets/{market_id}/stats", response_model=StatsOut, responses=ERRORS)
def stats(request: Request, market_id: str) -> StatsOut:
    """Last trade, 24-hour volume, trade count and VWAP, best bid and ask, spread and mid."""
    services = services_of(request)
    scheme = market_of(services, market_id).scheme
    found = queries.stats(services.database(), market_id, int(time.time() * 1000))
    if found is None:  # the analytics consumer has not seen the market yet
        return StatsOut(
            market_id=market_id,
            last_price=None,
            last_qty=None,
            last_trade_at=None,
            vwap_24h=None,
            volume_24h=0,
            trades_24h=0,
            best_bid=None,
            best_ask=None,
            spread=None,
            mid=None,
        )
    bid = None if found.best_bid is None else price_out(scheme, found.best_bid)
    ask = None if found.best_ask is None else price_out(scheme, found.best_ask)
    both = bid is not None and ask is not None
    vwap = found.vwap_24h
    return StatsOut(
        market_id=market_id,
        last_price=None if found.last_price is None else price_out(scheme, found.last_price),
        last_qty=found.last_qty,
        last_trade_at=found.last_trade_ms,
        vwap_24h=None if vwap is None or scheme is TickScheme.ODDS else round(vwap, 4),
        volume_24h=found.volume_24h,
        trades_24h=found.trades_24h,
        best_bid=bid,
        best_ask=ask,
        spread=round(ask - bid, 2) if both else None,  # type: ignore[operator]
        mid=(float(bid) + float(ask)) / 2 if both else None,  # type: ignore[arg-type]
    )
