"""Durability: what an acknowledgement promises, and what keeps a server from giving it.

The README's "Durability: what each mode survives" says which failure each mode survives;
:mod:`~matchbox.bus.journal` waits for it on every submission.
"""

from __future__ import annotations

from enum import StrEnum

from matchbox.bus.calls import Persistence


class Durability(StrEnum):
    """What an acknowledgement promises (the README's "Durability" says which failure each survives)."""

    REPLICATED = "replicated"  # fsynced in the AOF, and held by at least one replica (WAITAOF, then WAIT)
    ALWAYS = "always"  # acknowledged only once fsynced in the AOF
    EVERYSEC = "everysec"  # acknowledged once appended; fsynced within about a second


def durability_problem(durability: Durability, server: Persistence) -> str | None:
    """What is wrong, in one line with its two fixes, if ``server`` cannot give ``durability``."""
    if durability is not Durability.EVERYSEC and not server.aof_enabled:
        return (
            f"Redis has appendonly off, so durability '{durability}' cannot confirm an fsync (WAITAOF) and "
            "every order would fail: turn it on (CONFIG SET appendonly yes, and appendonly yes in its config "
            "file) or choose MATCHBOX_DURABILITY=everysec"
        )
    if durability is Durability.REPLICATED and server.replicas < 1:
        return (
            "durability 'replicated' waits for a replica to hold every order (WAIT 1), but this Redis has no "
            "replica connected, so every order would fail: attach one (REPLICAOF on another server, or a "
            "Valkey Cluster with replicas) or choose MATCHBOX_DURABILITY=always"
        )
    return None


class DurabilityError(RuntimeError):
    """The server did not confirm the append was fsynced: the command may or may not survive."""
