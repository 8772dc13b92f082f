"""The pure, deterministic matching engine: no I/O, no clock, no randomness.

``Engine.apply(command) -> list[Event]``. The matching rules are in :mod:`matchbox.engine.engine`,
the tick ladders in :mod:`matchbox.engine.schemes`, the vocabulary in :mod:`matchbox.engine.types`,
balances, reserves, positions and settlement of collateral markets in :mod:`matchbox.engine.ledger`,
an order's validity and status, the rules the API and the consumers share, in :mod:`matchbox.engine.rules`.
"""

from matchbox.engine.engine import Engine
from matchbox.engine.queries import BookDepth, BookIntegrityError, LiveOrder, PriceLevel
from matchbox.engine.snapshot import SnapshotError

__all__ = ["BookDepth", "BookIntegrityError", "Engine", "LiveOrder", "PriceLevel", "SnapshotError"]
