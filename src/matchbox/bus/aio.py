"""The bus for asyncio services (the API): submission and the reads they need, on redis.asyncio.

The same calls as the synchronous :class:`~matchbox.bus.connection.Bus` (described once, without
I/O, in :mod:`matchbox.bus.calls`, :mod:`~matchbox.bus.journal` and :mod:`~matchbox.bus.commit`);
only the sending differs, and sends nothing twice, as it does (see ``Bus._exchange``). What is its
own: coalescing the submissions of concurrent requests, and the :class:`~matchbox.bus.line.Line`
(RESP over its own asyncio connection) of each user that sends one call at a time on the hot
path (the submissions, an event tail).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from matchbox.bus import calls
from matchbox.bus.calls import CONNECT_OPTIONS, Call, Command, Entry
from matchbox.bus.commit import Offset, offset_call
from matchbox.bus.durability import Durability
from matchbox.bus.journal import Request, Submission, submit_call
from matchbox.bus.keys import Keys
from matchbox.bus.line import Line

T = TypeVar("T")
COALESCE_LIMIT = 200  # commands per coalesced submission, at most


class AsyncBus:
    def __init__(self, client: aioredis.Redis, shard: int = 0, durability: Durability = Durability.ALWAYS) -> None:
        self.client = client
        self.keys = Keys(shard)
        self.durability = durability
        self.seen_events = 0  # the most events this process saw committed: a rollback witness (submit.lua)
        self._queued: list[tuple[Request, asyncio.Future[Submission]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._lines: list[Line] = []
        self._submissions = self.line()

    def line(self) -> Line:
        """A :class:`Line` on this bus, closed with it."""
        line = Line()
        self._lines.append(line)
        return line

    @classmethod
    def connect(cls, url: str, shard: int = 0, durability: Durability = Durability.ALWAYS, **options: Any) -> AsyncBus:
        # a burst waits for a free connection (up to 5 s) instead of failing with "too many"
        options = {**CONNECT_OPTIONS, **options}
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=64, timeout=5, **options)
        pool.connection_kwargs["protocol"] = 2  # a URL's ?protocol=3 too: the lines speak RESP2 (CONNECT_OPTIONS)
        return cls(aioredis.Redis(connection_pool=pool), shard, durability)

    @property
    def routed(self) -> aioredis.Redis | AsyncRedisCluster:
        """A client for keys outside the shard (accounts, the market directory): on one server,
        the same; on a cluster, one that routes each key to its slot."""
        return self.client

    def sibling(self, shard: int) -> AsyncBus:
        """A bus of another shard over the same server and connections (closing either closes both)."""
        return AsyncBus(self.client, shard, self.durability)

    async def close(self) -> None:
        await self.close_lines()
        await self.client.aclose(close_connection_pool=True)

    async def close_lines(self) -> None:
        for line in self._lines:
            await line.close()

    async def submit(self, request: Request) -> Submission:
        """One command, coalesced with whatever else this process submits meanwhile.

        Requests that arrive while a submission is in flight go out together in the next one
        (one script call, one WAITAOF): under load the round trips and the AOF fsyncs are shared,
        and an idle exchange still sends each command at once. The flusher is a task of its
        own: a caller cancelled while its command is in flight (a request, a shutdown) cuts no
        submission short, its own or another's.
        """
        future: asyncio.Future[Submission] = asyncio.get_running_loop().create_future()
        self._queued.append((request, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._queued:
            batch, self._queued = self._queued[:COALESCE_LIMIT], self._queued[COALESCE_LIMIT:]
            try:
                results = await self.submit_many([request for request, _ in batch], self._submissions)
            except Exception as exc:  # every caller gets the error (Redis down: a 503 each)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def submit_many(self, requests: Sequence[Request], line: Line | None = None) -> list[Submission]:
        """Append commands in one round trip (see :meth:`matchbox.bus.journal.Journal.submit_many`)."""
        if not requests:
            return []
        return await self.run(submit_call(self.keys, requests, self.durability, self.seen_events), line)

    async def run(self, call: Call[T], line: Line | None = None) -> T:
        """Send ``call``'s commands in one round trip and read the replies (as the synchronous
        ``Bus.run``), on ``line`` if one is given, else on a connection of the pool."""
        replies = await self._send(call.commands, line)
        if call.missing_script(replies):
            call = call.reloading()
            replies = await self._send(call.commands, line)
        return call.read(replies)

    async def _send(self, commands: tuple[Command, ...], line: Line | None = None) -> list[Any]:
        """One write, then the replies (an error reply as its exception object), on ``line`` or a
        connection of the pool; nothing is sent twice, and a connection left with replies unread
        is closed (see ``Bus._exchange``)."""
        client = self.client
        if line is not None:
            return await line.exchange(client, commands)
        pool = client.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        unread = len(commands)
        replies: list[Any] = []
        try:
            await connection.send_packed_command(connection.pack_commands(commands))
            for command in commands:
                try:
                    replies.append(await client.parse_response(connection, str(command[0])))
                except redis.ResponseError as exc:
                    replies.append(exc)
                unread -= 1
            return replies
        finally:
            if unread:
                await connection.disconnect(nowait=True)
            await pool.release(connection)

    # ------------------------------------------------------------------ reads (see matchbox.bus.calls)

    async def read(
        self, stream: str, after: str, *, count: int, block_ms: int | None = None, line: Line | None = None
    ) -> list[Entry]:
        return await self.run(calls.read(stream, after, count=count, block_ms=block_ms), line)

    async def range(self, stream: str, low: str = "-", high: str = "+", *, count: int | None = None) -> list[Entry]:
        return await self.run(calls.entries(stream, low, high, count=count))

    async def offset(self) -> Offset | None:
        return await self.run(offset_call(self.keys))

    async def persistence(self) -> calls.Persistence:
        return await self.run(calls.persistence())

    async def alarm(self) -> str | None:
        return await self.run(calls.alarm(self.keys))

    async def certified(self) -> bool:
        """Whether submissions are safe on this server process (see :func:`matchbox.bus.calls.certified`)."""
        return await self.run(calls.certified(self.keys, strict=False))

    async def leader_holder(self) -> str | None:
        return await self.run(calls.leader_holder(self.keys))
