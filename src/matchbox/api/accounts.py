"""Accounts: the admin side (create, keys, deposit, withdraw) and the caller's own view (balance,
positions, orders, trades, the dead-man heartbeat).

Balances and positions are the engine's, folded by this instance's projection from
``BalanceChanged`` and ``PositionChanged``: as live as the order book. Open orders come from the
projection too; finished orders and trades are history, read from the persistence consumer's
tables, so they trail the live feed by that group's lag.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from matchbox.api.auth import Admin, Caller, acting_as
from matchbox.api.errors import ADMIN_ERRORS, KEY_ERRORS, ApiError
from matchbox.api.models import (
    AccountId,
    AccountIn,
    AccountInfoOut,
    AccountTradeOut,
    AmountIn,
    BalanceOut,
    HeartbeatIn,
    HeartbeatOut,
    KeyOut,
    OrdersPage,
    PositionOut,
    ShardBalanceOut,
    TradesPage,
    TransferIn,
    TransferOut,
)
from matchbox.api.orders import order_out, stored_order_out
from matchbox.api.prices import price_out, side_word
from matchbox.api.projection import BalanceView, TransferView
from matchbox.api.routing import EdgeRoute
from matchbox.api.services import Services, engine_outcome, outcome_or_nothing, services_of, submit_one
from matchbox.bus.accounts import AccountError, IssuedKey
from matchbox.consumers import queries
from matchbox.consumers.queries import OrderFilter
from matchbox.engine.ids import ACCOUNT_PATTERN, MAX_ID_LENGTH
from matchbox.engine.types import Deposit, Heartbeat, HeartbeatSet, Rejected, RejectReason, TickScheme, Withdraw
from matchbox.engine.types import TransferOut as TransferOutCommand

router = APIRouter(tags=["accounts"], route_class=EdgeRoute)
NamedAccount = Annotated[
    AccountId | None, Query(alias="account", description="open mode only: whose account (with a key: yours)")
]
Limit = Annotated[int, Query(ge=1, le=1000, description="at most this many, newest first")]
Before = Annotated[
    int | None, Query(ge=1, le=2**63 - 1, description="the page after this cursor (a previous page's next)")
]


def _key_out(issued: IssuedKey) -> KeyOut:
    return KeyOut(account=issued.account, api_key=issued.api_key, key_id=issued.key_id)


def balance_out(services: Services, account: str) -> BalanceOut:
    """The account's cash: in all, and with several shards each shard's part."""
    held = services.projection.balances.get(account, {})
    parts = [
        ShardBalanceOut(shard=n, total=b.total, reserved=b.reserved, free=b.total - b.reserved)
        for n, b in ((n, held.get(n) or BalanceView(account)) for n in services.shards)
    ]
    total, reserved = sum(p.total for p in parts), sum(p.reserved for p in parts)
    shards = parts if len(parts) > 1 else None
    return BalanceOut(account=account, total=total, reserved=reserved, free=total - reserved, shards=shards)


# --------------------------------------------------------------------------- admin


@router.post("/admin/accounts", status_code=201, response_model=KeyOut, responses=ADMIN_ERRORS, dependencies=[Admin])
async def create_account(request: Request, body: AccountIn) -> KeyOut:
    """Create an account and its first API key (admin). The key is in this answer only."""
    services = services_of(request)
    try:
        issued = await asyncio.to_thread(lambda: services.accounts().create(body.account, body.name))
    except AccountError as exc:
        raise ApiError(409, str(exc), exc.field) from None
    return _key_out(issued)


@router.get("/admin/accounts", response_model=list[AccountInfoOut], responses=ADMIN_ERRORS, dependencies=[Admin])
async def list_accounts(request: Request) -> list[AccountInfoOut]:
    """Every account with the ids of its keys (admin). Keys themselves are never shown again."""
    services = services_of(request)
    found = await asyncio.to_thread(lambda: services.accounts().list())
    return [AccountInfoOut(account=a.account, name=a.name, created=a.created, key_ids=a.key_ids) for a in found]


@router.post(
    "/admin/accounts/{account}/keys",
    status_code=201,
    response_model=KeyOut,
    responses=ADMIN_ERRORS,
    dependencies=[Admin],
)
async def issue_key(request: Request, account: AccountId) -> KeyOut:
    """Another API key for an account (admin): for a lost key, or to rotate one."""
    services = services_of(request)
    try:
        issued = await asyncio.to_thread(lambda: services.accounts().issue_key(account))
    except AccountError as exc:
        raise ApiError(404, str(exc), exc.field) from None
    return _key_out(issued)


@router.delete("/admin/accounts/{account}/keys/{key_id}", status_code=204, responses=ADMIN_ERRORS, dependencies=[Admin])
async def revoke_key(request: Request, account: AccountId, key_id: str) -> Response:
    """Revoke a key (admin). Other instances stop accepting it within ``key_cache_seconds``."""
    services = services_of(request)
    if not await asyncio.to_thread(lambda: services.accounts().revoke(account, key_id)):
        raise ApiError(404, f"account {account!r} has no key {key_id!r}", "key_id")
    services.gate.forget_all()
    return Response(status_code=204)


@router.post(
    "/admin/accounts/{account}/deposit",
    response_model=BalanceOut,
    response_model_exclude_none=True,
    responses=ADMIN_ERRORS,
    dependencies=[Admin],
)
async def deposit(request: Request, account: AccountId, body: AmountIn) -> BalanceOut:
    """Add cents to an account (admin): the engine journals it like any command."""
    return await _cash(request, Deposit(seq=0, ts=0, account=account, amount=body.amount), body.shard)


@router.post(
    "/admin/accounts/{account}/withdraw",
    response_model=BalanceOut,
    response_model_exclude_none=True,
    responses=ADMIN_ERRORS,
    dependencies=[Admin],
)
async def withdraw(request: Request, account: AccountId, body: AmountIn) -> BalanceOut:
    """Take cents out of an account (admin); 409 INSUFFICIENT_FUNDS beyond its free balance."""
    return await _cash(request, Withdraw(seq=0, ts=0, account=account, amount=body.amount), body.shard)


async def _cash(request: Request, command: Deposit | Withdraw, shard: int | None) -> BalanceOut:
    services = services_of(request)
    await engine_outcome(services, command, services.first if shard is None else services.shard(shard))
    return balance_out(services, command.account)


# --------------------------------------------------------------------------- the caller's own


@router.get("/account", response_model=BalanceOut, response_model_exclude_none=True, responses=KEY_ERRORS)
async def my_balance(request: Request, caller: Caller, account: NamedAccount = None) -> BalanceOut:
    """Your cash in cents: total, reserved for resting orders, and free."""
    return balance_out(services_of(request), acting_as(caller, account))


@router.get("/account/positions", response_model=list[PositionOut], responses=KEY_ERRORS)
async def my_positions(request: Request, caller: Caller, account: NamedAccount = None) -> list[PositionOut]:
    """Your positions in collateral markets that are not settled."""
    services = services_of(request)
    held = services.projection.positions.get(acting_as(caller, account), {})
    markets = services.projection.markets
    return [
        PositionOut(
            market_id=p.market_id,
            scheme=markets[p.market_id].scheme.name.lower(),
            yes=p.yes,
            no=p.no,
            committed=p.committed,
            stake=p.stake,
            liability=p.liability,
        )
        for p in held.values()
    ]


@router.get("/account/orders", response_model=OrdersPage, responses=KEY_ERRORS)
def my_orders(
    request: Request,
    caller: Caller,
    state: OrderFilter = "open",
    limit: Limit = 100,
    before: Before = None,
    account: NamedAccount = None,
) -> OrdersPage:
    """Your orders, newest first. ``open`` is live; ``closed`` and ``all`` come from the database."""
    services = services_of(request)
    who = acting_as(caller, account)
    if state == "open":
        projection = services.projection
        # by id, newest first (the page cursor is an id): with shards, shard by shard
        ids = sorted((i for i in projection.live.get(who, {}) if before is None or i < before), reverse=True)
        page = ids[: limit + 1]
        items = [order_out(services, projection.orders[i]) for i in page[:limit]]
    else:
        rows = queries.account_orders(services.database(), who, state=state, before=before, limit=limit + 1)
        page = [row.order_id for row in rows]
        items = [stored_order_out(services, who, row) for row in rows[:limit]]
    return OrdersPage(items=items, next=page[limit - 1] if len(page) > limit else None)


@router.get("/account/trades", response_model=TradesPage, responses=KEY_ERRORS)
def my_trades(
    request: Request, caller: Caller, limit: Limit = 100, before: Before = None, account: NamedAccount = None
) -> TradesPage:
    """Your trades, newest first, from the database."""
    services = services_of(request)
    rows = queries.account_trades(services.database(), acting_as(caller, account), before=before, limit=limit + 1)
    markets = services.projection.markets
    items = []
    for row in rows[:limit]:
        market = markets.get(row.market_id)
        scheme = market.scheme if market else TickScheme.TICKS
        items.append(
            AccountTradeOut(
                trade_id=row.trade_id,
                market_id=row.market_id,
                price=price_out(scheme, row.price),
                qty=row.qty,
                side=side_word(scheme, row.side),
                role=row.role,
                timestamp=row.ts,
            )
        )
    return TradesPage(items=items, next=rows[limit - 1].trade_id if len(rows) > limit else None)


@router.post("/account/transfers", status_code=202, response_model=TransferOut, responses=KEY_ERRORS)
async def transfer(request: Request, body: TransferIn, caller: Caller, account: NamedAccount = None) -> TransferOut:
    """Move your cash from one shard to another (an order spends its market's shard's cash).

    Taken out of ``from_shard`` at once (409 INSUFFICIENT_FUNDS beyond its free balance), then paid
    in on ``to_shard`` by the relay, exactly once: 202 with ``status`` in_flight, or done if it was
    paid in while this waited; ``GET /account/transfers/{transfer_id}`` follows it. The same
    ``transfer_id`` again moves nothing more and answers with that transfer."""
    services = services_of(request)
    who = acting_as(caller, account)
    source = services.shard(body.from_shard, "from_shard")
    services.shard(body.to_shard, "to_shard")  # a 404 for a shard this exchange does not have
    if body.from_shard == body.to_shard:
        raise ApiError(400, "from_shard and to_shard are the same shard", "to_shard")
    client_id = body.transfer_id or secrets.token_hex(8)
    command = TransferOutCommand(
        seq=0,
        ts=0,
        account=who,
        amount=body.amount,
        transfer_id=transfer_key(who, client_id),
        to_shard=body.to_shard,
    )
    submission = await submit_one(services, command, f"transfer:{client_id}", shard=source)
    if submission.status == "conflict":
        raise ApiError(409, "this transfer_id was used for another transfer", "transfer_id")
    events = await outcome_or_nothing(services, submission)
    if events is None:  # journalled: taken out or refused, once; the same request again tells which
        raise ApiError(503, f"the engine has not answered yet: send it again with transfer_id {client_id!r}")
    rejected = next((e for e in events if isinstance(e, Rejected)), None)
    if rejected is not None and rejected.reason is not RejectReason.DUPLICATE_TRANSFER:
        raise ApiError(
            409,
            f"rejected by the engine: {rejected.reason.name.lower().replace('_', ' ')}",
            _TRANSFER_FIELDS.get(rejected.reason),
            reason=rejected.reason.name,
            code=int(rejected.reason),
        )
    return _transfer_out(services, who, client_id, body)


_TRANSFER_FIELDS = {RejectReason.INSUFFICIENT_FUNDS: "amount", RejectReason.INVALID_AMOUNT: "amount"}


@router.get("/account/transfers/{transfer_id}", response_model=TransferOut, responses=KEY_ERRORS)
async def get_transfer(
    request: Request,
    transfer_id: Annotated[str, Path(max_length=MAX_ID_LENGTH, pattern=ACCOUNT_PATTERN)],
    caller: Caller,
    account: NamedAccount = None,
) -> TransferOut:
    """A transfer of yours between shards, and how far it got."""
    services = services_of(request)
    who = acting_as(caller, account)
    known = services.projection.transfers.get(transfer_key(who, transfer_id))
    if known is None:
        raise ApiError(404, f"unknown transfer {transfer_id!r}", "transfer_id")
    return _transfer_answer(transfer_id, known)


def transfer_key(account: str, client_id: str) -> str:
    """The engine's transfer id: the client's, under its account (so no account's id meets another's)."""
    return f"{account}:{client_id}"


def _transfer_out(services: Services, who: str, client_id: str, body: TransferIn) -> TransferOut:
    key = transfer_key(who, client_id)
    known = services.projection.transfers.get(key)
    if known is None:  # taken out, but the tail has not folded it yet: it is on its way
        known = TransferView(key, who, body.amount, body.from_shard, body.to_shard)
    return _transfer_answer(client_id, known)


def _transfer_answer(client_id: str, known: TransferView) -> TransferOut:
    return TransferOut(
        transfer_id=client_id,
        account=known.account,
        amount=known.amount,
        from_shard=known.from_shard,
        to_shard=known.to_shard,
        status=known.status,
    )


@router.post("/account/heartbeat", response_model=HeartbeatOut, responses=KEY_ERRORS)
async def heartbeat(request: Request, body: HeartbeatIn, caller: Caller, account: NamedAccount = None) -> HeartbeatOut:
    """The dead-man switch: unless another heartbeat comes within ``timeout_ms``, the engine
    cancels all your resting orders in every market. Send one every few seconds; 0 disarms."""
    services = services_of(request)
    return await arm(services, acting_as(caller, account), body.timeout_ms)


async def arm(services: Services, account: str, timeout_ms: int) -> HeartbeatOut:
    """Arm (or disarm) the switch on every shard, each by its own engine's time; the deadline
    answered is the earliest."""
    command = Heartbeat(seq=0, ts=0, account=account, timeout_ms=timeout_ms)
    answers = await asyncio.gather(*(engine_outcome(services, command, link) for link in services.shards.values()))
    deadlines = [e.deadline for events in answers for e in events if isinstance(e, HeartbeatSet) and e.deadline]
    return HeartbeatOut(account=account, deadline=min(deadlines) // 1_000_000 if deadlines else None)
