"""Hostile clients, each once at a seeded time, and whether the exchange answered as the hardening rules say.

- bogus resume cursors (``/ws?last_id=abc`` and kin): refused at the handshake, or answered
  with an error; the socket is then kept open, as an attacker would, and the instance must
  keep serving everyone else (the instance checks see to that);
- bodies over 64 KiB, by Content-Length and chunked: 413 (chunked without a key: 401 first);
- an anonymous ``POST /markets`` with a bad body: 401/403, never a 422 that describes the schema;
- absurd numbers (``"1e400000"``, ``1e999999999``): a 4xx, at once;
- deeply nested JSON, in a body and in a WebSocket frame: a 4xx, an error message, or a close
  that is not an internal error (1011);
- a slow WebSocket reader that subscribes to everything and never reads;
- a revoked key: refused by REST, and its authenticated WebSocket closed or refused, within the
  key cache's lifetime (plus a margin);
- an account id with a NUL byte, and the admin token without ``Bearer ``: refused;
- a trader's own orders channel: its fills name no other account.

A probe that meets a fault (no answer, a 503) is tried again a few times; if it never gets a
clear answer it is recorded as not judged rather than guessed at.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp

from matchbox.chaos.clock import pause
from matchbox.chaos.cluster import KEY_CACHE_SECONDS
from matchbox.chaos.feeds import ws_url
from matchbox.chaos.http import Http, Instance, Reply
from matchbox.chaos.records import Probe, Records
from matchbox.chaos.traffic import MARKETS, SetupError, until_answered

TRIES = 5
SLOW_ANSWER_S = 1.0  # a 4xx for a bad number that takes longer than this froze the instance
LARGE_BODY = 70 * 1024  # over the 64 KiB limit
CHUNKED_BODY = 1024 * 1024  # sent in 64 KiB chunks, without a Content-Length
NESTING = 30_000  # levels of [ ] in a body (60 KB: under the body limit, so the parser meets it)
FRAME_NESTING = 1_900  # in a WebSocket frame (3.8 KB: under the 4 KiB frame limit; past msgspec's depth)
REVOKE_MARGIN_S = 3.0
WS_REPLY_S = 5.0

Attempt = Callable[["Hostile"], Awaitable[Probe | None]]  # None: no clear answer (a fault): try again


@dataclass(slots=True)
class Hostile:
    http: Http
    records: Records
    rng: random.Random
    key: str  # a valid key of an unfunded account: its orders pass the key check and reach parsing
    kept: list[aiohttp.ClientWebSocketResponse] = field(default_factory=list)  # sockets left open on purpose
    serial: int = 0

    def instance(self) -> Instance:
        return self.rng.choice(self.http.instances)

    async def close(self) -> None:
        for ws in self.kept:
            await ws.close()

    async def run(self, seconds: float, stop: asyncio.Event) -> None:
        """Every probe once, at seeded times in the run's middle."""
        started = time.monotonic()
        edge = min(5.0, seconds / 6)
        probes = list(PROBES.items())
        self.rng.shuffle(probes)
        times = sorted(self.rng.uniform(edge, max(edge, seconds - 2 * edge)) for _ in probes)
        for at, (name, attempt) in zip(times, probes, strict=True):
            if await pause(stop, started + at - time.monotonic()):
                return
            self.records.probes.append(await self.judge(name, attempt, stop))

    async def judge(self, name: str, attempt: Attempt, stop: asyncio.Event) -> Probe:
        for _ in range(TRIES):
            try:
                probe = await attempt(self)
            except (aiohttp.ClientError, TimeoutError, ValueError):  # a connection lost to a fault
                probe = None
            if probe is not None:
                return probe
            if await pause(stop, 1.0):
                break
        return Probe(name, "-", True, "not judged: no clear answer while faults were on", "")


# --------------------------------------------------------------------------- HTTP probes


def _answered(reply: Reply) -> bool:
    return reply.status is not None and reply.status != 503


def _status_probe(name: str, instance: Instance, reply: Reply, ok: range | tuple[int, ...], expected: str) -> Probe:
    body = json.dumps(reply.body)[:120] if reply.body is not None else ""
    return Probe(name, instance.name, reply.status in ok, f"{reply.status} {body}".strip(), expected)


async def oversized(h: Hostile) -> Probe | None:
    instance = h.instance()
    body = b'{"side":"buy","price":1,"qty":1,"pad":"' + b"x" * LARGE_BODY + b'"}'
    reply = await h.http.call(
        instance, "POST", "/v1/orders", key=h.key, data=body, headers={"content-type": "application/json"}
    )
    return _status_probe("70 KiB body", instance, reply, (413,), "413") if _answered(reply) else None


