"""Accounts and their API keys, kept in Redis beside the journal, not in it.

Keys are credentials, not exchange state: the engine never sees them, replay does not recreate
them, and the journal never holds one. Balances are the engine's (``Deposit`` and the ledger);
this store only says which key speaks for which account.

A key reads ``mbk_<key id>_<secret>``. The key id (8 hex digits, random) names the key for
listing and revoking; the secret is 32 random bytes. Only the SHA-256 of the whole key is
stored. A fast hash is the right one here: slow, salted hashes defend guessable passwords,
while a 256-bit random key cannot be guessed, and a lookup must cost microseconds because every
trading request makes one.

Redis keys (one hash tag, so the scripts stay legal on a cluster):

- ``mb:{accounts}:records``: hash, account -> JSON ``{"name", "created"}`` (unix ms);
- ``mb:{accounts}:hashes``: hash, SHA-256 of a key (hex) -> account;
- ``mb:{accounts}:ids:<account>``: hash, key id -> SHA-256 of that key.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import cast

import msgspec
import redis
from redis.cluster import RedisCluster

from matchbox.engine.ids import valid_account

RECORDS = "mb:{accounts}:records"
HASHES = "mb:{accounts}:hashes"
KEY_PREFIX = "mbk_"


def key_ids(account: str) -> str:
    return f"mb:{{accounts}}:ids:{account}"


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


# KEYS: records, hashes, ids of the account. ARGV: account, record JSON ("" = the account must
# exist already), key hash, key id. Returns 1, or 0 if the account exists (a create) or is
# unknown (another key).
_ADD_KEY = """
local exists = redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1
if ARGV[2] ~= '' then
  if exists then return 0 end
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
elseif not exists then
  return 0
end
redis.call('HSET', KEYS[2], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[4], ARGV[3])
return 1
"""
# KEYS: hashes, ids of the account. ARGV: key id. Returns 1 if the key was there.
_REVOKE = """
local hash = redis.call('HGET', KEYS[2], ARGV[1])
if not hash then return 0 end
redis.call('HDEL', KEYS[1], hash)
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""


class AccountError(Exception):
    """A request the store refuses; ``field`` names what was wrong."""

    def __init__(self, message: str, field: str = "account") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class IssuedKey:
    account: str
    api_key: str  # shown once: only its hash is kept
    key_id: str


@dataclass(frozen=True, slots=True)
class AccountInfo:
    account: str
    name: str
    created: int  # unix ms
    key_ids: list[str]


class _Record(msgspec.Struct, frozen=True):
    name: str
    created: int


def new_key() -> tuple[str, str]:
    """(key id, key)."""
    key_id = secrets.token_hex(4)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


class AccountStore:
    """Create accounts, issue and revoke their keys, look a key up. Blocking (redis-py)."""

    def __init__(self, client: redis.Redis | RedisCluster) -> None:
        self.client = client  # every key has the tag {accounts}: one slot, so a cluster client serves too
        self._add_key = client.register_script(_ADD_KEY)
        self._revoke = client.register_script(_REVOKE)

    def create(self, account: str | None = None, name: str = "") -> IssuedKey:
        """A new account with its first key; ``account`` defaults to a fresh ``acct-…`` name."""
        account = account or f"acct-{secrets.token_hex(4)}"
        if not valid_account(account):
            raise AccountError("account: 1 to 64 letters, digits, '_', '.' or '-'")
        record = msgspec.json.encode(_Record(name=name or account, created=time.time_ns() // 1_000_000))
        issued = self._issue(account, record.decode())
        if issued is None:
            raise AccountError(f"account {account!r} exists")
        return issued

    def issue_key(self, account: str) -> IssuedKey:
        """Another key for an existing account (keys are never shown twice: issue one instead)."""
        issued = self._issue(account, "")
        if issued is None:
            raise AccountError(f"unknown account {account!r}")
        return issued

    def _issue(self, account: str, record: str) -> IssuedKey | None:
        key_id, key = new_key()
        added = self._add_key(keys=[RECORDS, HASHES, key_ids(account)], args=[account, record, key_hash(key), key_id])
        return IssuedKey(account, key, key_id) if added else None

    def revoke(self, account: str, key_id: str) -> bool:
        """Revoke one key; False if the account has no such key."""
        return bool(self._revoke(keys=[HASHES, key_ids(account)], args=[key_id]))

    def get(self, account: str) -> AccountInfo | None:
        """One account, or None if there is no such account."""
        raw = cast("bytes | None", self.client.hget(RECORDS, account))
        if raw is None:
            return None
        record = msgspec.json.decode(raw, type=_Record)
        keys = cast("list[bytes]", self.client.hkeys(key_ids(account)))
        return AccountInfo(account, record.name, record.created, sorted(k.decode() for k in keys))

    def page(self, after: str | None, limit: int) -> list[AccountInfo]:
        """Up to ``limit`` accounts by id, those after ``after``: the ids are read (one HKEYS), and
        the records and keys of the page's accounts only."""
        names = sorted(
            name for raw in cast("list[bytes]", self.client.hkeys(RECORDS)) if (name := raw.decode()) > (after or "")
        )
        found = []
        for account in names[:limit]:
            info = self.get(account)
            if info is not None:  # made before it was listed, or gone since: taken as it is now
                found.append(info)
        return found

    def list(self) -> list[AccountInfo]:
        records = cast("dict[bytes, bytes]", self.client.hgetall(RECORDS))
        names = sorted(raw.decode() for raw in records)
        pipe = self.client.pipeline(transaction=False)
        for account in names:
            pipe.hkeys(key_ids(account))
        ids = pipe.execute()
        found = []
        for account, keys in zip(names, ids, strict=True):
            record = msgspec.json.decode(records[account.encode()], type=_Record)
            found.append(AccountInfo(account, record.name, record.created, sorted(k.decode() for k in keys)))
        return found
