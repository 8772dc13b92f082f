"""Rollbacks: a Redis that holds less than it once did must never hand out an id a second time.

Redis can go back in time: a backup restored, an ``everysec`` AOF that lost its last second with
the machine, a replica promoted before it caught up. What it forgot, others remember — the
*witnesses*: each engine candidate (the offset it committed or followed, in memory and in its
watermark file), each API instance (the highest event its tail read), each consumer group (its
SQL tracking row, the newest event it stored). A witness that remembers more than Redis holds
proves a rollback.

Three rules keep ids from repeating (docs/events.md, "Rollbacks"):

- **Certification.** Every script that hands out ids or writes history (``submit``, ``commit``)
  refuses to run on a server process that no leader has *certified*: a leader, on winning, checks
  the data against every witness it can reach and only then stores the server's run id in
  ``certified``. A restart, a promoted replica or a restored backup has a new run id, so nothing is
  handed out on it before that check.
- **The alarm.** A witness that finds Redis behind it sets ``alarm`` (the first reason wins). While
  it is set, ``submit`` and ``commit`` refuse everything, leaders halt, and ``/ready`` says why.
  Only an operator clears it (``matchbox alarm --clear``), after restoring the newest data or
  deciding to start a new history.
- **Ids that cannot repeat.** Order ids are at least the server's time in ms x ``IDS_PER_MS``
  (``submit.lua``) and trade ids at least the command's time in ms x ``IDS_PER_MS`` (the engine),
  so ids handed out and then lost where no witness saw them are not handed out again either.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from matchbox.bus import calls
from matchbox.bus.commit import Offset, RollbackAlarm, read_offset, script_refusal
from matchbox.bus.connection import Bus, id_order


@dataclass(frozen=True, slots=True)
class Witness:
    """What one witness saw committed: any of its fields may be unknown (0 or "")."""

    source: str  # who saw it, in words: "this candidate", "consumer group persistence", …
    inputs: int = 0  # input entries committed
    events: int = 0  # events committed (the last one's n)
    last_event: str = ""  # stream id of the newest event


def witness_of(source: str, offset: Offset) -> Witness:
    return Witness(source, offset.inputs, offset.events, offset.last_event)


def ahead(witness: Witness, offset: Offset) -> str | None:
    """How ``witness`` saw more than the committed ``offset`` holds, in words; None if it did not."""
    if witness.inputs > offset.inputs:
        return f"{witness.source} saw {witness.inputs} inputs committed, Redis holds {offset.inputs}"
    if witness.events > offset.events:
        return f"{witness.source} saw {witness.events} events committed, Redis holds {offset.events}"
    if witness.last_event and id_order(witness.last_event) > id_order(offset.last_event):
        return f"{witness.source} saw event {witness.last_event}, Redis's newest is {offset.last_event or 'none'}"
    return None


def disagreements(bus: Bus, witnesses: Iterable[Witness], offset: Offset) -> list[str]:
    """Every way Redis disagrees with a witness: behind it, or holding a different history — the
    newest event a witness saw is missing from the output stream, though the stream reaches that
    far back (a restored backup that then traded on under a leader with no memory of it)."""
    problems = []
    first = None
    for witness in witnesses:
        problem = ahead(witness, offset)
        if problem is None and witness.last_event:
            if first is None:
                oldest = bus.range(bus.keys.events, count=1)
                first = oldest[0][0].decode() if oldest else ""
            known = bus.range(bus.keys.events, witness.last_event, witness.last_event)
            if first and id_order(first) <= id_order(witness.last_event) and not known:
                problem = f"{witness.source} saw event {witness.last_event}, which Redis's output stream does not hold"
        if problem is not None:
            problems.append(problem)
    return problems


# --------------------------------------------------------------------------- the alarm


def check_witness(bus: Bus, witness: Witness, offset: Offset | None = None) -> None:
    """Raise the alarm, and :class:`RollbackAlarm`, if Redis disagrees with ``witness`` (see
    :func:`disagreements`); ``offset``: the committed offset if the caller just read it."""
    problems = disagreements(bus, [witness], offset or read_offset(bus) or Offset())
    if problems:
        raise RollbackAlarm(raise_alarm(bus, "Redis went back in time: " + "; ".join(problems)))


def raise_alarm(bus: Bus, reason: str) -> str:
    """Set the alarm unless it is set already; the alarm's reason (the first one wins)."""
    bus.client.set(bus.keys.alarm, reason, nx=True)
    return read_alarm(bus) or reason


def read_alarm(bus: Bus) -> str | None:
    return bus.run(calls.alarm(bus.keys))


def clear_alarm(bus: Bus) -> bool:
    """An operator's decision: lift the halt. True if an alarm was set."""
    return bool(bus.client.delete(bus.keys.alarm))


def is_certified(bus: Bus) -> bool:
    """Whether a leader has certified this server process (see :func:`certify`)."""
    return bus.run(calls.certified(bus.keys, strict=True))


def certify(bus: Bus, epoch: int) -> str:
    """Certify the server process for ``epoch``'s leader (see ``certify.lua``); its run id."""
    keys = bus.keys
    return bus.run(
        calls.script_call(
            "certify", [keys.epoch, keys.alarm, keys.certified], [epoch], read=_run_id, meaning=script_refusal
        )
    )


def _run_id(reply: bytes | str) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)
