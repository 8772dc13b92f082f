"""Consumer groups on the output stream: the cold path's runner (persistence, analytics, replay).

The contract between the runner and what it feeds is :class:`Sink`. The runner reads entries
with XREADGROUP, hands them to the sink in stream order, and acknowledges them (XACK) only once
``Sink.apply`` has returned, that is once the sink's own transaction has committed the batch's
effects together with its tracking row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from matchbox.bus.connection import Entry


class Poison(Exception):
    """Raised by a sink for an entry it can never apply (not an event, a schema it does not know).

    Anything else a sink raises is taken for a passing failure (the database is down) and retried."""


class Sink(Protocol):
    """What a consumer group feeds: a database projection with a tracking row.

    ``apply`` commits the entries' effects and moves the tracking row to the last entry's id in
    one transaction, and must be idempotent: an entry applied again (a redelivery after a crash
    between the commit and the XACK, or a reclaim) changes nothing. Entries of one batch come in
    stream order; batches of two consumers sharing a group may interleave in any order.
    """

    group: str

    def position(self) -> str | None:
        """The stream id of the newest entry durably applied (the tracking row), None if none."""
        ...

    def apply(self, entries: Sequence[Entry]) -> None:
        """Apply ``entries`` and move the tracking row, all in one transaction, or nothing."""
        ...
