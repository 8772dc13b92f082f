"""Orders: place (one or a batch), look up, cancel, reduce, cancel all. A placement waits, bounded,
for the engine's outcome and answers with the order's state and fills, or 202 pending."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Annotated

import msgspec
import redis
from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from matchbox.api.auth import Caller, acting_as, caller_of
from matchbox.api.codes import Code
from matchbox.api.errors import (
    INTERNAL_MESSAGE,
    KEY_ERRORS,
    REDIS_DOWN,
    ApiError,
    BodyTooLarge,
    error_body,
    rejected_by_engine,
)
from matchbox.api.models import (
    NS_PER_MS,
    SELF_TRADE,
    AccountId,
    AmendIn,
    BatchIn,
    BatchItemOut,
    BatchOut,
    CancelAllOut,
    CancelItemOut,
    CancelManyIn,
    CancelManyOut,
    ErrorBody,
    FillOut,
    MarketId,
    OrderIn,
    OrderOut,
)
from matchbox.api.prices import PriceError, price_out, side_of, side_word, tick_of
from matchbox.api.projection import MarketView, OrderView, Projection
from matchbox.api.routing import EdgeRoute
from matchbox.api.services import (
    Services,
    ShardLink,
    engine_events,
    engine_outcome,
    json_response,
    market_of,
    outcome_or_nothing,
    refusal_status,
    services_of,
    submit_many,
    submit_one,
)
from matchbox.bus.journal import Request as JournalRequest
from matchbox.bus.journal import Submission
from matchbox.consumers.queries import AccountOrder
from matchbox.engine.ids import shard_of
from matchbox.engine.ledger import INT64_MAX
from matchbox.engine.rules import LIVE_STATUSES, Invalid, check_order
from matchbox.engine.types import (
    AmendOrder,
    CancelAll,
    CancelOrder,
    CancelOrders,
    CancelReason,
    Command,
    Event,
    MarketCreated,
    MarketState,
    OrderCancelled,
    OrderKind,
    OrderStatus,
    PlaceOrder,
    ReduceOrder,
    Rejected,
    RejectReason,
    TickScheme,
    TimeInForce,
)

log = logging.getLogger(__name__)
router = APIRouter(tags=["orders"], route_class=EdgeRoute)
OrderId = Annotated[int, Path(ge=1, le=INT64_MAX, description="the order id the placement answered with")]


def order_out(services: Services, order: OrderView, client_order_id: str | None = None) -> OrderOut:
    market = services.projection.markets.get(order.market_id)
    scheme = market.scheme if market else TickScheme.TICKS
    rejected = order.status is OrderStatus.REJECTED
    return OrderOut(
        order_id=order.order_id,
        market_id=order.market_id,
        account=order.account,
        side=None if rejected else side_word(scheme, order.side),
        price=None if rejected or order.kind is OrderKind.MARKET else price_out(scheme, order.price),
        qty=None if rejected else order.qty,
        remaining=order.remaining,
        filled=order.filled,
        status=order.status,
        tif=None if rejected else order.tif.name,
        type=None if rejected else order.kind.name.lower(),
        post_only=order.post_only,
        on_suspend="lapse" if order.lapse else "persist",
        fills=[
            FillOut(
                trade_id=f.trade_id,
                price=price_out(scheme, f.price),
                qty=f.qty,
                role=f.role,
                time_ms=f.ts // NS_PER_MS,
                fee=f.fee or None,
            )
            for f in order.fills
        ],
        reject_reason=order.reject_reason.name if order.reject_reason is not None else None,
        cancel_reason=order.cancel_reason.name if order.cancel_reason is not None else None,
        client_order_id=client_order_id,
        entry_id=order.entry_id,
    )


def stored_order_out(services: Services, account: str, row: AccountOrder) -> OrderOut:
    """An order as the persistence consumer stored it (history: fills are under /account/trades)."""
    market = services.projection.markets.get(row.market_id)
    scheme = market.scheme if market else TickScheme.TICKS
    market_order = row.kind is OrderKind.MARKET
    return OrderOut(
        order_id=row.order_id,
        market_id=row.market_id,
        account=account,
        side=None if row.side is None else side_word(scheme, row.side),
        price=None if row.price is None or market_order else price_out(scheme, row.price),
        qty=row.qty,
        remaining=row.remaining,
        filled=row.filled,
        status=row.status,
        tif=None if row.tif is None else row.tif.name,
        type=None if row.kind is None else row.kind.name.lower(),
        post_only=bool(row.post_only),
        on_suspend="lapse" if row.lapse else "persist",
        reject_reason=None if row.reject_reason is None else row.reject_reason.name,
        cancel_reason=None if row.cancel_reason is None else row.cancel_reason.name,
    )


def _pending(submission: Submission, body: OrderIn, command: PlaceOrder) -> OrderOut:
    qty = body.qty if body.qty is not None else (body.stake or 0)
    return OrderOut(
        order_id=submission.order_id,
        market_id=command.market_id,
        account=command.account,
        side=body.side,
        price=body.price if body.odds is None else float(body.odds),
        qty=qty,
        remaining=qty,
        filled=0,
        status=OrderStatus.PENDING,
        client_order_id=body.client_order_id,
        entry_id=submission.entry_id,
    )


def _place_command(services: Services, body: OrderIn, caller_account: str | None) -> PlaceOrder:
    """The engine command for an order request, or an ApiError naming the field at fault.

    The words are translated here (side, price or odds, qty or stake); whether the order is valid
    on its market is the engine's own rule, :func:`~matchbox.engine.rules.check_order`, asked
    early. It is asked without a time (``ts`` 0): a GTD expiry in the past is judged by the engine,
    on journal time, and comes back as a 422 (the API's clock could refuse an expiry the engine
    would take, wherever the two clocks differ).
    """
    if caller_account is not None:
        account = acting_as(caller_account, body.account)
    else:
        account = body.account or f"anon-{secrets.token_hex(6)}"
    market_id = body.market_id or services.settings.default_market
    market = market_of(services, market_id)
    qty_field = "stake" if body.qty is None and market.scheme is TickScheme.ODDS else "qty"
    kind = OrderKind.MARKET if body.type == "market" else OrderKind.LIMIT
    try:
        side = side_of(market.scheme, body.side)
        if body.qty is not None and body.stake is not None:
            raise PriceError("stake", "give qty or stake, not both")
        qty = body.qty if body.qty is not None else body.stake
        if qty is None:
            raise PriceError(qty_field, f"{qty_field} is required", Code.MISSING_FIELD)
        price = 0 if kind is OrderKind.MARKET else tick_of(market.scheme, body.price, body.odds)
    except PriceError as exc:
        raise ApiError(400, exc.code, exc.message, exc.field) from None
    tif = TimeInForce[body.tif] if body.tif else _DEFAULT_TIF[kind]
    expires_at = 0 if body.expires_at_ms is None else body.expires_at_ms * NS_PER_MS
    command = PlaceOrder(
        seq=0,
        ts=0,
        market_id=market_id,
        order_id=0,
        account=account,
        side=side,
        price=price,
        qty=qty,
        tif=tif,
        kind=kind,
        post_only=body.post_only,
        expires_at=expires_at,
        stp=None if body.self_trade is None else SELF_TRADE[body.self_trade],
        lapse=body.on_suspend == "lapse",
    )
    invalid = check_order(market, command)
    if invalid is not None:
        field = qty_field if invalid.field == "qty" else api_field(invalid.field)
        raise ApiError(400, invalid.reason, _invalid_message(market, command, invalid, field), field)
    if market.state is not MarketState.OPEN:
        raise ApiError(
            409,
            RejectReason.MARKET_NOT_OPEN,
            f"market {market_id!r} is {market.state.name.lower()}: it takes no orders",
            "market_id",
        )
    return command


_DEFAULT_TIF = {OrderKind.LIMIT: TimeInForce.GTC, OrderKind.MARKET: TimeInForce.IOC}


def _invalid_message(market: MarketView, command: PlaceOrder, invalid: Invalid, field: str) -> str:
    """What the client is told of a refusal by :func:`check_order`."""
    match invalid.reason:
        case RejectReason.INVALID_QUANTITY:
            return f"{field} must be > 0"
        case RejectReason.QUANTITY_OVER_MAX:
            return f"{field} {command.qty} is over this market's maximum of {market.max_qty}"
        case RejectReason.INVALID_PRICE:
            unit = "cents (1..99)" if market.scheme is TickScheme.BINARY else f"ticks (1..{market.max_tick})"
            return f"price {command.price} is off this market's ladder: {unit}"
        case RejectReason.INVALID_EXPIRY if command.tif is TimeInForce.GTD:
            return "GTD needs expires_at_ms, a future unix time in milliseconds"
        case RejectReason.INVALID_EXPIRY:
            return "expires_at_ms is for GTD orders only"
    if invalid.field == "tif":
        return "a market order is IOC or FOK (the default), never GTC or GTD"
    if command.kind is OrderKind.MARKET:
        return "a market order cannot be post-only"
    return "post-only needs GTC or GTD"


async def _order_result(
    services: Services, submission: Submission, body: OrderIn, command: PlaceOrder
) -> tuple[int, OrderOut | None, ErrorBody | None]:
    """(status, order, error) once the engine has spoken, or 202 pending after the timeout."""
    if submission.status == "conflict":
        message = "this client_order_id was used with different content"
        return 409, None, error_body(Code.CLIENT_ORDER_ID_REUSED, message, "client_order_id", submission.order_id)
    known = services.projection.orders.get(submission.order_id)
    if (
        submission.status == "dup"
        and known is not None
        and known.status not in (OrderStatus.ACCEPTED, OrderStatus.REJECTED)
    ):
        return 200, order_out(services, known, body.client_order_id), None  # a retry: the first outcome
    events = await _outcome(services, submission)
    if events is None:
        return 202, _pending(submission, body, command), None
    rejected = next((e for e in events if isinstance(e, Rejected)), None)
    if rejected is not None:
        services.metrics.outcomes["rejected"].inc()
        field = _reject_field(services, command, rejected)
        return 422, None, rejected_by_engine(422, rejected.reason, field, submission.order_id).body
    services.metrics.outcomes["accepted"].inc()
    order = services.projection.orders.get(submission.order_id) or _replayed(services, command, submission, events)
    if order is None:  # none of its events is left to tell (an output stream trimmed under it)
        return 202, _pending(submission, body, command), None
    status = 200 if submission.status == "dup" else 201
    return status, order_out(services, order, body.client_order_id), None


async def _outcome(services: Services, submission: Submission) -> list[Event] | None:
    """The events of the submission's entry, or None if the engine has not spoken in time. A
    retry's entry may be long committed and its outcome gone from the tail's window of recent
    ones: outcome_or_nothing reads it back from the output stream then."""
    if submission.status == "dup":
        return await outcome_or_nothing(services, submission)
    tail = services.shards[submission.shard].tail
    return await tail.outcome(submission.entry_id, services.settings.outcome_timeout)


def _replayed(services: Services, command: PlaceOrder, submission: Submission, events: list[Event]) -> OrderView | None:
    """The order as the events of its own entry left it, for one finished so long ago that the
    live projection has dropped it: a retry then answers with the first outcome. The events are
    folded by the live projection's rules, into a projection of their own that knows the market."""
    market = services.projection.markets.get(command.market_id)
    if market is None:
        return None
    replay = Projection()
    created = MarketCreated(
        seq=0,
        ts=0,
        market_id=market.market_id,
        scheme=market.scheme,
        min_tick=market.min_tick,
        max_tick=market.max_tick,
        max_qty=market.max_qty,
        stp=market.stp,
        collateral=market.collateral,
    )
    for event in (created, *events):
        replay.apply(event, 0, "", submission.entry_id)
    return replay.orders.get(submission.order_id)


