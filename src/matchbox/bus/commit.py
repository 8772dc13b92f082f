"""The engine's side of the bus: the committed offset, batch commits, and engine snapshots.

A commit is one call of ``commit.lua``: it checks the fencing epoch and that the batch follows
the committed offset, and only then appends the batch's events, moves the offset (with the
input count, the event count and the state hash after the batch). Either all of that happens or
none of it.

What a commit sends and what its reply means is :func:`commit_call` (no I/O, as every call of the
bus: see :mod:`matchbox.bus.calls`); :func:`commit` runs it on the synchronous bus.

Event stream ids are derived from the input: the event numbered ``n`` that the input entry
``<ms>-<k>`` caused gets the id ``<ms>-<n>``. Input ids never go back in time and ``n`` only
grows, so the ids increase, and re-emitting an event (same ``n``) is refused by XADD itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from matchbox.bus import calls
from matchbox.bus.calls import Call, Entry
from matchbox.bus.connection import Bus
from matchbox.bus.keys import Keys


class CommitRefused(RuntimeError):
    """FENCED: another leader won a later epoch. STALE: the offset moved under us. Write nothing more."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.fenced = message.startswith("FENCED")


class Uncertified(CommitRefused):
    """This Redis restarted or took over and no leader has checked it yet (see
    :mod:`matchbox.bus.rollback`): a leader steps down and checks it; a submitter retries shortly."""


class EngineTooOld(RuntimeError):
    """A command needs a newer journal version than this shard's engine leader has recorded: its
    engines are to be upgraded first (nothing was appended)."""


class RollbackAlarm(RuntimeError):
    """The exchange is halted: Redis holds less than a witness saw (see :mod:`matchbox.bus.rollback`)."""


def script_refusal(exc: redis.ResponseError) -> Exception:
    """A script's refusal as what it means (by the reply's first word), or ``exc`` itself."""
    message = str(exc)  # a script's own error: never redis-py's annotated pipeline message (see Bus.run)
    word, _, rest = message.partition(" ")
    if word == "ALARM":
        return RollbackAlarm(rest)
    if word == "UNCERTIFIED":
        return Uncertified(rest)
    if word in ("FENCED", "STALE"):
        return CommitRefused(message)
    if word == "OLDENGINE":
        return EngineTooOld(rest)
    return exc


@dataclass(frozen=True, slots=True)
class Offset:
    """What the engine has committed: the last input entry applied, and the state after it."""

    id: str = ""  # "" before the first commit
    inputs: int = 0  # input entries applied since the beginning (the last one's seq)
    events: int = 0  # events emitted since the beginning (the last one's n)
    hash: str = ""  # the engine's state hash at ``hash_at``
    epoch: int = 0
    last_event: str = ""  # stream id of the last event emitted
    hash_at: str = ""  # the input id the hash was taken at: ``id``, or a little behind it under load

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes]) -> Offset:
        text = {k.decode(): v.decode() for k, v in raw.items()}
        return cls(
            id=text.get("id", ""),
            inputs=int(text.get("inputs", 0)),
            events=int(text.get("events", 0)),
            hash=text.get("hash", ""),
            epoch=int(text.get("epoch", 0)),
            last_event=text.get("last_event", ""),
            hash_at=text.get("hash_at", text.get("id", "")),
        )


@dataclass(slots=True)
class Batch:
    """One commit's worth of output."""

    follows: str  # the offset id the batch was applied on top of
    offset: Offset  # the offset after it
    events: list[tuple[str, bytes]] = field(default_factory=list)  # (stream id, event JSON)
    # "<read ns>,<matched ns>" (monotonic) of its input entries: the first event's field "t"
    stages: str = ""


def offset_call(keys: Keys) -> Call[Offset | None]:
    """The committed offset, None before the first commit."""
    return calls.command("HGETALL", keys.offset, read=lambda raw: Offset.from_hash(raw) if raw else None)


def read_offset(bus: Bus) -> Offset | None:
    return bus.run(offset_call(bus.keys))


def commit_call(keys: Keys, epoch: int, batch: Batch) -> Call[None]:
    """``commit.lua`` for ``batch`` under ``epoch``; its reply read as nothing, or as the refusal it is."""
    offset = batch.offset
    return calls.script_call(
        "commit",
        [keys.epoch, keys.offset, keys.events, keys.alarm, keys.certified],
        [
            epoch,
            batch.follows,
            offset.id,
            offset.inputs,
            offset.events,
            offset.hash,
            offset.hash_at,
            b"".join(b"%s %s\n" % (event_id.encode(), payload) for event_id, payload in batch.events),
            batch.stages,
        ],
        read=lambda _count: None,
        meaning=script_refusal,
    )


def commit(bus: Bus, epoch: int, batch: Batch) -> None:
    bus.run(commit_call(bus.keys, epoch, batch))


def commit_and_read(
    bus: Bus, epoch: int, batch: Batch, committed: Callable[[], None], *, count: int, block_ms: int
) -> list[Entry]:
    """Commit ``batch``, then wait up to ``block_ms`` for the input entries after it, in one round
    trip; ``committed`` is called once the commit is acknowledged, before the wait.

    The XREAD rides behind the commit in the same write, so a busy leader sends one request per
    batch, and an idle one is woken by the next submission itself. A refused commit raises.
    """
    reading = calls.read(bus.keys.input, batch.offset.id, count=count, block_ms=block_ms)
    return bus.run_then(commit_call(bus.keys, epoch, batch), lambda _: committed(), reading)


# --------------------------------------------------------------------------- snapshots


@dataclass(frozen=True, slots=True)
class StoredSnapshot:
    offset: Offset  # what the snapshot reflects (epoch and last_event unset)
    data: bytes
    entry_id: str = ""  # its id in the snapshot stream


def store_snapshot(bus: Bus, epoch: int, offset: Offset, data: bytes, *, keep: int, trim_input: bool) -> int:
    """Store a snapshot taken at the committed ``offset``; return how many input entries were trimmed."""
    keys = bus.keys
    return bus.run(
        calls.script_call(
            "snapshot",
            [keys.epoch, keys.offset, keys.snapshot, keys.input],
            [epoch, offset.id, offset.inputs, offset.events, offset.hash, data, keep, "1" if trim_input else "0"],
            read=int,
            meaning=script_refusal,
        )
    )


def latest_snapshot(bus: Bus, after: str = "") -> StoredSnapshot | None:
    """The newest stored snapshot; with ``after`` (a snapshot's entry id), only if it is newer than that one."""
    found: Entry | None = bus.run(calls.newest(bus.keys.snapshot, "+", f"({after}" if after else "-"))
    if found is None:
        return None
    entry_id, fields = found
    offset = Offset(
        id=fields[b"in"].decode(),
        inputs=int(fields[b"inputs"]),
        events=int(fields[b"events"]),
        hash=fields[b"hash"].decode(),
    )
    return StoredSnapshot(offset, fields[b"data"], entry_id.decode())


def event_id(input_id: str, n: int) -> str:
    """The stream id of event ``n``, caused by the input entry ``input_id``."""
    return f"{input_id.partition('-')[0]}-{n}"
