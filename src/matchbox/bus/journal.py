"""Submitting commands to the input journal: one round trip, idempotent, durable as configured.

``Journal.submit`` runs ``submit.lua``: it allocates the order id (INCR), honours a client order
id (the same account and client order id within 24 h returns the first submission's order id and
appends nothing; different content under a used client order id is a conflict), and XADDs the
command. In ``always`` durability, ``WAITAOF 1 0`` rides in the same pipeline, so the reply comes
only once the server's AOF holds the entry on disk (fsynced); in ``everysec``, the server fsyncs
about once a second and up to a second of acknowledged commands can be lost if the *machine*
running Redis dies (a crash of the Redis process alone loses nothing).

What a submission sends and what its replies mean is :func:`submit_call`, with no I/O (see
:mod:`matchbox.bus.calls`): :class:`Journal` runs it on the synchronous bus, and
:class:`~matchbox.bus.aio.AsyncBus` on the asyncio one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import redis

from matchbox.bus import calls
from matchbox.bus.calls import Call, Persistence, as_text
from matchbox.bus.codec import encode_command, needs_version
from matchbox.bus.commit import script_refusal
from matchbox.bus.connection import Bus
from matchbox.bus.durability import Durability, DurabilityError, durability_problem
from matchbox.bus.keys import Keys
from matchbox.engine.ids import shard_id
from matchbox.engine.types import IDS_PER_MS, Command, PlaceOrder

CLIENT_ORDER_ID_TTL_MS = 24 * 3600 * 1000
WAITAOF_TIMEOUT_MS = 5000


def aof_refusal(exc: redis.ResponseError, durability: Durability) -> Exception:
    """WAITAOF's refusal on a server with the AOF off, as the :func:`durability_problem` it is; else ``exc``."""
    if "appendonly is disabled" in str(exc):
        return DurabilityError(durability_problem(durability, Persistence(aof_enabled=False, replicas=0)))
    return exc


@dataclass(frozen=True, slots=True)
class Submission:
    status: Literal["new", "dup", "conflict"]
    order_id: int  # 0 for commands that are not new orders
    entry_id: str  # the input entry: its id names the outcome's events (their "in" field)
    shard: int = 0  # whose journal holds the entry


@dataclass(frozen=True, slots=True)
class Request:
    command: Command
    client_order_id: str | None = None


def submit_arguments(keys: Keys, requests: Sequence[Request], seen_events: int = 0) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV for ``submit.lua``; ``seen_events``: the most events the caller saw committed."""
    script_keys = [keys.input, keys.order_id, keys.alarm, keys.certified, keys.offset, keys.journal_version]
    needed = max((needs_version(request.command) for request in requests), default=1)
    args: list[Any] = [len(requests), CLIENT_ORDER_ID_TTL_MS, seen_events, IDS_PER_MS, needed]
    for request in requests:
        command = request.command
        payload = encode_command(command)
        is_order = isinstance(command, PlaceOrder)
        cid_index = 0
        if request.client_order_id:
            account = getattr(command, "account", "")
            script_keys.append(keys.client_order(account, request.client_order_id))
            cid_index = len(script_keys)
        digest = hashlib.blake2b(payload, digest_size=12).hexdigest()
        args += ["1" if is_order else "0", cid_index, digest, payload]
    return script_keys, args


def submit_call(
    keys: Keys, requests: Sequence[Request], durability: Durability, seen_events: int = 0
) -> Call[list[Submission]]:
    """``submit.lua`` for ``requests``, followed in ``always`` durability by ``WAITAOF 1 0`` in the same
    round trip; the replies read as one submission per request, or raised as what they mean."""
    script_keys, args = submit_arguments(keys, requests, seen_events)
    shard = keys.shard
    call = calls.script_call(
        "submit", script_keys, args, read=lambda result: parse_submit(result, shard), meaning=script_refusal
    )
    if durability is Durability.EVERYSEC:
        return call
    submit = call.read
    waits: tuple[calls.Command, ...] = (("WAITAOF", 1, 0, WAITAOF_TIMEOUT_MS),)
    if durability is Durability.REPLICATED:
        waits += (("WAIT", 1, WAITAOF_TIMEOUT_MS),)
    return replace(
        call,
        commands=(*call.commands, *waits),
        read=lambda replies: durable_submissions(submit(replies[:1]), replies[1:], durability),
    )


def parse_submit(result: Sequence[Sequence[Any]], shard: int) -> list[Submission]:
    """``submit.lua``'s replies; its order ids are the shard's own numbers, made whole here."""
    return [
        Submission(as_text(status), shard_id(shard, int(oid)) if int(oid) else 0, as_text(entry), shard)  # type: ignore[arg-type]
        for status, oid, entry in result
    ]


def durable_submissions(
    submissions: list[Submission], waited: Sequence[Any], durability: Durability
) -> list[Submission]:
    """``submissions``, once ``WAITAOF`` (and in ``replicated`` durability ``WAIT``) answered
    ``waited``: raises if a command was appended (now, or by the first submission of a repeat) but
    the server did not confirm the fsync (or cannot: its AOF is off), or no replica confirmed holding it."""
    for reply in waited:
        if isinstance(reply, redis.ResponseError):
            raise aof_refusal(reply, durability)
    if all(s.status == "conflict" for s in submissions):
        return submissions  # nothing is acknowledged: no wait to judge
    # A repeat ("dup") is waited for as a new command is: its first submission's wait may have
    # failed (no replica held it yet), and this answer acknowledges it (submit.lua wrote, so the
    # waits cover the first submission too).
    fsynced_locally, _replicas = waited[0]
    if int(fsynced_locally) < 1:
        raise DurabilityError(
            f"the server did not confirm the AOF fsync within {WAITAOF_TIMEOUT_MS} ms: is appendonly on? "
            "(CONFIG SET appendonly yes)"
        )
    if durability is Durability.REPLICATED and int(waited[1]) < 1:
        raise DurabilityError(
            f"no replica confirmed holding the command within {WAITAOF_TIMEOUT_MS} ms: is one attached and "
            "caught up? (INFO replication on the master)"
        )
    return submissions


class Journal:
    """The input side of one shard."""

    def __init__(self, bus: Bus, durability: Durability = Durability.ALWAYS) -> None:
        self.bus = bus
        self.durability = durability

    def submit(self, command: Command, client_order_id: str | None = None) -> Submission:
        return self.submit_many([Request(command, client_order_id)])[0]

    def submit_many(self, requests: Sequence[Request]) -> list[Submission]:
        """Append up to a few hundred commands in one round trip; one submission per request."""
        if not requests:
            return []
        return self.bus.run(submit_call(self.bus.keys, requests, self.durability))