def _reject_field(services: Services, command: PlaceOrder, rejected: Rejected) -> str | None:
    """The request field an engine rejection concerns: for the order's own fields (a GTD expiry
    that engine time had passed), the one check_order names at the engine's time; else the
    matching's (below)."""
    market = services.projection.markets.get(command.market_id)
    if market is not None:
        invalid = check_order(market, msgspec.structs.replace(command, ts=rejected.ts))
        if invalid is not None and invalid.reason is rejected.reason:
            return api_field(invalid.field)
    return _REJECT_FIELDS.get(rejected.reason)


def api_field(engine_field: str) -> str:
    """The request field an engine rule's field is given as (times in unix ms, named so)."""
    return "expires_at_ms" if engine_field == "expires_at" else engine_field


_REJECT_FIELDS = {  # the reasons that only the market's state or the book can give
    RejectReason.UNKNOWN_MARKET: "market_id",
    RejectReason.MARKET_NOT_OPEN: "market_id",
    RejectReason.POST_ONLY_WOULD_TAKE: "post_only",
    RejectReason.FOK_CANNOT_FILL: "tif",
    RejectReason.SELF_TRADE: "account",
    RejectReason.INSUFFICIENT_FUNDS: "qty",
}


@router.post("/orders", status_code=201, response_model=OrderOut, responses={**KEY_ERRORS, 202: {"model": OrderOut}})
async def place_order(request: Request, body: OrderIn, caller: Caller) -> Response:
    """Place an order; answers with its state and fills once the engine has matched it (202 if it is slow)."""
    status, payload = await _place(services_of(request), body, caller)
    return json_response(status, payload)


