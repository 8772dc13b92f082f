"""Recovery: rebuild the engine from the newest snapshot plus the journal after it, check it
against what was committed, and refuse to go on if Redis went back in time.

Also the one function that turns an input entry into engine events (``apply_entry``), used by
the live loop and by replay alike, so the two cannot drift apart.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from matchbox.bus.codec import CodecError, decode_command
from matchbox.bus.commit import Offset, StoredSnapshot
from matchbox.bus.connection import Bus, id_order
from matchbox.engine import Engine
from matchbox.engine.types import Event, Rejected, RejectReason

log = logging.getLogger(__name__)

REPLAY_CHUNK = 5000


class RollbackDetected(RuntimeError):
    """Redis holds an older state than the engine once committed. Matching must not go on."""


def recover(bus: Bus, offset: Offset, snapshot: StoredSnapshot | None) -> tuple[Engine, int]:
    """The engine as of the committed offset, and how many entries were replayed to get there."""
    started = time.monotonic()
    if snapshot is not None:
        engine = Engine.restore(snapshot.data)
        position = snapshot.offset
    else:
        engine, position = Engine(), Offset()
    inputs, n = position.inputs, position.events
    cursor = position.id
    checked = check_hash(engine, offset, cursor)
    while offset.id and cursor != offset.id:
        low = f"({cursor}" if cursor else "-"
        entries = bus.range(bus.keys.input, low, offset.id, count=REPLAY_CHUNK)
        if not entries:
            break
        for raw_id, fields in entries:
            inputs += 1
            cursor = raw_id.decode()
            n += len(apply_entry(engine, cursor, fields, inputs, quiet=True))
            checked = checked or check_hash(engine, offset, cursor)
    if (inputs, n) != (offset.inputs, offset.events):
        raise RollbackDetected(
            f"replaying the journal to {offset.id!r} gave {inputs} inputs and {n} events; the commit says "
            f"{offset.inputs} and {offset.events}. The journal or a snapshot was changed or trimmed under "
            "the engine; restore Redis from a backup that holds the whole journal"
        )
    if offset.id and not checked:
        log.warning("the committed state hash (at %s) predates the snapshot; not checked", offset.hash_at)
    log.info(
        "recovered",
        extra={
            "from_snapshot": position.id or None,
            "replayed": inputs - position.inputs,
            "seconds": round(time.monotonic() - started, 3),
        },
    )
    return engine, inputs - position.inputs


def check_hash(engine: Engine, offset: Offset, position: str) -> bool:
    """At the input id the committed hash was taken at, check the replayed state against it."""
    if not offset.id or position != offset.hash_at:
        return False
    actual = engine.state_hash()
    if actual != offset.hash:
        raise RollbackDetected(
            f"replaying the journal to {position} gave the state hash {actual[:12]}; the commit says "
            f"{offset.hash[:12]}. The journal or a snapshot was changed under the engine; restore Redis "
            "from a backup that holds the whole journal"
        )
    return True


def check_rollback(bus: Bus, epoch: int, offset: Offset, snapshot: StoredSnapshot | None, mark: Offset | None) -> None:
    """Halt if Redis holds an older state than the one committed: it would reuse ids."""
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
    if mark is not None and mark.inputs > offset.inputs:
        problems.append(
            f"this leader once saw {mark.inputs} inputs committed (offset {mark.id}); Redis now holds "
            f"{offset.inputs} (offset {offset.id or 'none'})"
        )
    if problems:
        raise RollbackDetected(
            "Redis went back in time: "
            + "; ".join(problems)
            + ". Matching is halted so that no order id, trade id or event number is reused. "
            "Restore the newest Redis data (AOF), or, to start a new history on purpose, clear the "
            "Redis keys mb:{0}:* and the watermark file."
        )


class Watermark:
    """A local file with the highest state this candidate saw committed: Redis can lose its data,
    this file remembers it was there (see ``check_rollback``)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._written = 0.0

    def write(self, offset: Offset, *, force: bool) -> None:
        """Record ``offset``; at most once a second unless ``force``."""
        if self.path is None or not offset.id:
            return
        now = time.monotonic()
        if not force and now - self._written < 1.0:
            return
        self._written = now
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"id": offset.id, "inputs": offset.inputs, "events": offset.events}))
        os.replace(tmp, self.path)

    def read(self) -> Offset | None:
        if self.path is None or not self.path.exists():
            return None
        data = json.loads(self.path.read_text())
        return Offset(id=data["id"], inputs=int(data["inputs"]), events=int(data["events"]))


def apply_entry(
    engine: Engine, entry_id: str, fields: dict[bytes, bytes], seq: int, *, quiet: bool = False
) -> list[Event]:
    """Apply one input entry (the ``seq``-th of the journal) to ``engine``; return its events.

    The command's time is the entry id's millisecond part, in ns. A malformed entry is one
    ``Rejected`` event (MALFORMED_COMMAND) and changes nothing; it never stops the leader.
    """
    ts = int(entry_id.partition("-")[0]) * 1_000_000
    oid = fields.get(b"oid")
    try:
        order_id = int(oid) if oid is not None else None
        command = decode_command(fields.get(b"c", b""), seq=seq, ts=ts, order_id=order_id)
    except (CodecError, ValueError) as exc:
        if not quiet:
            log.warning("malformed input entry %s: %s", entry_id, exc)
        return [Rejected(seq=seq, ts=ts, command="", reason=RejectReason.MALFORMED_COMMAND)]
    return engine.apply(command)
