"""One shard of the bus: a Redis client, the shard's keys, and its Lua scripts (called by SHA).

The scripts are files in ``matchbox/bus/scripts``. redis-py's ``Script`` objects hold each one's
SHA1, call it with EVALSHA, and load it again when the server answers NOSCRIPT (after a restart
or a SCRIPT FLUSH), also inside pipelines.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any, cast

import redis
from redis.commands.core import Script

from matchbox.bus.keys import Keys

Entry = tuple[bytes, dict[bytes, bytes]]  # a stream entry: its id and its fields, as bytes


def id_order(stream_id: str) -> tuple[int, int]:
    """A stream id as a sortable pair: ``"1700-3"`` -> ``(1700, 3)``; ``""`` sorts first."""
    ms, _, seq = stream_id.partition("-")
    return int(ms or 0), int(seq or 0)


def script_source(name: str) -> str:
    """A script's source, with its ``--#include <name>`` lines replaced by those files."""
    lines = files("matchbox.bus").joinpath("scripts", f"{name}.lua").read_text(encoding="utf-8").splitlines()
    return "\n".join(script_source(line.split()[1]) if line.startswith("--#include ") else line for line in lines)


class Bus:
    """The keys and scripts of one shard on one Redis/Valkey server."""

    def __init__(self, client: redis.Redis, shard: int = 0) -> None:
        self.client = client
        self.keys = Keys(shard)
        self.submit_script: Script = client.register_script(script_source("submit"))
        self.commit_script: Script = client.register_script(script_source("commit"))
        self.renew_script: Script = client.register_script(script_source("renew"))
        self.release_script: Script = client.register_script(script_source("release"))
        self.snapshot_script: Script = client.register_script(script_source("snapshot"))
        self.certify_script: Script = client.register_script(script_source("certify"))
        self.forget_script: Script = client.register_script(script_source("forget"))

    @classmethod
    def connect(cls, url: str, shard: int = 0, **options: Any) -> Bus:
        """A bus over a new client for ``url`` (bytes responses; a short connect timeout)."""
        options.setdefault("socket_connect_timeout", 2.0)
        options.setdefault("socket_timeout", 10.0)  # a hung server is an error, not a hang
        options.setdefault("health_check_interval", 10)
        return cls(redis.Redis.from_url(url, **options), shard)

    def close(self) -> None:
        self.client.close()

    def where(self) -> str:
        """The server, for a log line: ``host:port`` or the socket's path (never a password)."""
        options = self.client.connection_pool.connection_kwargs
        return str(options.get("path") or f"{options.get('host')}:{options.get('port')}")

    # ------------------------------------------------------------------ typed stream reads

    def read(self, stream: str, after: str, *, count: int, block_ms: int | None = None) -> list[Entry]:
        """XREAD: up to ``count`` entries of ``stream`` after the id ``after``, waiting up to ``block_ms``."""
        reply = self.client.xread({stream: after}, count=count, block=block_ms)
        if not reply:
            return []
        return cast("list[Entry]", reply[0][1])  # type: ignore[index]

    def range(self, stream: str, low: str = "-", high: str = "+", *, count: int | None = None) -> list[Entry]:
        """XRANGE, ``low`` and ``high`` as Redis takes them (``(id`` for exclusive)."""
        return cast("list[Entry]", self.client.xrange(stream, min=low, max=high, count=count))

    def last(self, stream: str) -> Entry | None:
        """The newest entry of ``stream``, if any."""
        entries = cast("list[Entry]", self.client.xrevrange(stream, count=1))
        return entries[0] if entries else None

    def aof_enabled(self) -> bool:
        return bool(int(self.client.info("persistence").get("aof_enabled", 0)))

    def hash(self, key: str) -> dict[bytes, bytes]:
        return cast("dict[bytes, bytes]", self.client.hgetall(key))

    def last_generated_id(self, stream: str) -> str:
        """The id of the newest entry ever added (kept by trimming too); ``0-0`` for no stream."""
        try:
            info: dict[str, Any] = self.client.xinfo_stream(stream)
        except redis.ResponseError:  # no such key
            return "0-0"
        value = info["last-generated-id"]
        return value.decode() if isinstance(value, bytes) else str(value)