async def _chunks() -> AsyncIterator[bytes]:
    sent = 0
    while sent < CHUNKED_BODY:
        yield b"[" * 65536
        sent += 65536


async def chunked(h: Hostile) -> Probe | None:
    instance = h.instance()
    headers = {"content-type": "application/json"}
    reply = await h.http.call(instance, "POST", "/v1/orders", key=h.key, data=_chunks(), headers=headers)
    return _status_probe("1 MiB chunked body", instance, reply, (413,), "413") if _answered(reply) else None


async def chunked_anonymous(h: Hostile) -> Probe | None:
    instance = h.instance()
    headers = {"content-type": "application/json"}
    reply = await h.http.call(instance, "POST", "/v1/orders", data=_chunks(), headers=headers)
    name, expected = "1 MiB chunked body without a key", "401 (or 413), before the body is read"
    return _status_probe(name, instance, reply, (401, 413), expected) if _answered(reply) else None


async def anonymous_market(h: Hostile) -> Probe | None:
    instance = h.instance()
    reply = await h.http.call(instance, "POST", "/v1/markets", body={"market_id": 7, "scheme": ["?"]})
    name, expected = "anonymous POST /markets with a bad body", "401/403 before the body is validated"
    return _status_probe(name, instance, reply, (401, 403), expected) if _answered(reply) else None


def _absurd(market_id: str, fields: str) -> Attempt:
    raw = f'{{"market_id":"{market_id}",{fields}}}'.encode()

    async def attempt(h: Hostile) -> Probe | None:
        instance = h.instance()
        reply = await _post_raw(h, instance, raw)
        if not _answered(reply):
            return None
        if _slow(reply, await h.http.call(instance, "GET", "/health")):  # again: slow every time, or the machine was
            reply = await _post_raw(h, instance, raw)
            if not _answered(reply):
                return None
        slow = _slow(reply, await h.http.call(instance, "GET", "/health"))
        held = reply.status is not None and 400 <= reply.status < 500 and not slow
        observed = f"{reply.status} in {reply.seconds * 1000:.0f} ms ({json.dumps(reply.body)[:100]})"
        return Probe(f"absurd number: {fields}", instance.name, held, observed, f"4xx within {SLOW_ANSWER_S:g} s")

    return attempt


async def _post_raw(h: Hostile, instance: Instance, raw: bytes) -> Reply:
    headers = {"content-type": "application/json"}
    return await h.http.call(instance, "POST", "/v1/orders", key=h.key, data=raw, headers=headers)


def _slow(reply: Reply, health: Reply) -> bool:
    """The answer took long while the instance answered /health at once: the request itself is slow."""
    return reply.seconds > SLOW_ANSWER_S and health.seconds < SLOW_ANSWER_S / 4


async def nested_body(h: Hostile) -> Probe | None:
    instance = h.instance()
    raw = ("[" * NESTING + "]" * NESTING).encode()
    headers = {"content-type": "application/json"}
    reply = await h.http.call(instance, "POST", "/v1/orders", key=h.key, data=raw, headers=headers)
    name = f"JSON body nested {NESTING:,} deep"
    return _status_probe(name, instance, reply, range(400, 500), "4xx") if _answered(reply) else None


async def nul_account(h: Hostile) -> Probe | None:
    instance = h.instance()
    reply = await h.http.call(instance, "POST", "/v1/admin/accounts/x%00y/deposit", admin=True, body={"amount": 100})
    if not _answered(reply):
        return None
    if reply.status == 200:  # it went in: the money checks must count it
        h.records.cash_of("x\x00y").deposited += 100
    return _status_probe("deposit to an account id with a NUL byte", instance, reply, range(400, 500), "4xx")


async def bare_admin_token(h: Hostile) -> Probe | None:
    instance = h.instance()
    reply = await h.http.call(instance, "GET", "/v1/admin/accounts", headers={"authorization": h.http.admin_token})
    name, expected = "admin token without 'Bearer '", "401/403 (one header form)"
    return _status_probe(name, instance, reply, (401, 403), expected) if _answered(reply) else None


# --------------------------------------------------------------------------- WebSocket probes


