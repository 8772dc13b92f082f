"""Recovery: rebuild the engine from the newest snapshot plus the journal after it, check it
against what was committed, and refuse to go on if Redis went back in time.
Replay goes through :func:`~matchbox.leader.apply.apply_entry`, as the live loop does.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from matchbox.bus.commit import Offset, StoredSnapshot
from matchbox.bus.connection import Bus, id_order
from matchbox.bus.rollback import Witness, disagreements, raise_alarm, read_alarm
from matchbox.engine import Engine
from matchbox.engine.snapshot import collector_paused
from matchbox.leader.apply import apply_entry

log = logging.getLogger(__name__)

REPLAY_CHUNK = 5000
HASH_DUTY = 20  # a state hash waits 20 times as long as the last one took: under 5 % of the time
WATERMARK_EVERY_S = 0.05


class RollbackDetected(RuntimeError):
    """Redis holds an older state than the engine once committed. Matching must not go on."""


def recover(bus: Bus, offset: Offset, snapshot: StoredSnapshot | None) -> tuple[Engine, int]:
    """The engine as of the committed offset, and how many entries were replayed to get there."""
    started = time.monotonic()
    # no collector passes while the book is rebuilt: a full one over a large book holds the GIL
    # for long enough (seconds, on a busy machine) to starve the thread that keeps the lease
    with collector_paused(promote=True):
        if snapshot is not None:
            engine = Engine.restore(snapshot.data, bus.keys.shard)
            start = snapshot.offset
        else:
            engine, start = Engine(bus.keys.shard), Offset()
        position, checked = replay(bus, engine, start, offset)
    check_counts(position, offset)
    if offset.id and not checked:
        log.warning("the committed state hash (at %s) predates the snapshot; not checked", offset.hash_at)
    log.info(
        "recovered",
        extra={
            "from_snapshot": start.id or None,
            "replayed": position.inputs - start.inputs,
            "seconds": round(time.monotonic() - started, 3),
        },
    )
    return engine, position.inputs - start.inputs


def replay(
    bus: Bus, engine: Engine, position: Offset, offset: Offset, *, until: float | None = None, check: bool = True
) -> tuple[Offset, bool]:
    """Apply the journal after ``position`` up to the committed ``offset`` to ``engine``, output
    suppressed; stop early, between chunks, once ``time.monotonic()`` passes ``until``.

    Returns where it got to (the last entry applied, with the input and event counts) and
    whether it checked the state hash on the way: at ``offset.hash_at``, unless not ``check``
    (RollbackDetected if it differs).
    """
    inputs, n, cursor = position.inputs, position.events, position.id
    checked = check and check_hash(engine, offset, cursor)
    while offset.id and cursor != offset.id and (until is None or time.monotonic() < until):
        low = f"({cursor}" if cursor else "-"
        entries = bus.range(bus.keys.input, low, offset.id, count=REPLAY_CHUNK)
        if not entries:
            break
        for raw_id, fields in entries:
            inputs += 1
            cursor = raw_id.decode()
            n += len(apply_entry(engine, cursor, fields, inputs, quiet=True))
            checked = checked or (check and check_hash(engine, offset, cursor))
    return Offset(cursor, inputs, n), checked


def check_counts(position: Offset, offset: Offset) -> None:
    """A replay that reached the committed offset must have counted what the commit counted."""
    if (position.id, position.inputs, position.events) != (offset.id, offset.inputs, offset.events):
        raise RollbackDetected(
            f"replaying the journal to {offset.id!r} gave {position.inputs} inputs and {position.events} events "
            f"(to {position.id!r}); the commit says {offset.inputs} and {offset.events}. The journal or a "
            "snapshot was changed or trimmed under the engine; restore Redis from a backup that holds the "
            "whole journal"
        )


def check_hash(engine: Engine, offset: Offset, position: str) -> bool:
    """At the input id the committed hash was taken at, check the replayed state against it."""
    if not offset.hash or position != offset.hash_at:  # no hash was taken yet (the first batches)
        return False
    actual = engine.state_hash()
    if actual != offset.hash:
        raise RollbackDetected(
            f"replaying the journal to {position} gave the state hash {actual[:12]}; the commit says "
            f"{offset.hash[:12]}. The journal or a snapshot was changed under the engine; restore Redis "
            "from a backup that holds the whole journal"
        )
    return True


def check_rollback(
    bus: Bus, epoch: int, offset: Offset, snapshot: StoredSnapshot | None, witnesses: Sequence[Witness]
) -> None:
    """Halt, and raise the alarm, if Redis holds an older state than the one committed: it would
    reuse ids. ``witnesses``: what others saw committed (see :mod:`matchbox.bus.rollback`)."""
    alarm = read_alarm(bus)
    if alarm is not None:
        raise RollbackDetected(f"the exchange is halted by the rollback alarm: {alarm}. {_WHAT_TO_DO}")
    problems = _inconsistencies(bus, epoch, offset, snapshot) + disagreements(bus, witnesses, offset)
    if problems:
        reason = raise_alarm(bus, "Redis went back in time: " + "; ".join(problems))
        raise RollbackDetected(
            f"{reason}. Matching is halted so that no order id, trade id or event number is reused. {_WHAT_TO_DO}"
        )


_WHAT_TO_DO = (
    "Restore the newest Redis data (AOF) and clear the alarm (matchbox alarm --clear); or, to start a "
    "new history on purpose, clear the Redis keys mb:{0}:*, the watermark files and the consumers' database."
)


def _inconsistencies(bus: Bus, epoch: int, offset: Offset, snapshot: StoredSnapshot | None) -> list[str]:
    """How Redis disagrees with itself: streams, epoch and snapshots behind the committed offset."""
    keys = bus.keys
    problems = []
    input_last = bus.last_generated_id(keys.input)
    events_last = bus.last_generated_id(keys.events)
    if offset.id:
        if epoch <= offset.epoch:
            problems.append(f"the fencing epoch went back ({epoch} after a commit under {offset.epoch})")
        if id_order(input_last) < id_order(offset.id):
            problems.append(f"the input journal ends at {input_last}, before the committed offset {offset.id}")
        if offset.last_event and events_last != offset.last_event:
            problems.append(f"the output stream ends at {events_last}, the commit says {offset.last_event}")
    elif events_last != "0-0" or snapshot is not None:
        problems.append("events or snapshots exist but no committed offset does")
    if snapshot is not None and id_order(snapshot.offset.id) > id_order(offset.id or "0-0"):
        problems.append(f"the newest snapshot ({snapshot.offset.id}) is ahead of the committed offset")
    return problems


class Watermark:
    """A local file with the highest state this candidate saw committed: Redis can lose its data,
    this file remembers it was there (see ``check_rollback``). Written at most every
    ``WATERMARK_EVERY_S`` unless forced (cheap enough for the commit path; the process's memory
    is the exact witness while it lives, the file is what survives it).

    It never goes down: a write of an older state than the file holds is ignored, so a rolled-back
    Redis can never talk the file into forgetting. Each write is fsynced before it replaces the
    file; a file that still cannot be read stops this candidate (it cannot vouch for Redis)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._written = 0.0
        self._high = 0  # inputs of the highest state recorded (read lazily from the file)
        self._loaded = False

    def write(self, offset: Offset, *, force: bool) -> None:
        """Record ``offset``; at most every ``WATERMARK_EVERY_S`` unless ``force``."""
        if self.path is None or not offset.id:
            return
        now = time.monotonic()
        if not force and now - self._written < WATERMARK_EVERY_S:
            return
        if not self._loaded:
            try:
                self.read()
            except RollbackDetected:
                return  # never overwrite what cannot be read: the next read says why
        if offset.inputs < self._high:
            return
        self._written, self._high = now, offset.inputs
        tmp = self.path.with_suffix(".tmp")
        record = {"id": offset.id, "inputs": offset.inputs, "events": offset.events, "last_event": offset.last_event}
        with tmp.open("w") as file:
            file.write(json.dumps(record))
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, self.path)

    def read(self) -> Offset | None:
        if self.path is None or not self.path.exists():
            self._loaded = True
            return None
        try:
            data = json.loads(self.path.read_text())
            mark = Offset(
                id=str(data["id"]),
                inputs=int(data["inputs"]),
                events=int(data["events"]),
                last_event=str(data.get("last_event", "")),
            )
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise RollbackDetected(
                f"the watermark file {self.path} cannot be read ({exc!r}): this candidate cannot tell "
                "whether Redis went back in time. Other candidates can lead meanwhile; move the file "
                "away to start this one without its memory."
            ) from None
        self._high, self._loaded = max(self._high, mark.inputs), True
        return mark
