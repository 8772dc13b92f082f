"""The one function that turns an input entry into engine events, used by the live loop
(:mod:`~matchbox.leader.runner`) and by replay (:mod:`~matchbox.leader.recovery`) alike, so the
two cannot drift apart."""

from __future__ import annotations

import logging

from matchbox.bus.codec import CodecError, decode_command
from matchbox.engine import Engine
from matchbox.engine.ids import shard_id
from matchbox.engine.types import Event, Rejected, RejectReason

log = logging.getLogger(__name__)


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
        order_id = shard_id(engine.shard, int(oid)) if oid is not None else None
        command = decode_command(fields.get(b"c", b""), seq=seq, ts=ts, order_id=order_id)
    except (CodecError, ValueError) as exc:
        if not quiet:
            log.warning("malformed input entry %s: %s", entry_id, exc)
        return [Rejected(seq=seq, ts=ts, command="", reason=RejectReason.MALFORMED_COMMAND)]
    return engine.apply(command)