async def _connect(h: Hostile, instance: Instance, query: str) -> aiohttp.ClientWebSocketResponse | int | None:
    """An open socket, the handshake's refusal status, or None if the instance did not answer."""
    assert h.http.session is not None
    try:
        return await h.http.session.ws_connect(ws_url(instance.url, f"/v1/ws{query}"))
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status
    except (aiohttp.ClientError, TimeoutError):
        return None


async def _reply(ws: aiohttp.ClientWebSocketResponse, ops: tuple[str, ...]) -> str:
    """The first message with one of ``ops`` (fills and trades skipped), or how the socket ended."""
    deadline = time.monotonic() + WS_REPLY_S
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = await ws.receive(timeout=left)
        except TimeoutError:
            break
        if message.type is aiohttp.WSMsgType.TEXT:
            try:
                data = json.loads(message.data)
            except ValueError:
                return f"not JSON: {message.data[:80]!r}"
            if isinstance(data, dict) and data.get("type") in ops:
                return f"{data.get('type')}: {json.dumps(data)[:120]}"
            continue
        return f"closed {message.data}" if message.type is aiohttp.WSMsgType.CLOSE else f"ended ({message.type.name})"
    return "nothing"


def _cursor(cursor: str) -> Attempt:
    async def attempt(h: Hostile) -> Probe | None:
        instance = h.instance()
        name, expected = f"WebSocket ?last_id={cursor}", "refused at the handshake, or an error message"
        ws = await _connect(h, instance, f"?last_id={cursor}&subscribe=trades:{MARKETS[0].market_id}")
        if ws is None:
            return None
        if isinstance(ws, int):
            return Probe(name, instance.name, ws < 500, f"refused at the handshake: {ws}", expected)
        seen = await _reply(ws, ("error",))
        h.kept.append(ws)  # left open, as an attacker would: the instance must go on serving the rest
        return Probe(name, instance.name, seen != "nothing" and "1011" not in seen, seen, expected)

    return attempt


async def nested_frame(h: Hostile) -> Probe | None:
    instance = h.instance()
    ws = await _connect(h, instance, "")
    if not isinstance(ws, aiohttp.ClientWebSocketResponse):
        return None
    try:
        await ws.send_str('{"type":"subscribe","channel":' + "[" * FRAME_NESTING + "]" * FRAME_NESTING + "}")
        seen = await _reply(ws, ("error",))
        if seen == "nothing":  # ignored: fine, if the connection still serves
            await ws.send_str('{"type":"ping"}')
            seen = "no answer, then " + await _reply(ws, ("pong",))
    finally:
        await ws.close()
    held = seen.startswith(("error", "no answer, then pong")) or (seen.startswith("closed") and "1011" not in seen)
    expected = "an error message (or nothing, the connection still serving), or a close that is not 1011"
    return Probe(f"WebSocket frame nested {FRAME_NESTING:,} deep", instance.name, held, seen, expected)


async def slow_reader(h: Hostile) -> Probe | None:
    instance = h.instance()
    channels = ",".join(f"{kind}:{m.market_id}" for m in MARKETS for kind in ("trades", "book"))
    ws = await _connect(h, instance, f"?subscribe={channels}")
    if not isinstance(ws, aiohttp.ClientWebSocketResponse):
        return None
    h.kept.append(ws)  # never read: its queue fills; the instance must drop it, not stall
    return Probe("slow WebSocket reader (never reads)", instance.name, True, "connected, never read", "")


async def revoked_key(h: Hostile) -> Probe | None:
    h.serial += 1
    account, instance = f"chaos-revoked-{h.serial}", h.instance()
    name = "revoked key"
    expected = f"REST 401 and the WebSocket closed or refusing within {KEY_CACHE_SECONDS:g} s (+{REVOKE_MARGIN_S:g})"
    first = h.http.instances[0]
    try:
        made = await until_answered(
            lambda: h.http.call(first, "POST", "/v1/admin/accounts", admin=True, body={"account": account}),
            (201,),
            name,
        )
    except SetupError:
        return None
    key, key_id = str(made.field("api_key")), str(made.field("key_id"))
    ws = await _connect(h, instance, "")
    if not isinstance(ws, aiohttp.ClientWebSocketResponse):
        return None
    try:
        await ws.send_str(json.dumps({"type": "auth", "key": key}))
        if not (await _reply(ws, ("authed", "error"))).startswith("authed"):
            return None
        path = f"/v1/admin/accounts/{account}/keys/{key_id}"
        try:
            await until_answered(lambda: h.http.call(first, "DELETE", path, admin=True), (204,), name, 30.0)
        except SetupError:
            return None
        await asyncio.sleep(KEY_CACHE_SECONDS + REVOKE_MARGIN_S)
        problems = [p for i in h.http.instances if (p := await _rest_refuses(h, i, key))]
        seen = await _heartbeat(ws)
        if seen.startswith("heartbeat"):
            problems.append(f"{instance.name} WebSocket still acts for the account: {seen}")
    finally:
        await ws.close()
    observed = "; ".join(problems) or f"REST refused it everywhere; the WebSocket then: {seen}"
    return Probe(name, instance.name, not problems, observed, expected)


