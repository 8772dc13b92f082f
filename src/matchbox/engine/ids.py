"""What an account or a market id may be: one rule per kind, for the engine and the API alike.

An account is 1 to 64 characters of ``A-Z a-z 0-9 _ . -``; a market id the same, and ``:`` too.
Ids travel as they are into Redis keys, WebSocket channel names, SQL rows and logs, so they are
plain printable ASCII: no NUL byte (PostgreSQL refuses it in text), no control character, no
space, no surrogate, nothing a reader has to escape.

The kinds differ in ``:`` alone because each kept the rule its existing ids were made under:
accounts the account store's (it never took ``:``), market ids the API's (it always took ``:``,
which separates an event from a selection, as in ``derby:home``). So no id made through the
API before these rules existed is refused now.

The patterns are anchored for JSON Schema and pydantic, which search rather than match; here
they are used with ``fullmatch`` (Python's ``$`` alone also matches before a final newline).
"""

from __future__ import annotations

import re

MAX_ID_LENGTH = 64
ACCOUNT_PATTERN = rf"^[A-Za-z0-9_.-]{{1,{MAX_ID_LENGTH}}}$"
MARKET_ID_PATTERN = rf"^[A-Za-z0-9_.:-]{{1,{MAX_ID_LENGTH}}}$"

_ACCOUNT = re.compile(ACCOUNT_PATTERN)
_MARKET_ID = re.compile(MARKET_ID_PATTERN)


def valid_account(account: str) -> bool:
    """Whether ``account`` keeps the account rule."""
    return _ACCOUNT.fullmatch(account) is not None


# A transfer id as the engine keeps it: the API makes it ``<account>:<the client's id>``, so one
# account's ids never meet another's, and a refused transfer's return adds ``:return``.
_TRANSFER_ID = re.compile(r"[A-Za-z0-9_.:-]{1,160}")
RETURN_SUFFIX = ":return"  # a refused transfer's way back: the transfer's id with this


def valid_transfer_id(transfer_id: str) -> bool:
    """Whether ``transfer_id`` keeps the transfer id rule (as a market id's, up to 160 characters)."""
    return _TRANSFER_ID.fullmatch(transfer_id) is not None


def valid_market_id(market_id: str) -> bool:
    """Whether ``market_id`` keeps the market id rule."""
    return _MARKET_ID.fullmatch(market_id) is not None


# --------------------------------------------------------------------------- order and trade ids

# An order id or a trade id carries its shard in the bits above SHARD_SHIFT, so a cancel by id
# finds its shard from the id alone, and ids of two shards never meet (one SQL table holds all).
# Below them is the shard's own number: its journal's counter for order ids, its engine's for
# trade ids, each at least the time in ms x IDS_PER_MS (about 2**51 today, 2**52 in 2109). Shard
# 0's ids are its own numbers, as they were before shards. The journal's Lua scripts handle only
# the shard's own numbers (Lua's numbers are doubles, exact to 2**53): the shard is put in by
# the Python on either side of them, with ``shard_id``.
SHARD_SHIFT = 52
MAX_SHARDS = 1024  # shards 0..1023: every id stays below 2**62, positive in a signed 64-bit column


def shard_id(shard: int, local: int) -> int:
    """The id of a shard's ``local`` number (an order id from its journal, a trade id from its engine)."""
    return shard << SHARD_SHIFT | local


def shard_of(any_id: int) -> int:
    """The shard an order id or a trade id belongs to."""
    return any_id >> SHARD_SHIFT
