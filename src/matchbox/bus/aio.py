"""The bus for asyncio services (the API): submission and the reads they need, on redis.asyncio.

Same scripts, keys and arguments as the synchronous :class:`~matchbox.bus.journal.Journal`; only
the transport differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import redis.asyncio as aioredis

from matchbox.bus.commit import Offset
from matchbox.bus.connection import Entry, script_source
from matchbox.bus.journal import (
    WAITAOF_TIMEOUT_MS,
    Durability,
    DurabilityError,
    Request,
    Submission,
    parse_submit,
    submit_arguments,
)
from matchbox.bus.keys import Keys


class AsyncBus:
    def __init__(self, client: aioredis.Redis, shard: int = 0, durability: Durability = Durability.ALWAYS) -> None:
        self.client = client
        self.keys = Keys(shard)
        self.durability = durability
        self._submit = client.register_script(script_source("submit"))

    @classmethod
    def connect(cls, url: str, shard: int = 0, durability: Durability = Durability.ALWAYS, **options: Any) -> AsyncBus:
        options.setdefault("socket_connect_timeout", 2.0)
        options.setdefault("socket_timeout", 10.0)
        options.setdefault("max_connections", 64)
        return cls(aioredis.Redis.from_url(url, **options), shard, durability)

    async def close(self) -> None:
        await self.client.aclose()

    async def submit_many(self, requests: Sequence[Request]) -> list[Submission]:
        """Append commands in one round trip (see :meth:`matchbox.bus.journal.Journal.submit_many`)."""
        if not requests:
            return []
        script_keys, args = submit_arguments(self.keys, requests)
        if self.durability is Durability.EVERYSEC:
            return parse_submit(await self._submit(keys=script_keys, args=args))
        pipe = self.client.pipeline(transaction=False)
        await self._submit(keys=script_keys, args=args, client=pipe)
        pipe.execute_command("WAITAOF", 1, 0, WAITAOF_TIMEOUT_MS)
        result, (local, _replicas) = await pipe.execute()
        submissions = parse_submit(result)
        if int(local) < 1 and any(s.status == "new" for s in submissions):
            raise DurabilityError(f"the server did not confirm the AOF fsync within {WAITAOF_TIMEOUT_MS} ms")
        return submissions

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

    async def leader_info(self) -> dict[str, str]:
        raw = cast("dict[bytes, bytes]", await self.client.hgetall(self.keys.leader_info))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def leader_holder(self) -> str | None:
        value = await self.client.get(self.keys.leader)
        return value.decode() if isinstance(value, bytes) else None