async def _heartbeat(ws: aiohttp.ClientWebSocketResponse) -> str:
    """The answer to a heartbeat (one that disarms nothing), or how the socket had ended."""
    try:
        await ws.send_str(json.dumps({"type": "heartbeat", "timeout_ms": 0}))
    except aiohttp.ClientError as exc:  # the server closed it meanwhile
        return f"closed ({type(exc).__name__})"
    return await _reply(ws, ("heartbeat", "error"))


async def _rest_refuses(h: Hostile, instance: Instance, key: str) -> str:
    """'' if ``instance`` refuses the key with a 401 (retried past faults), else what it did."""
    reply = Reply(None, None)
    for _ in range(TRIES):
        reply = await h.http.call(instance, "GET", "/v1/account", key=key)
        if _answered(reply):
            break
        await asyncio.sleep(1.0)
    if reply.status in (401, None, 503):
        return ""
    return f"{instance.name} GET /account with it: {reply.status}"


async def counterparty(h: Hostile) -> Probe | None:
    """A trader's own orders channel must not name whom it traded with (own-side fills only)."""
    account, key = next((a, k) for a, k in h.records.keys.items() if a.startswith("chaos-t"))
    instance = h.instance()
    ws = await _connect(h, instance, "")
    if not isinstance(ws, aiohttp.ClientWebSocketResponse):
        return None
    try:
        await ws.send_str(json.dumps({"type": "auth", "key": key}))
        await ws.send_str(json.dumps({"type": "subscribe", "channel": "orders"}))
        fills = await _fills(ws, account)
    finally:
        await ws.close()
    if not fills:
        return None  # no trade of this account came in time
    named = sorted({name for fill in fills for name in _others(fill, account)})
    observed = f"{len(fills)} fills; " + (f"they name {', '.join(named[:4])}" if named else "no other account named")
    return Probe("orders channel names no counterparty", instance.name, not named, observed, "only the own account")


async def _fills(ws: aiohttp.ClientWebSocketResponse, account: str) -> list[dict[str, object]]:
    """The trade messages of the account's orders channel within a few seconds."""
    found: list[dict[str, object]] = []
    deadline = time.monotonic() + WS_REPLY_S
    while (left := deadline - time.monotonic()) > 0 and len(found) < 5:
        try:
            message = await ws.receive(timeout=left)
        except TimeoutError:
            break
        if message.type is not aiohttp.WSMsgType.TEXT:
            break
        data = json.loads(message.data)
        if (
            isinstance(data, dict)
            and data.get("channel") == f"orders:{account}"
            and data.get("type") == "TradeExecuted"
        ):
            found.append(data)
    return found


def _others(message: dict[str, object], account: str) -> list[str]:
    """``field=value`` for each field of a message that holds an account other than ``account``."""
    return [f"{k}={v}" for k, v in message.items() if k.endswith("account") and isinstance(v, str) and v != account]


PROBES: dict[str, Attempt] = {
    "cursor abc": _cursor("abc"),
    "cursor 12-x": _cursor("12-x"),
    "cursor -1": _cursor("-1"),
    "70 KiB body": oversized,
    "chunked body": chunked,
    "chunked anonymous": chunked_anonymous,
    "anonymous market": anonymous_market,
    "odds 1e400000": _absurd("chaos-odds", '"side":"back","odds":"1e400000","stake":1'),
    "odds 1e999999999": _absurd("chaos-odds", '"side":"back","odds":"1e999999999","stake":1'),
    "price 1e400000": _absurd("chaos-ticks", '"side":"buy","price":1e400000,"qty":1'),
    "qty 1e999999999": _absurd("chaos-ticks", '"side":"buy","price":5,"qty":1e999999999'),
    "nested body": nested_body,
    "nested frame": nested_frame,
    "slow reader": slow_reader,
    "revoked key": revoked_key,
    "NUL account": nul_account,
    "bare admin token": bare_admin_token,
    "counterparty": counterparty,
}