async def _place(
    services: Services, body: OrderIn, caller_account: str | None, received_ns: int = 0
) -> tuple[int, OrderOut | ErrorBody]:
    received_ns = received_ns or time.monotonic_ns()
    command = _place_command(services, body, caller_account)
    submission = await submit_one(services, command, body.client_order_id)
    journalled_ns = time.monotonic_ns()
    status, order, error = await _order_result(services, submission, body, command)
    payload = error if error is not None else order
    assert payload is not None  # _order_result gives an order or an error
    if status == 201:  # a new order the engine answered: where its time went
        timing = services.shards[submission.shard].tail.timing(submission.entry_id)
        _observe_stages(services, received_ns, journalled_ns, timing, time.monotonic_ns())
    return status, payload


def _observe_stages(
    services: Services, received: int, journalled: int, timing: tuple[int, int, int] | None, answered: int
) -> None:
    """An order's stages in ``matchbox_order_stage_seconds``. The leader's stamps are its own
    monotonic clock's: they are compared with this process's only when they fall in order, which
    on one machine they do (one clock) and across machines they seldom would."""
    stages = services.metrics.stages
    stages["journal"].observe((journalled - received) / 1e9)
    stages["total"].observe((answered - received) / 1e9)
    if timing is None:
        return
    read, matched, seen = timing
    if received <= read <= matched <= seen <= answered:
        # the leader may read the entry before the journal's reply reaches this process: 0 then
        stages["to_engine"].observe(max(0, read - journalled) / 1e9)
        stages["match"].observe((matched - read) / 1e9)
        stages["commit"].observe((seen - matched) / 1e9)
        stages["answer"].observe((answered - seen) / 1e9)


