"""What the bus sends to Redis and what the replies mean, without sending anything.

A :class:`Call` is the Redis commands of one round trip (a pipeline, when there are several)
and a function that reads their replies. Every submission, commit and read of the bus is a Call
built by a pure function (here for the stream reads, in :mod:`~matchbox.bus.journal` for a
submission, in :mod:`~matchbox.bus.commit` for a commit); a transport only sends the commands
and hands back the replies, an error reply as its exception object, for the Call to read:
:class:`~matchbox.bus.connection.Bus` on redis-py, :class:`~matchbox.bus.aio.AsyncBus` on
redis.asyncio.

Scripts are files in ``matchbox/bus/scripts``, loaded once and called by SHA (EVALSHA). The
server forgets them when it restarts (or on SCRIPT FLUSH) and answers NOSCRIPT: that is the one
retry rule, :meth:`Call.missing_script` says when it applies and :meth:`Call.reloading` is the
same call with a SCRIPT LOAD in front, sent once more; a second NOSCRIPT is an error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any, Generic, TypeVar, cast

from redis.exceptions import NoScriptError, ResponseError

from matchbox.bus.keys import Keys

T = TypeVar("T")
Arg = str | int | float | bytes
Command = tuple[Arg, ...]  # one Redis command as sent: its name, then its arguments
Entry = tuple[bytes, dict[bytes, bytes]]  # a stream entry: its id and its fields, as bytes

# How every transport connects: a short connect timeout, a hung server is an error rather than a
# hang, and a connection idle for 10 s is pinged before use, so a restarted server is noticed
# before a command is lost on a dead socket; RESP2, which the API's lines speak too (see
# matchbox.bus.line), so every connection reads the same replies, whatever redis-py's default.
CONNECT_OPTIONS: dict[str, Any] = {
    "socket_connect_timeout": 2.0,
    "socket_timeout": 10.0,
    "health_check_interval": 10,
    "protocol": 2,
}


def id_order(stream_id: str) -> tuple[int, int]:
    """A stream id as a sortable pair: ``"1700-3"`` -> ``(1700, 3)``; ``""`` sorts first."""
    ms, _, seq = stream_id.partition("-")
    return int(ms or 0), int(seq or 0)


# --------------------------------------------------------------------------- scripts


def script_source(name: str) -> str:
    """A script's source, with its ``--#include <name>`` lines replaced by those files."""
    lines = files("matchbox.bus").joinpath("scripts", f"{name}.lua").read_text(encoding="utf-8").splitlines()
    return "\n".join(script_source(line.split()[1]) if line.startswith("--#include ") else line for line in lines)


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    source: str
    sha: str

    def evalsha(self, keys: Sequence[str], args: Sequence[Arg]) -> Command:
        return ("EVALSHA", self.sha, len(keys), *keys, *args)


@cache
def script(name: str) -> Script:
    """The script ``name`` (``submit``, ``commit``, …), read once per process."""
    source = script_source(name)
    return Script(name, source, hashlib.sha1(source.encode()).hexdigest())


# --------------------------------------------------------------------------- calls


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """Commands for one round trip, and what their replies mean (``read`` raises a refusal)."""

    commands: tuple[Command, ...]
    read: Callable[[list[Any]], T]
    script: Script | None = None  # the script the commands call, loaded again on NOSCRIPT

    def missing_script(self, replies: Sequence[Any]) -> bool:
        """Whether the server had forgotten the script (a restart, a SCRIPT FLUSH): send :meth:`reloading`."""
        return self.script is not None and any(isinstance(reply, NoScriptError) for reply in replies)

    def reloading(self) -> Call[T]:
        """The same call with the script loaded first, in the same round trip; it is not retried again."""
        assert self.script is not None
        read = self.read
        return Call((("SCRIPT LOAD", self.script.source), *self.commands), lambda replies: read(replies[1:]))


def raised(reply: Any, meaning: Callable[[ResponseError], Exception] | None = None) -> Any:
    """``reply``, unless it is an error: then raise it, as what it means if ``meaning`` says."""
    if isinstance(reply, Exception):
        raise meaning(reply) if meaning is not None and isinstance(reply, ResponseError) else reply
    return reply


def command(*parts: Arg, read: Callable[[Any], T] = lambda reply: reply) -> Call[T]:
    """One command; ``read`` takes its reply (an error reply is raised)."""
    return Call((parts,), lambda replies: read(raised(replies[0])))


