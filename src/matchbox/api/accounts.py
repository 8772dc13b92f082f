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
from matchbox.api.codes import Code
from matchbox.api.errors import ADMIN_ERRORS, KEY_ERRORS, ApiError, rejected_by_engine
from matchbox.api.models import (
    NS_PER_MS,
    AccountId,
    AccountIn,
    AccountInfoOut,
    AccountsPage,
    AccountTradeOut,
    AccountTradesPage,
    AmountIn,
    BalanceEntryOut,
    BalanceOut,
    HeartbeatIn,
    HeartbeatOut,
    HistoryPage,
    KeyOut,
    MarketId,
    OrdersPage,
    PositionOut,
    PositionsPage,
    ShardBalanceOut,
    TransferIn,
    TransferOut,
)
from matchbox.api.orders import order_out, stored_order_out
from matchbox.api.pages import Cursor, FromMs, Limit, ToMs, int_cursor, page, time_range
from matchbox.api.prices import price_out, side_word
from matchbox.api.projection import BalanceView, TransferView
from matchbox.api.routing import EdgeRoute
from matchbox.api.services import Services, engine_outcome, outcome_or_nothing, services_of, submit_one
from matchbox.bus.accounts import AccountError, AccountInfo, IssuedKey
from matchbox.consumers import queries
from matchbox.consumers.queries import OrderFilter
from matchbox.engine.ids import ACCOUNT_PATTERN, MAX_ID_LENGTH, shard_of
from matchbox.engine.types import Deposit, Heartbeat, HeartbeatSet, Rejected, RejectReason, TickScheme, Withdraw
from matchbox.engine.types import TransferOut as TransferOutCommand

router = APIRouter(tags=["accounts"], route_class=EdgeRoute)
NamedAccount = Annotated[
    AccountId | None, Query(alias="account", description="open mode only: whose account (with a key: yours)")
]


def _account_info(found: AccountInfo) -> AccountInfoOut:
    return AccountInfoOut(account=found.account, name=found.name, created_ms=found.created, key_ids=found.key_ids)


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
        if "exists" in str(exc):
            raise ApiError(409, Code.ACCOUNT_EXISTS, str(exc), "account") from None
        raise ApiError(400, Code.INVALID_FIELD, str(exc), "account") from None
    return _key_out(issued)


@router.get("/admin/accounts", response_model=AccountsPage, responses=ADMIN_ERRORS, dependencies=[Admin])
async def list_accounts(request: Request, limit: Limit = 100, cursor: Cursor = None) -> AccountsPage:
    """Accounts by id, with the ids of their keys (admin). Keys themselves are never shown again."""
    services = services_of(request)
    found = await asyncio.to_thread(lambda: services.accounts().page(cursor, limit + 1))
    items, following = page(found, limit, lambda a: a.account)
    return AccountsPage(
        items=[_account_info(a) for a in items],
        next=following,
    )


@router.get("/admin/accounts/{account}", response_model=AccountInfoOut, responses=ADMIN_ERRORS, dependencies=[Admin])
async def get_account(request: Request, account: AccountId) -> AccountInfoOut:
    """One account with the ids of its keys (admin)."""
    services = services_of(request)
    found = await asyncio.to_thread(lambda: services.accounts().get(account))
    if found is None:
        raise ApiError(404, Code.UNKNOWN_ACCOUNT, f"unknown account {account!r}", "account")
    return _account_info(found)


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
        raise ApiError(404, Code.UNKNOWN_ACCOUNT, str(exc), "account") from None
    return _key_out(issued)


@router.delete("/admin/accounts/{account}/keys/{key_id}", status_code=204, responses=ADMIN_ERRORS, dependencies=[Admin])
async def revoke_key(request: Request, account: AccountId, key_id: str) -> Response:
    """Revoke a key (admin). Other instances stop accepting it within ``key_cache_seconds``."""
    services = services_of(request)
    if not await asyncio.to_thread(lambda: services.accounts().revoke(account, key_id)):
        raise ApiError(404, Code.UNKNOWN_KEY, f"account {account!r} has no key {key_id!r}", "key_id")
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


@router.get("/account/positions", response_model=PositionsPage, responses=KEY_ERRORS)
async def my_positions(
    request: Request, caller: Caller, limit: Limit = 100, cursor: Cursor = None, account: NamedAccount = None
) -> PositionsPage:
    """Your positions in collateral markets that are not settled, by market id."""
    services = services_of(request)
    held = services.projection.positions.get(acting_as(caller, account), {})
    markets = services.projection.markets
    found = sorted((p for p in held.values() if cursor is None or p.market_id > cursor), key=lambda p: p.market_id)
    items, after = page(found[: limit + 1], limit, lambda p: p.market_id)
    return PositionsPage(
        items=[
            PositionOut(
                market_id=p.market_id,
                scheme=markets[p.market_id].scheme.name.lower(),
                yes=p.yes,
                no=p.no,
                committed=p.committed,
                stake=p.stake,
                liability=p.liability,
            )
            for p in items
        ],
        next=after,
    )