class PlaceOrderFast:
    """``POST /orders`` straight from ASGI, the hot path of the whole API.

    Profiled under load, FastAPI's route matching and dependency solving cost as much as the rest
    of the request together, and its layers above the routes (telemetry, error and body-limit
    middleware) a good part of the rest: :class:`matchbox.api.app.Exchange` hands these requests
    here before any of them, inside only the body limit and the metrics. Who is calling is
    checked first, before a byte of the body is read (as EdgeRoute does for the routes). A body
    that validates is placed here by the same ``_place`` as the route; anything else (a body that
    fails validation) goes to FastAPI (``rest``) unchanged, so every answer, error wording and the
    OpenAPI schema stay the route's own. An unexpected error is a 500 ``INTERNAL`` in the error
    shape, as FastAPI's handler would answer it.
    """

    def __init__(self, rest: ASGIApp) -> None:
        self.rest = rest

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        extra: dict[str, str] = {}
        passed = False  # handed to FastAPI, which answers (or fails) on its own

        async def rest(scope: Scope, receive: Receive, send: Send) -> None:
            nonlocal passed
            passed = True
            await self.rest(scope, receive, send)

        try:
            answer = await self._serve(scope, receive, send, rest)
        except ApiError as exc:
            answer = exc.status, exc.body.model_dump_json(exclude_none=True).encode()
            extra = exc.headers or {}
        except redis.RedisError as exc:
            log.warning("redis error on POST /orders: %s", exc)
            answer = 503, REDIS_DOWN
        except BodyTooLarge:
            raise  # LimitAndMeasure answers it
        except Exception:
            if passed:
                raise
            log.exception("unexpected error on POST %s", scope["path"])
            answer = 500, error_body(Code.INTERNAL, INTERNAL_MESSAGE).model_dump_json(exclude_none=True).encode()
        if answer is None:  # FastAPI answered
            return
        status, content = answer
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    async def _serve(self, scope: Scope, receive: Receive, send: Send, rest: ASGIApp) -> tuple[int, bytes] | None:
        """The order's (status, JSON), or None once FastAPI has answered a body that fails validation."""
        received_ns = time.monotonic_ns()
        authorization = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None)
        caller_account = await caller_of(scope, authorization)
        raw = await _read_body(receive)
        try:
            body = OrderIn.model_validate_json(raw)
        except ValidationError:
            await rest(scope, _replay(raw, receive), send)
            return None
        status, payload = await _place(scope["app"].state.services, body, caller_account, received_ns)
        return status, payload.model_dump_json(exclude_none=True).encode()


