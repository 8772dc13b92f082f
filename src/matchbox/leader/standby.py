"""A warm standby: while a candidate waits for the lock, it keeps an engine as of the committed journal.

Restoring a large book takes longer than a lock lives (a million resting orders: about a second
to restore, more to replay the journal after the snapshot). So a candidate does it while it
waits: it restores the newest snapshot, then follows the journal as it is committed — the input
entries up to the committed offset, applied with their output suppressed exactly as recovery
replays them (:func:`matchbox.leader.recovery.replay`), the state hash checked when it passes
the offset's ``hash_at`` (at most 1/HASH_DUTY of the time, as the leader hashes: a check holds
the candidate up for as long as it takes, over a second for a million orders). A candidate that
wins the lock takes the engine over (:meth:`Standby.take`) and replays only what was committed
since the standby's last step; the election itself (the fencing epoch, the rollback checks) is
the same as after a cold start.

The standby restores the newest snapshot when it has no engine, and when the journal no longer
holds its position (it fell behind a snapshot, and the journal behind the kept snapshots was
trimmed); otherwise replaying the few entries since its last step is far cheaper than a restore,
so a newer snapshot alone is no reason to restore. When what it follows does not add up (the
committed offset went back, the journal has a gap, the counts or the hash differ) it drops its
engine and stays cold until a newer snapshot appears: a takeover then recovers from scratch,
which halts the exchange if the data really is inconsistent. The standby never decides that on
its own.
"""

from __future__ import annotations

import logging
import time

from matchbox.bus.commit import Offset, StoredSnapshot, latest_snapshot, read_offset
from matchbox.bus.connection import Bus, id_order
from matchbox.engine import Engine, SnapshotError
from matchbox.leader.recovery import HASH_DUTY, RollbackDetected, check_counts, replay

log = logging.getLogger(__name__)


class Standby:
    """A candidate's engine as of the committed journal, kept while it waits (see the module docstring)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.engine: Engine | None = None
        self.position = Offset()  # what ``engine`` reflects: the last input entry applied, and the counts
        self.snapshot_id = ""  # the newest snapshot seen (its entry id in the snapshot stream)
        self.hash_checked_at = ""  # the last ``hash_at`` whose hash was checked
        self._checked = 0.0  # time.monotonic() when the last hash check ended
        self.pass_seconds = 0.0  # how long a pass over the whole book took here: the last hash check, or restore
        self.benched = False  # what it followed did not add up: cold until a newer snapshot appears
        self.warm = False  # caught up with the committed offset since the last restore
        self.restores = 0
        self.followed = 0  # input entries applied while following

    def follow(self, until: float) -> Offset | None:
        """Catch up with the committed journal, stopping between chunks once ``time.monotonic()``
        passes ``until``. Returns the committed offset it read (None before the first commit)."""
        offset = read_offset(self.bus)
        newer = latest_snapshot(self.bus, after=self.snapshot_id)  # its bytes come once, when it appears
        if newer is not None:
            self.snapshot_id = newer.entry_id
        if self.engine is None and (newer is not None or not self.benched):
            self._restore(newer)  # None: nothing was ever snapshotted, the whole journal is there
        elif self.engine is not None and offset is not None and self._trimmed_past(offset):
            self._restore(latest_snapshot(self.bus))
        if self.engine is not None and offset is not None:
            try:
                self._catch_up(self.engine, offset, until)
            except RollbackDetected as exc:
                self._bench(str(exc))
        return offset

    def take(self, offset: Offset) -> tuple[Engine, int] | None:
        """The engine brought up to the committed ``offset`` for a new leader, and how many entries
        that replayed; None if the standby is cold, or the journal no longer holds its position,
        or it does not add up (the leader then recovers from the snapshot). The engine is the
        leader's from now on: the standby starts again from a snapshot after the term.

        The counts are checked, not the hash: hashing a large book takes longer than a takeover
        may, and the standby checked the hash as it followed.
        """
        engine, start = self.engine, self.position
        trimmed = engine is not None and self._trimmed_past(offset)
        self.engine, self.position, self.snapshot_id, self.warm = None, Offset(), "", False
        if engine is None or trimmed:
            return None
        try:
            if id_order(offset.id) < id_order(start.id):
                raise RollbackDetected(f"the committed offset {offset.id!r} is behind the standby ({start.id})")
            position, _ = replay(self.bus, engine, start, offset, check=False)
            check_counts(position, offset)
        except RollbackDetected as exc:
            log.warning("the standby engine does not add up (%s); recovering from the snapshot", exc)
            return None
        return engine, position.inputs - start.inputs

    def _restore(self, snapshot: StoredSnapshot | None) -> None:
        started = time.monotonic()
        self.engine, self.warm = None, False  # a restore that fails leaves the standby cold
        try:
            engine = (
                Engine.restore(snapshot.data, self.bus.keys.shard)
                if snapshot is not None
                else Engine(self.bus.keys.shard)
            )
        except SnapshotError as exc:
            self._bench(f"the snapshot {self.snapshot_id} does not restore: {exc}")
            return
        start = snapshot.offset if snapshot is not None else Offset()
        self.engine, self.position = engine, Offset(start.id, start.inputs, start.events)
        self.benched, self.pass_seconds = False, time.monotonic() - started
        self.restores += 1
        log.info(
            "standby restored",
            extra={"snapshot": start.id or None, "seconds": round(self.pass_seconds, 3)},
        )

    def _trimmed_past(self, offset: Offset) -> bool:
        """Whether the journal no longer holds the standby's position, so it cannot replay from it
        (the journal is only ever trimmed from its start: if the position is there, so is the rest)."""
        at = self.position.id
        return bool(at) and at != offset.id and not self.bus.range(self.bus.keys.input, at, at, count=1)

    def _catch_up(self, engine: Engine, offset: Offset, until: float) -> None:
        if id_order(offset.id) < id_order(self.position.id):
            raise RollbackDetected(f"the committed offset {offset.id!r} went back behind the standby's")
        started = time.monotonic()
        check = offset.hash_at != self.hash_checked_at and started - self._checked >= HASH_DUTY * self.pass_seconds
        position, checked = replay(self.bus, engine, self.position, offset, until=until, check=check)
        if checked:  # (the few entries replayed with it count as hashing: on the safe side)
            self.hash_checked_at, self._checked = offset.hash_at, time.monotonic()
            self.pass_seconds = self._checked - started
        self.followed += position.inputs - self.position.inputs
        self.position = position
        if position.id != offset.id:
            if time.monotonic() < until:  # it stopped with time left: the entries are not there
                raise RollbackDetected(f"the journal has no entries after {position.id!r} up to {offset.id!r}")
            return
        check_counts(position, offset)
        if not self.warm:
            self.warm = True
            log.info("standby warm", extra={"offset": offset.id, "inputs": offset.inputs})

    def _bench(self, reason: str) -> None:
        log.warning("standby: %s; cold until a newer snapshot", reason)
        self.engine, self.warm, self.benched = None, False, True