@router.get("/account/orders", response_model=OrdersPage, responses=KEY_ERRORS)
def my_orders(
    request: Request,
    caller: Caller,
    state: Annotated[
        OrderFilter, Query(description="open: live (from the live view); closed, all: from the database")
    ] = "open",
    market_id: Annotated[MarketId | None, Query(description="only this market's")] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
    account: NamedAccount = None,
) -> OrdersPage:
    """Your orders, newest first. ``open`` is live; ``closed`` and ``all`` come from the database."""
    services = services_of(request)
    who, before = acting_as(caller, account), int_cursor(cursor)
    if state == "open":
        projection = services.projection
        ids = sorted(
            (
                i
                for i in projection.live.get(who, {})
                if (before is None or i < before) and (market_id is None or projection.orders[i].market_id == market_id)
            ),
            reverse=True,
        )
        chosen, after = page(ids[: limit + 1], limit, lambda i: i)
        return OrdersPage(items=[order_out(services, projection.orders[i]) for i in chosen], next=after)
    rows = queries.account_orders(
        services.database(), who, state=state, before=before, limit=limit + 1, market_id=market_id
    )
    found, after = page(rows, limit, lambda row: row.order_id)
    return OrdersPage(items=[stored_order_out(services, who, row) for row in found], next=after)


@router.get("/account/trades", response_model=AccountTradesPage, responses=KEY_ERRORS)
def my_trades(
    request: Request,
    caller: Caller,
    market_id: Annotated[MarketId | None, Query(description="only this market's")] = None,
    from_ms: FromMs = None,
    to_ms: ToMs = None,
    limit: Limit = 100,
    cursor: Cursor = None,
    account: NamedAccount = None,
) -> AccountTradesPage:
    """Your trades, newest first, from the database."""
    services = services_of(request)
    rows = queries.account_trades(
        services.database(),
        acting_as(caller, account),
        before=int_cursor(cursor),
        limit=limit + 1,
        market_id=market_id,
        since=time_range(from_ms, to_ms),
    )
    found, after = page(rows, limit, lambda row: row.trade_id)
    markets = services.projection.markets
    items = []
    for row in found:
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
                time_ms=row.ts // NS_PER_MS,
                fee=row.fee or None,
            )
        )
    return AccountTradesPage(items=items, next=after)


@router.get("/account/history", response_model=HistoryPage, responses=KEY_ERRORS)
def my_history(
    request: Request, caller: Caller, limit: Limit = 100, cursor: Cursor = None, account: NamedAccount = None
) -> HistoryPage:
    """Your balance changes, newest first (with several shards: shard by shard), from the database."""
    services = services_of(request)
    rows = queries.account_balance_history(
        services.database(), acting_as(caller, account), before=int_cursor(cursor), limit=limit + 1
    )
    found, after = page(rows, limit, lambda row: row.n)
    return HistoryPage(
        items=[
            BalanceEntryOut(
                total=row.total,
                reserved=row.reserved,
                change=row.change,
                reason=row.reason.name,
                market_id=row.market_id or None,
                shard=shard_of(row.n),
                time_ms=row.ts // NS_PER_MS,
            )
            for row in found
        ],
        next=after,
    )


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
        raise ApiError(400, RejectReason.INVALID_TRANSFER, "from_shard and to_shard are the same shard", "to_shard")
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
        raise ApiError(409, Code.TRANSFER_ID_REUSED, "this transfer_id was used for another transfer", "transfer_id")
    events = await outcome_or_nothing(services, submission)
    if events is None:  # journalled: taken out or refused, once; the same request again tells which
        raise ApiError(
            503, Code.NOT_ANSWERED, f"the engine has not answered yet: send it again with transfer_id {client_id!r}"
        )
    rejected = next((e for e in events if isinstance(e, Rejected)), None)
    if rejected is not None and rejected.reason is not RejectReason.DUPLICATE_TRANSFER:
        raise rejected_by_engine(409, rejected.reason, _TRANSFER_FIELDS.get(rejected.reason))
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
        raise ApiError(404, Code.UNKNOWN_TRANSFER, f"unknown transfer {transfer_id!r}", "transfer_id")
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
    return HeartbeatOut(account=account, deadline_ms=min(deadlines) // NS_PER_MS if deadlines else None)