def script_call(
    name: str,
    keys: Sequence[str],
    args: Sequence[Arg],
    read: Callable[[Any], T] = lambda reply: reply,
    meaning: Callable[[ResponseError], Exception] | None = None,
) -> Call[T]:
    """One EVALSHA of the script ``name``; an error reply is raised as what ``meaning`` says it is."""
    called = script(name)
    return Call((called.evalsha(keys, args),), lambda replies: read(raised(replies[0], meaning)), called)


# --------------------------------------------------------------------------- reads


def as_text(value: bytes | str) -> str:
    """A reply that is a string, as text, whichever way the client decoded it."""
    return value.decode() if isinstance(value, bytes) else value


def text(value: Any) -> str | None:
    """A string reply as text, None for a nil."""
    return value.decode() if isinstance(value, bytes) else None


def read(stream: str, after: str, *, count: int, block_ms: int | None = None) -> Call[list[Entry]]:
    """XREAD: up to ``count`` entries of ``stream`` after the id ``after``, waiting up to ``block_ms``."""
    block: tuple[Arg, ...] = () if block_ms is None else ("BLOCK", block_ms)
    return command("XREAD", "COUNT", count, *block, "STREAMS", stream, after, read=_stream_entries)


def _stream_entries(reply: Any) -> list[Entry]:
    return cast("list[Entry]", reply[0][1]) if reply else []


def entries(stream: str, low: str = "-", high: str = "+", *, count: int | None = None) -> Call[list[Entry]]:
    """XRANGE, ``low`` and ``high`` as Redis takes them (``(id`` for exclusive)."""
    limit: tuple[Arg, ...] = () if count is None else ("COUNT", count)
    return command("XRANGE", stream, low, high, *limit, read=lambda reply: cast("list[Entry]", reply))


def newest(stream: str, high: str = "+", low: str = "-") -> Call[Entry | None]:
    """The newest entry of ``stream`` in [low, high] (XREVRANGE), if any."""
    return command("XREVRANGE", stream, high, low, "COUNT", 1, read=lambda reply: reply[0] if reply else None)


def last_generated_id(stream: str) -> Call[str]:
    """The id of the newest entry ever added (kept by trimming too); ``0-0`` for no stream."""
    return Call((("XINFO STREAM", stream),), _last_generated_id)


def _last_generated_id(replies: list[Any]) -> str:
    if isinstance(replies[0], ResponseError):  # no such key
        return "0-0"
    value = raised(replies[0])["last-generated-id"]
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True, slots=True)
class Persistence:
    """What the server can confirm of a write: an AOF fsync (WAITAOF), a replica's copy (WAIT)."""

    aof_enabled: bool
    replicas: int  # replicas connected to it now


def persistence() -> Call[Persistence]:
    return Call(
        (("INFO", "persistence"), ("INFO", "replication")),
        lambda replies: Persistence(
            aof_enabled=bool(int(raised(replies[0]).get("aof_enabled", 0))),
            replicas=int(raised(replies[1]).get("connected_slaves", 0)),
        ),
    )


def replicated(keys: Keys, entry_id: str, timeout_ms: int) -> Call[int]:
    """How many replicas hold the journal up to ``entry_id`` (and everything this connection
    wrote): WAIT counts the replicas that acknowledged this connection's last write, so a write
    comes first, the leader's note of the entry in ``leader:info``, after the entry."""
    return Call((("HSET", keys.leader_info, "replicated", entry_id), ("WAIT", 1, timeout_ms)), _waited)


def _waited(replies: list[Any]) -> int:
    raised(replies[0])
    return int(raised(replies[1]))


def alarm(keys: Keys) -> Call[str | None]:
    """The rollback alarm's reason, if it is set (see :mod:`matchbox.bus.rollback`)."""
    return command("GET", keys.alarm, read=text)


def leader_holder(keys: Keys) -> Call[str | None]:
    """The token of the leader holding the lock (``<name>:<pid>…``), if any."""
    return command("GET", keys.leader, read=text)


def certified(keys: Keys, *, strict: bool) -> Call[bool]:
    """Whether this server process is the one a leader certified, as ``guard.lua`` judges it:
    ``strict`` (a commit's rule) also refuses a server never certified; otherwise (a
    submission's rule) a brand-new exchange, which takes orders before its first leader, is fine."""
    return Call(
        (("GET", keys.certified), ("INFO", "server")),
        lambda replies: _certified(text(raised(replies[0])), raised(replies[1])["run_id"], strict),
    )


def _certified(stored: str | None, run_id: str, strict: bool) -> bool:
    return stored == run_id if stored is not None or strict else True
