"""A :class:`Line`: a connection of its own to Redis/Valkey for one user of an
:class:`~matchbox.bus.aio.AsyncBus` that sends one call at a time on the hot path (the API's
submissions, an event tail).

It speaks RESP straight over an asyncio transport, with hiredis to pack commands and parse
replies, and redis-py's own error classes and reply callbacks, so a call reads the same replies
as on a connection of redis-py's pool. What it leaves out is redis-py's asyncio stream layer: a
task for every write with a timeout (``asyncio.wait_for``), a stream reader per read, a health
check before each use. Measured on one core (docs/benchmarks.md), a round trip costs the caller
about a quarter of the CPU it costs on a redis-py connection, and an order's path makes two.

What it promises is redis-py's, and the bus's (see ``Bus._exchange``): nothing is sent twice;
a call whose replies do not all come (a timeout, a lost connection, a caller cancelled while it
waits) closes the connection, so no later call reads them; a closed connection is opened again
by the next call, with the server's credentials and database as the client's pool has them.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, cast

import hiredis
import redis
import redis.asyncio as aioredis
from redis._parsers.base import BaseParser
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection
from redis.exceptions import InvalidResponse

from matchbox.bus.calls import Command


class _Replies(asyncio.Protocol):
    """One connection: each write's replies, parsed as they arrive, handed to its future in order."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader(protocolError=InvalidResponse, replyError=BaseParser.parse_error)
        self.waiting: collections.deque[tuple[int, list[Any], asyncio.Future[list[Any]]]] = collections.deque()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio's subclasses

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            while self.waiting:
                count, replies, future = self.waiting[0]
                while len(replies) < count:
                    reply = self.reader.gets()
                    if reply is False:  # the rest has not come yet
                        return
                    replies.append(reply)
                self.waiting.popleft()
                if not future.done():
                    future.set_result(replies)
            if self.reader.gets() is not False:  # a reply no call asked for: the stream is out of step
                raise InvalidResponse("a reply came that no call was waiting for")
        except InvalidResponse as exc:
            self.fail(redis.ConnectionError(f"Redis sent what is not RESP: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(redis.ConnectionError(f"the connection to Redis was lost: {exc or 'closed by the server'}"))

    def fail(self, error: redis.RedisError) -> None:
        """Close the connection; every call still waiting gets ``error``."""
        self.closed = True
        while self.waiting:
            future = self.waiting.popleft()[2]
            if not future.done():
                future.set_exception(error)
        if self.transport is not None:
            self.transport.abort()  # nothing of it is needed any more: no waiting on a slow peer

    def expire(self, seconds: float) -> None:
        self.fail(redis.TimeoutError(f"Redis did not answer in {seconds:g} s"))

    def send(self, commands: tuple[Command, ...]) -> asyncio.Future[list[Any]]:
        """Write ``commands`` in one write; the future gets their replies. Packed first: a command
        that cannot be sent leaves nothing behind waiting for replies that are not coming."""
        assert self.transport is not None
        assert commands, "a call of no commands would wait for nothing"
        try:
            data = b"".join([_pack(command) for command in commands])
        except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
            raise redis.DataError(f"a command Redis cannot be sent: {exc}") from exc
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self.waiting.append((len(commands), [], future))
        self.transport.write(data)
        return future


def _pack(command: Command) -> bytes:
    """A command in RESP; a name of two words (``SCRIPT LOAD``) is two arguments, as redis-py sends it."""
    name = command[0]
    if isinstance(name, str) and " " in name:
        command = (*name.split(), *command[1:])
    packed: bytes = hiredis.pack_command(cast(Any, command))  # its stub types a tuple of one
    return packed


def _connection_error(reply: Any) -> redis.ConnectionError | None:
    """An error reply that redis-py takes for a broken connection (LOADING, NOAUTH, too many
    clients), alone or heading a list: raised, and the connection closed, as on the pool's."""
    if isinstance(reply, list) and reply:
        reply = reply[0]
    return reply if isinstance(reply, redis.ConnectionError) else None


class Line:
    """A connection of its own, on whichever client the bus has now (a cluster's new master is
    a new client: the line follows it); closed with the bus, for good. One call at a time."""

    def __init__(self) -> None:
        self.client: aioredis.Redis | None = None
        self._replies: _Replies | None = None
        self._timeout: float | None = None
        self._opening = asyncio.Lock()
        self._closed = False

    @property
    def connected(self) -> bool:
        """Whether its connection is open (as far as the event loop has seen)."""
        return self._replies is not None and not self._replies.closed

    async def exchange(self, client: aioredis.Redis, commands: tuple[Command, ...]) -> list[Any]:
        """Send ``commands`` in one write and read their replies, each as redis-py's client would
        parse it (an error reply as its exception object, but one that means the connection is
        broken, which is raised)."""
        connection = await self._open(client)
        replies = await _call(connection, commands, self._timeout)
        callbacks = client.response_callbacks
        parsed = []
        for command, reply in zip(commands, replies, strict=True):
            broken = _connection_error(reply)
            if broken is not None:
                connection.fail(broken)
                raise broken
            callback = None if isinstance(reply, Exception) else callbacks.get(str(command[0]))
            parsed.append(reply if callback is None else callback(reply))
        return parsed

    async def _open(self, client: aioredis.Redis) -> _Replies:
        if self.client is client and self._replies is not None and not self._replies.closed:
            return self._replies
        async with self._opening:  # two callers at once open one connection
            if self._closed:
                raise redis.ConnectionError("the line was closed with its bus")
            if self.client is client and self._replies is not None and not self._replies.closed:
                return self._replies
            self._forget()
            replies, timeout = await _connect(client)
            self.client, self._replies, self._timeout = client, replies, timeout
            return replies

    def _forget(self) -> None:
        if self._replies is not None:
            self._replies.fail(redis.ConnectionError("the line was closed"))
        self.client = self._replies = None

    async def close(self) -> None:
        """Close its connection, for good: a call after this is a ConnectionError."""
        self._closed = True
        self._forget()


async def _call(replies: _Replies, commands: tuple[Command, ...], timeout: float | None) -> list[Any]:
    """One write and its replies; the connection closed if they do not all come. Each reply may
    take ``timeout``, as on redis-py's connections: the call, that times the commands."""
    future = replies.send(commands)
    timer = None
    if timeout:
        budget = timeout * len(commands)
        timer = asyncio.get_running_loop().call_later(budget, replies.expire, budget)
    try:
        return await future
    except asyncio.CancelledError:  # its replies would be left unread
        replies.fail(redis.ConnectionError("a call was cancelled while Redis was answering it"))
        raise
    finally:
        if timer is not None:
            timer.cancel()


async def _connect(client: aioredis.Redis) -> tuple[_Replies, float | None]:
    """A new connection as the client's pool would make it, credentials and database sent: its
    replies, and the socket timeout. Nothing half-made is kept: a failure closes it."""
    settings = client.connection_pool.make_connection()  # type: ignore[no-untyped-call]  # how the pool connects
    if settings.protocol != 2:
        raise redis.ConnectionError("a line speaks RESP2: connect the bus's client with protocol=2 (CONNECT_OPTIONS)")
    try:
        hello = await _handshake(settings)  # before connecting: a slow credential provider holds no socket
    except Exception as exc:
        if isinstance(exc, redis.RedisError):
            raise
        raise redis.ConnectionError(f"could not get the credentials for Redis: {exc}") from exc
    loop = asyncio.get_running_loop()
    where = settings.path if isinstance(settings, UnixDomainSocketConnection) else f"{settings.host}:{settings.port}"
    try:
        async with asyncio.timeout(settings.socket_connect_timeout):
            if isinstance(settings, UnixDomainSocketConnection):
                _, replies = await loop.create_unix_connection(_Replies, settings.path)
            else:
                tls = settings.ssl_context.get() if isinstance(settings, SSLConnection) else None
                server_hostname = settings.host if tls is not None else None
                _, replies = await loop.create_connection(
                    _Replies, settings.host, settings.port, ssl=tls, server_hostname=server_hostname
                )
    except (OSError, TimeoutError) as exc:
        raise redis.ConnectionError(f"could not connect to Redis at {where}: {exc or type(exc).__name__}") from exc
    try:
        for reply in await _call(replies, hello, settings.socket_timeout) if hello else ():
            if isinstance(reply, Exception):
                raise reply
    except BaseException:
        replies.fail(redis.ConnectionError(f"the connection to {where} was refused"))
        raise
    return replies, settings.socket_timeout


async def _handshake(settings: Any) -> tuple[Command, ...]:
    """The commands a new connection sends first, as the pool's would: credentials, database."""
    commands: list[Command] = []
    provider = settings.credential_provider
    credentials = (
        await provider.get_credentials_async() if provider is not None else (settings.username, settings.password)
    )
    if credentials[-1]:  # (password,) or (username, password)
        commands.append(("AUTH", *(part for part in credentials if part)))
    if settings.db:
        commands.append(("SELECT", settings.db))
    return tuple(commands)