async def _read_body(receive: Receive) -> bytes:
    """The whole body; the body limit's receive (LimitAndMeasure) stops it at 64 KiB."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(raw: bytes, receive: Receive) -> Receive:
    """A receive that gives the body already read once, then whatever the client sends next."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": raw, "more_body": False}

    return again


@router.post("/orders/batch", response_model=BatchOut, response_model_exclude_none=True, responses=KEY_ERRORS)
async def place_batch(request: Request, body: BatchIn, caller: Caller) -> BatchOut:
    """Up to 100 orders in one request and one round trip to Redis; each has its own outcome."""
    services = services_of(request)
    prepared: list[tuple[OrderIn, PlaceOrder] | ApiError] = []
    for item in body.orders:
        try:
            prepared.append((item, _place_command(services, item, caller)))
        except ApiError as exc:
            prepared.append(exc)
    valid = [p for p in prepared if not isinstance(p, ApiError)]
    submissions = iter(await submit_many(services, [JournalRequest(c, i.client_order_id) for i, c in valid]))
    pending: list[asyncio.Task[tuple[int, OrderOut | None, ErrorBody | None]] | ApiError] = []
    for p in prepared:
        if isinstance(p, ApiError):
            pending.append(p)
        else:
            item, command = p
            pending.append(asyncio.create_task(_order_result(services, next(submissions), item, command)))
    results = []
    for outcome in pending:
        if isinstance(outcome, ApiError):
            results.append(BatchItemOut(status=outcome.status, error=outcome.body.error))
        else:
            status, order, error = await outcome
            results.append(BatchItemOut(status=status, order=order, error=None if error is None else error.error))
    return BatchOut(items=results)


def _own_order(services: Services, order_id: int, caller_account: str | None, named: str | None) -> OrderView:
    """The order, if the caller may see it: with a key, only its own (another's is as unknown as
    a missing one); in open mode, any (or the named account's only, when one is named)."""
    owner = acting_as(caller_account, named) if caller_account is not None else named
    order = services.projection.orders.get(order_id)
    if order is None or (owner and order.account != owner):
        raise ApiError(404, RejectReason.UNKNOWN_ORDER, f"unknown order {order_id}", "order_id")
    return order


@router.get("/orders/{order_id}", response_model=OrderOut, response_model_exclude_none=True, responses=KEY_ERRORS)
async def get_order(request: Request, order_id: OrderId, caller: Caller) -> OrderOut:
    """An order's state, remaining quantity and fills."""
    services = services_of(request)
    return order_out(services, _own_order(services, order_id, caller, None))


