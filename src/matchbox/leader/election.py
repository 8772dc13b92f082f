"""Leader election: a lock with a short TTL, a fencing epoch, and a local idea of when the lease ends.

``SET leader <random token> NX PX <ttl>`` wins the lock; a compare-and-pexpire script renews it.
The winner INCRs the fencing epoch; every commit checks it, so a leader that lost the lock
without knowing it (paused, partitioned) writes nothing once another has won. Locally, the
lease is taken to end ``ttl`` after the renewal that was *sent* last (not answered): a leader
past that point stops matching at once, before Redis would tell it so.

A leader renews between batches, so a leader that hangs loses the lock. A few steps are long
but bounded (recovering a large book, hashing or snapshotting it): ``kept`` renews from a
thread for their duration, so that a book large enough to take longer than the TTL can still
be led.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from matchbox.bus import calls
from matchbox.bus.connection import Bus


class Lease:
    def __init__(self, bus: Bus, ttl_ms: int, name: str = "") -> None:
        self.bus = bus
        self.ttl_ms = ttl_ms
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.token = f"{self.name}:{secrets.token_hex(8)}"
        self.expires = 0.0  # time.monotonic() when our lease surely ends
        self.renewed = 0.0  # time.monotonic() when the last renewal that held was sent
        self.won = 0.0  # time.monotonic() when the lock was last acquired

    @property
    def held(self) -> bool:
        return time.monotonic() < self.expires

    def acquire(self) -> bool:
        """Win the lock: it is free, or it still holds this lease's own token (a step-down whose
        release could not reach Redis, such as across a restart: no need to wait out the TTL)."""
        sent = time.monotonic()
        keys = [self.bus.keys.leader]
        if self.bus.client.set(keys[0], self.token, nx=True, px=self.ttl_ms) or (self._renewed()):
            self.won = self.renewed = sent
            self.expires = sent + self.ttl_ms / 1000
            return True
        return False

    def renew(self) -> bool:
        sent = time.monotonic()
        if self._renewed():
            self.renewed, self.expires = sent, sent + self.ttl_ms / 1000
            return True
        self.expires = 0.0
        return False

    def release(self) -> None:
        self.expires = 0.0
        self.bus.run(calls.script_call("release", [self.bus.keys.leader], [self.token]))

    def _renewed(self) -> bool:
        """Whether the lock held this lease's token and now lives ``ttl_ms`` again (``renew.lua``)."""
        return bool(self.bus.run(calls.script_call("renew", [self.bus.keys.leader], [self.token, self.ttl_ms])) == 1)

    def lapses_in(self) -> float:
        """Seconds until the lock lapses unless its holder renews it (0 if nobody holds it)."""
        return max(0, int(self.bus.client.pttl(self.bus.keys.leader))) / 1000

    def why_lost(self) -> str:
        """Why a renewal failed, in words: the lock lapsed, or another candidate holds it."""
        holder = self.bus.run(calls.leader_holder(self.bus.keys))
        if holder is not None and holder != self.token:
            return f"the lock is held by another candidate ({holder.rpartition(':')[0]})"
        silent = time.monotonic() - self.renewed
        return f"the lock lapsed: last renewed {silent:.2f} s ago, its TTL is {self.ttl_ms / 1000:.2f} s"


@contextmanager
def kept(lease: Lease) -> Iterator[None]:
    """Renew ``lease`` every third of its TTL from a thread while the block runs.

    Only for long steps that surely end (see the module docstring). A renewal that fails ends
    the lease (``lease.held`` turns false); a Redis error leaves it to run out on its own. The
    holder checks ``lease.held`` after the block.
    """
    done = threading.Event()

    def renew() -> None:
        # a third of the TTL after the last renewal that held (not after entering the block)
        while not done.wait(max(0.0, lease.renewed + lease.ttl_ms / 3000 - time.monotonic())):
            try:
                if not lease.renew():
                    return
            except redis.RedisError:
                return

    keeper = threading.Thread(target=renew, name="lease-keeper", daemon=True)
    keeper.start()
    try:
        yield
    finally:
        done.set()
        keeper.join()
