"""The bus for asyncio services (the API): submission and the reads they need, on redis.asyncio.

Same scripts, keys and arguments as the synchronous :class:`~matchbox.bus.journal.Journal`; only
the transport differs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

import redis
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from matchbox.bus.commit import Offset, script_refusal
from matchbox.bus.connection import Entry, script_source
from matchbox.bus.journal import (
    WAITAOF_TIMEOUT_MS,
    Durability,
    Request,
    Submission,
    durable_reply,
    parse_submit,
    submit_arguments,
)
from matchbox.bus.keys import Keys

COALESCE_LIMIT = 200  # commands per coalesced submission, at most


class AsyncBus:
    def __init__(self, client: aioredis.Redis, shard: int = 0, durability: Durability = Durability.ALWAYS) -> None:
        self.client = client
        self.keys = Keys(shard)
        self.durability = durability
        self.seen_events = 0  # the most events this process saw committed: a rollback witness (submit.lua)
        self._submit = client.register_script(script_source("submit"))
        self._queued: list[tuple[Request, asyncio.Future[Submission]]] = []
        self._flusher: asyncio.Task[None] | None = None

    @classmethod
    def connect(cls, url: str, shard: int = 0, durability: Durability = Durability.ALWAYS, **options: Any) -> AsyncBus:
        options.setdefault("socket_connect_timeout", 2.0)
        options.setdefault("socket_timeout", 10.0)
        # a burst waits for a free connection (up to 5 s) instead of failing with "too many"
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=64, timeout=5, **options)
        return cls(aioredis.Redis(connection_pool=pool), shard, durability)

    async def close(self) -> None:
        await self.client.aclose(close_connection_pool=True)

    async def submit(self, request: Request) -> Submission:
        """One command, coalesced with whatever else this process submits meanwhile.

        Requests that arrive while a submission is in flight go out together in the next one
        (one script call, one WAITAOF): under load the round trips and the AOF fsyncs are shared,
        and an idle exchange still sends each command at once.
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
                results = await self.submit_many([request for request, _ in batch])
            except Exception as exc:  # every caller gets the error (Redis down: a 503 each)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def submit_many(self, requests: Sequence[Request]) -> list[Submission]:
        """Append commands in one round trip (see :meth:`matchbox.bus.journal.Journal.submit_many`)."""
        if not requests:
            return []
        script_keys, args = submit_arguments(self.keys, requests, self.seen_events)
        try:
            if self.durability is Durability.EVERYSEC:
                return parse_submit(await self._submit(keys=script_keys, args=args))
            return await self._submit_durably(script_keys, args)
        except redis.ResponseError as exc:
            raise script_refusal(exc) from None

    async def _submit_durably(self, script_keys: list[str], args: list[Any]) -> list[Submission]:
        # EVALSHA straight into the pipeline: a Script object there costs a SCRIPT EXISTS round
        # trip before every execute; a NOSCRIPT answer (after a restart) loads it and goes again
        for _attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            pipe.evalsha(self._submit.sha, len(script_keys), *script_keys, *args)
            pipe.execute_command("WAITAOF", 1, 0, WAITAOF_TIMEOUT_MS)
            submissions = durable_reply(await pipe.execute(raise_on_error=False), self.durability)
            if submissions is not None:
                return submissions
            await self.client.script_load(self._submit.script)
        raise NoScriptError("the submit script is missing right after it was loaded")

    async def read(self, stream: str, after: str, *, count: int, block_ms: int | None = None) -> list[Entry]:
        reply = await self.client.xread({stream: after}, count=count, block=block_ms)
        if not reply:
            return []
        return cast("list[Entry]", reply[0][1])  # type: ignore[index]

    async def range(self, stream: str, low: str = "-", high: str = "+", *, count: int | None = None) -> list[Entry]:
        return cast("list[Entry]", await self.client.xrange(stream, min=low, max=high, count=count))

    async def offset(self) -> Offset | None:
        raw = cast("dict[bytes, bytes]", await self.client.hgetall(self.keys.offset))
        return Offset.from_hash(raw) if raw else None

    async def aof_enabled(self) -> bool:
        info = await self.client.info("persistence")
        return bool(int(info.get("aof_enabled", 0)))

    async def alarm(self) -> str | None:
        """The rollback alarm's reason, if it is set (see :mod:`matchbox.bus.rollback`)."""
        value = await self.client.get(self.keys.alarm)
        return value.decode() if isinstance(value, bytes) else None

    async def certified(self) -> bool:
        """Whether a leader has certified this server process (see :mod:`matchbox.bus.rollback`)."""
        certified = await self.client.get(self.keys.certified)
        if not isinstance(certified, bytes):
            return True  # never certified: a new exchange, which takes orders before its first leader
        info = await self.client.info("server")
        return bool(certified.decode() == info["run_id"])

    async def leader_holder(self) -> str | None:
        value = await self.client.get(self.keys.leader)
        return value.decode() if isinstance(value, bytes) else None