@router.delete("/orders/{order_id}", response_model=OrderOut, response_model_exclude_none=True, responses=KEY_ERRORS)
async def cancel_order(
    request: Request, order_id: OrderId, caller: Caller, account: AccountId | None = None
) -> OrderOut:
    """Cancel a resting order."""
    services = services_of(request)
    order = _own_order(services, order_id, caller, account)
    account = caller or account
    if order.status not in LIVE_STATUSES:
        raise ApiError(
            409, RejectReason.ORDER_NOT_OPEN, f"order {order_id} is {order.status}: nothing to cancel", "order_id"
        )
    await engine_outcome(
        services, CancelOrder(seq=0, ts=0, order_id=order_id, account=account or ""), fields=_ORDER_FIELDS
    )
    return order_out(services, services.projection.orders[order_id])


@router.post("/orders/cancel", response_model=CancelManyOut, response_model_exclude_none=True, responses=KEY_ERRORS)
async def cancel_orders(request: Request, body: CancelManyIn, caller: Caller) -> CancelManyOut:
    """Cancel up to 100 orders in one request: one command per shard they are on, each order with its
    own result (200 and the order, or the status and error a cancel of it alone would have had)."""
    services = services_of(request)
    account = acting_as(caller, body.account) if caller is not None else body.account or ""
    by_shard: dict[int, list[int]] = {}
    for order_id in dict.fromkeys(body.order_ids):  # each once, in the order given
        by_shard.setdefault(shard_of(order_id), []).append(order_id)
    results: dict[int, CancelItemOut] = {}
    links: list[tuple[ShardLink, list[int]]] = []
    for number, ids in by_shard.items():
        link = services.shards.get(number)
        if link is None:
            for order_id in ids:
                error = ApiError(404, RejectReason.UNKNOWN_ORDER, f"unknown order {order_id}", "order_ids")
                results[order_id] = CancelItemOut(order_id=order_id, status=404, error=error.body.error)
        else:
            links.append((link, ids))
    outcomes = await asyncio.gather(
        *(
            engine_events(services, CancelOrders(seq=0, ts=0, order_ids=tuple(ids), account=account), link)
            for link, ids in links
        ),
        return_exceptions=True,
    )
    for (_, ids), events in zip(links, outcomes, strict=True):
        failed = events
        if isinstance(failed, redis.RedisError):  # its Redis is down: whether the cancels went in is not known
            message = "this shard's Redis is unavailable; retry shortly (a cancel sent twice cancels once)"
            failed = ApiError(503, Code.UNAVAILABLE, message, "order_ids")
        if isinstance(failed, ApiError):  # that shard has not answered (failing over?): its orders only
            for order_id in ids:
                results[order_id] = CancelItemOut(order_id=order_id, status=failed.status, error=failed.body.error)
            continue
        if isinstance(events, BaseException):
            raise events
        # the command's own cancels: a timer that fired just before it (an expiry, a dead-man
        # switch) cancelled its order, and the command then found that order no longer open
        cancelled = {e.order_id for e in events if isinstance(e, OrderCancelled) and e.reason is CancelReason.USER}
        refused = {e.order_id: e.reason for e in events if isinstance(e, Rejected)}
        for order_id in ids:
            view = services.projection.orders.get(order_id)
            if order_id in cancelled and view is not None:
                results[order_id] = CancelItemOut(order_id=order_id, status=200, order=order_out(services, view))
                continue
            reason = refused.get(order_id, RejectReason.ORDER_NOT_OPEN)
            error = rejected_by_engine(refusal_status(reason), reason, "order_ids", order_id)
            results[order_id] = CancelItemOut(order_id=order_id, status=error.status, error=error.body.error)
    return CancelManyOut(items=[results[order_id] for order_id in body.order_ids])


