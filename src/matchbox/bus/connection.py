"""One shard of the bus on redis-py: a client, the shard's keys, and :meth:`Bus.run`.

What the bus sends and what the replies mean is described once, without I/O, in
:mod:`matchbox.bus.calls` (reads), :mod:`matchbox.bus.journal` (submissions) and
:mod:`matchbox.bus.commit` (commits); this transport only sends a call's commands and hands
the replies back. :class:`~matchbox.bus.aio.AsyncBus` does the same on redis.asyncio.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import redis
from redis.cluster import RedisCluster
from redis.exceptions import MovedError, NoScriptError

from matchbox.bus import calls
from matchbox.bus.calls import CONNECT_OPTIONS, Call, Command, Entry, id_order
from matchbox.bus.durability import Durability, durability_problem
from matchbox.bus.keys import Keys

__all__ = ["Bus", "Entry", "id_order"]  # Entry and id_order: where most of the code imports them from

T = TypeVar("T")
U = TypeVar("U")


class Bus:
    """The keys of one shard on one Redis/Valkey server, and the client that sends its calls."""

    def __init__(self, client: redis.Redis, shard: int = 0) -> None:
        self.client = client
        self.keys = Keys(shard)

    @classmethod
    def connect(cls, url: str, shard: int = 0, **options: Any) -> Bus:
        """A bus over a new client for ``url`` (bytes responses; :data:`~matchbox.bus.calls.CONNECT_OPTIONS`)."""
        return cls(redis.Redis.from_url(url, **{**CONNECT_OPTIONS, **options}), shard)

    @property
    def routed(self) -> redis.Redis | RedisCluster:
        """A client for keys outside the shard (accounts, the market directory): on one server,
        the same; on a cluster, one that routes each key to its slot."""
        return self.client

    def close(self) -> None:
        self.client.close()

    def problems(self, durability: Durability) -> list[str]:
        """What keeps the server from giving ``durability`` (and on a cluster, its settings), each
        a line with its fix, for the log at start and ``/ready``."""
        problem = durability_problem(durability, self.persistence())
        return [problem] if problem else []

    def reconnect(self) -> None:
        """After an outage, before trying again: nothing to do on one server (its pool reconnects);
        a cluster finds the shard's master again (:meth:`ClusterBus.reconnect`)."""

    def where(self) -> str:
        """The server, for a log line: ``host:port`` or the socket's path (never a password)."""
        options = self.client.connection_pool.connection_kwargs
        return str(options.get("path") or f"{options.get('host')}:{options.get('port')}")

    def run(self, call: Call[T]) -> T:
        """Send ``call``'s commands in one round trip and read the replies (see :class:`~matchbox.bus.calls.Call`)."""
        replies = self._send(call.commands)
        if call.missing_script(replies):
            call = call.reloading()
            replies = self._send(call.commands)
        return call.read(replies)

    def run_then(self, first: Call[T], then: Callable[[T], None], second: Call[U]) -> U:
        """``first`` and ``second`` in one round trip; ``then`` gets ``first``'s result as soon as
        its replies are in, before ``second``'s (which may block: an XREAD) are waited for.

        A refusal in ``first`` raises, and ``second``'s reply is left unread (its connection is
        closed). A forgotten script or a moved slot: the two are sent again one at a time, as
        :meth:`run` sends a call (which loads the script, or follows the slot).
        """
        with self._exchange((*first.commands, *second.commands)) as reply:
            replies = [reply() for _ in first.commands]
            if not any(isinstance(r, (NoScriptError, MovedError)) for r in replies):
                then(first.read(replies))
                return second.read([reply() for _ in second.commands])
        then(self.run(first))
        return self.run(second)

    def _send(self, commands: tuple[Command, ...]) -> list[Any]:
        with self._exchange(commands) as reply:
            return [reply() for _ in commands]

    @contextlib.contextmanager
    def _exchange(self, commands: tuple[Command, ...]) -> Iterator[Callable[[], Any]]:
        """Send ``commands`` in one write, on a connection of the pool; what it yields reads the
        next reply (an error reply as its exception object).

        Nothing is sent twice: redis-py's own retry (which sends a command again after a lost
        connection, whether or not the server ran it) is not used, and a failure is raised to
        the caller, whose rule says what is safe to try again. A connection left with replies
        unread (a failure, or a caller that stopped early) is closed, never handed on.
        """
        client = self.client
        pool = client.connection_pool
        connection = pool.get_connection()
        names = iter(str(command[0]) for command in commands)
        unread = len(commands)

        def reply() -> Any:
            nonlocal unread
            try:
                answer = client.parse_response(connection, next(names))  # type: ignore[no-untyped-call]
            except redis.ResponseError as exc:
                answer = exc
            unread -= 1
            return answer

        try:
            connection.send_packed_command(connection.pack_commands(commands))  # type: ignore[no-untyped-call]
            yield reply
        finally:
            if unread:
                connection.disconnect()  # type: ignore[no-untyped-call]
            pool.release(connection)

    # ------------------------------------------------------------------ reads (see matchbox.bus.calls)

    def read(self, stream: str, after: str, *, count: int, block_ms: int | None = None) -> list[Entry]:
        return self.run(calls.read(stream, after, count=count, block_ms=block_ms))

    def range(self, stream: str, low: str = "-", high: str = "+", *, count: int | None = None) -> list[Entry]:
        return self.run(calls.entries(stream, low, high, count=count))

    def last(self, stream: str) -> Entry | None:
        return self.run(calls.newest(stream))

    def persistence(self) -> calls.Persistence:
        return self.run(calls.persistence())

    def last_generated_id(self, stream: str) -> str:
        return self.run(calls.last_generated_id(stream))
