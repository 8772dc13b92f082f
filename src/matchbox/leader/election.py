"""Leader election: a lock with a short TTL, a fencing epoch, and a local idea of when the lease ends.

``SET leader <random token> NX PX <ttl>`` wins the lock; a compare-and-pexpire script renews it.
The winner INCRs the fencing epoch; every commit checks it, so a leader that lost the lock
without knowing it (paused, partitioned) writes nothing once another has won. Locally, the
lease is taken to end ``ttl`` after the renewal that was *sent* last (not answered): a leader
past that point stops matching at once, before Redis would tell it so.
"""

from __future__ import annotations

import os
import secrets
import socket
import time

from matchbox.bus.connection import Bus


class Lease:
    def __init__(self, bus: Bus, ttl_ms: int, name: str = "") -> None:
        self.bus = bus
        self.ttl_ms = ttl_ms
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.token = f"{self.name}:{secrets.token_hex(8)}"
        self.expires = 0.0  # time.monotonic() when our lease surely ends

    @property
    def held(self) -> bool:
        return time.monotonic() < self.expires

    def acquire(self) -> bool:
        sent = time.monotonic()
        if self.bus.client.set(self.bus.keys.leader, self.token, nx=True, px=self.ttl_ms):
            self.expires = sent + self.ttl_ms / 1000
            return True
        return False

    def renew(self) -> bool:
        sent = time.monotonic()
        if self.bus.renew_script(keys=[self.bus.keys.leader], args=[self.token, self.ttl_ms]) == 1:
            self.expires = sent + self.ttl_ms / 1000
            return True
        self.expires = 0.0
        return False

    def release(self) -> None:
        self.expires = 0.0
        self.bus.release_script(keys=[self.bus.keys.leader], args=[self.token])