@router.patch("/orders/{order_id}", response_model=OrderOut, response_model_exclude_none=True, responses=KEY_ERRORS)
async def amend_order(request: Request, order_id: OrderId, body: AmendIn, caller: Caller) -> OrderOut:
    """Reduce a resting order (``reduce_by``, or a lower ``qty`` at its price: it keeps its place
    in the queue), or amend it: a new ``price``/``odds`` or more ``qty`` re-queues it as a new
    arrival, atomically (it may trade at once). ``qty`` is the order's new quantity counting what
    has filled (FIX's OrderQty): a fill that lands first is never traded twice, and a ``qty`` at or
    below what has filled cancels the rest. A refused amend (409) leaves the order as it was."""
    services = services_of(request)
    order = _own_order(services, order_id, caller, body.account)
    account = caller or body.account or ""
    if order.status not in LIVE_STATUSES:
        raise ApiError(
            409, RejectReason.ORDER_NOT_OPEN, f"order {order_id} is {order.status}: nothing to change", "order_id"
        )
    moving = body.price is not None or body.odds is not None
    if body.reduce_by is not None:
        if body.qty is not None or moving:
            raise ApiError(400, Code.INVALID_FIELD, "give reduce_by alone, or qty and/or price", "reduce_by")
        if body.reduce_by <= 0:
            raise ApiError(400, RejectReason.INVALID_QUANTITY, "give a quantity to take off (> 0)", "reduce_by")
        command: Command = ReduceOrder(seq=0, ts=0, order_id=order_id, reduce_by=body.reduce_by, account=account)
        await engine_outcome(services, command, fields=_ORDER_FIELDS | {RejectReason.INVALID_QUANTITY: "reduce_by"})
        return order_out(services, services.projection.orders[order_id])
    if body.qty is None and not moving:
        raise ApiError(400, Code.MISSING_FIELD, "give reduce_by, or qty and/or price (or odds)", "qty")
    price_field = "price" if body.price is not None else "odds"
    price = 0
    if moving:
        market = market_of(services, order.market_id)
        try:
            price = tick_of(market.scheme, body.price, body.odds)
        except PriceError as exc:
            raise ApiError(400, exc.code, exc.message, exc.field) from None
        if not market.min_tick <= price <= market.max_tick:  # 0 would mean "keep the price"
            raise ApiError(400, RejectReason.INVALID_PRICE, f"{price_field} is off this market's ladder", price_field)
    command = AmendOrder(
        seq=0,
        ts=0,
        order_id=order_id,
        account=account,
        price=price,
        qty=body.qty or 0,
        post_only=order.post_only if body.post_only is None else body.post_only,
        stp=None if body.self_trade is None else SELF_TRADE[body.self_trade],
    )
    what_moves = "qty" if body.qty is not None else price_field  # what made it a new arrival
    fields = _ORDER_FIELDS | {
        RejectReason.INVALID_PRICE: price_field,
        RejectReason.MARKET_NOT_OPEN: what_moves,
        RejectReason.INSUFFICIENT_FUNDS: what_moves,
    }
    await engine_outcome(services, command, fields=fields)
    return order_out(services, services.projection.orders[order_id])


_ORDER_FIELDS = {  # refusals of a change to an order by the engine, and the request field each names
    RejectReason.UNKNOWN_ORDER: "order_id",
    RejectReason.ORDER_NOT_OPEN: "order_id",
    RejectReason.MALFORMED_ID: "account",
    RejectReason.INVALID_QUANTITY: "qty",
    RejectReason.QUANTITY_OVER_MAX: "qty",
    RejectReason.POST_ONLY_WOULD_TAKE: "post_only",
    RejectReason.SELF_TRADE: "self_trade",
}


@router.delete("/orders", response_model=CancelAllOut, responses=KEY_ERRORS)
async def cancel_all(
    request: Request,
    market_id: MarketId,
    caller: Caller,
    account: AccountId | None = None,
) -> CancelAllOut:
    """Cancel every resting order of yours in a market (open mode: of the named account)."""
    services = services_of(request)
    account = acting_as(caller, account)
    market_of(services, market_id)
    events = await engine_outcome(services, CancelAll(seq=0, ts=0, market_id=market_id, account=account))
    cancelled = [e.order_id for e in events if isinstance(e, OrderCancelled)]
    return CancelAllOut(market_id=market_id, account=account, cancelled=cancelled)
