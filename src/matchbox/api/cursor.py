"""The WebSocket resume cursor: one opaque string holding a position in each shard's output stream.

Every feed message's ``id`` is the cursor as of that message on its connection: for each shard,
the stream id of the last of its events the connection's feed had gone through. ``?last_id=``
takes one back, and the feed goes on after it on every shard, with no gap and no repeat.

An instance serving one shard writes the plain stream id (``1733300000000-5``), as before there
were shards; one serving several writes ``<shard>:<stream id>`` for each, joined by ``,``. A
client keeps the string and never reads it.
"""

from __future__ import annotations

import re
from collections.abc import Collection

STREAM_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")  # ASCII digits only
MAX_ID_PART = 2**64 - 1
START = "0-0"  # before a stream's first entry


class CursorError(ValueError):
    """A ``last_id`` that is no cursor of this instance's shards."""


def encode(positions: dict[int, str]) -> str:
    """The cursor of ``positions`` (shard -> stream id)."""
    if len(positions) == 1:
        return next(iter(positions.values()))
    return ",".join(f"{shard}:{position}" for shard, position in sorted(positions.items()))


def decode(text: str, shards: Collection[int]) -> dict[int, str]:
    """The positions a cursor holds, one for each of ``shards``; CursorError if it is not such a cursor."""
    if len(text) > 48 * len(shards):
        raise CursorError(f"{text[:40]!r}… is too long for a cursor")
    if len(shards) == 1:
        (shard,) = shards
        pairs = [(str(shard), text)]
    else:
        pairs = [part.partition(":")[::2] for part in text.split(",")]
    positions: dict[int, str] = {}
    for shard_text, position in pairs:
        if not (shard_text.isascii() and shard_text.isdigit()) or int(shard_text) not in shards:
            raise CursorError(f"{text[:40]!r} is not a cursor of shards {sorted(shards)}")
        if not valid_stream_id(position):
            raise CursorError(f"{position[:40]!r} is not a stream id")
        positions[int(shard_text)] = position
    if set(positions) != set(shards):
        raise CursorError(f"{text[:40]!r} does not hold a position for each of shards {sorted(shards)}")
    return positions


def valid_stream_id(text: str) -> bool:
    match = STREAM_ID.fullmatch(text)
    return match is not None and max(int(part) for part in match.groups()) <= MAX_ID_PART
