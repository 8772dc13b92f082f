"""Every Redis key Matchbox uses, in one place.

Keys are namespaced (``mb:``) and shard-tagged (``{0}``): the braces make every key of a shard
hash to the same cluster slot, so the Lua scripts that touch several keys of one shard stay legal
on a Redis/Valkey Cluster, and one shard can live on each slot.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    shard: int = 0

    @property
    def prefix(self) -> str:
        return f"mb:{{{self.shard}}}:"

    @property
    def input(self) -> str:
        """Stream: the input journal, every submitted command in order. Never popped."""
        return f"{self.prefix}in"

    @property
    def events(self) -> str:
        """Stream: the engine's output, one event per entry, ids derived from the input ids."""
        return f"{self.prefix}events"

    @property
    def offset(self) -> str:
        """Hash: what the engine has committed (input id and count, event count, state hash, epoch)."""
        return f"{self.prefix}offset"

    @property
    def epoch(self) -> str:
        """String counter: the fencing epoch, INCR'd by every leader that wins the election."""
        return f"{self.prefix}epoch"

    @property
    def journal_version(self) -> str:
        """String: the newest journal version an engine leader of this shard has read (see
        :data:`matchbox.bus.codec.JOURNAL_VERSION`); absent: 1, before versions were kept."""
        return f"{self.prefix}journal:version"

    @property
    def leader(self) -> str:
        """String with a TTL: the current leader's token (SET NX PX)."""
        return f"{self.prefix}leader"

    @property
    def leader_info(self) -> str:
        """Hash: who the leader is (name, host, pid, epoch, since), for operators and ``GET /engine``."""
        return f"{self.prefix}leader:info"

    @property
    def snapshot(self) -> str:
        """Stream: engine snapshots, newest last, capped at the configured retention."""
        return f"{self.prefix}snapshot"

    def dead_letter(self, group: str) -> str:
        """Stream: the entries a consumer group gave up on (delivered too often), with the reason."""
        return f"{self.prefix}dead:{group}"

    @property
    def alarm(self) -> str:
        """String: why the exchange halted (Redis went back in time). Set once, by whoever sees it
        first (a leader, an API instance, a consumer); cleared only by an operator."""
        return f"{self.prefix}alarm"

    @property
    def certified(self) -> str:
        """String: the run id of the server process a leader last checked against every witness.

        A restarted server, a promoted replica or a restored backup has another run id: until a
        leader has checked it again, ``submit`` hands out nothing and ``commit`` writes nothing.
        """
        return f"{self.prefix}certified"

    @property
    def floors(self) -> str:
        """Hash: each consumer group's floor (group -> output stream id, everything at or below it
        stored), kept past the group itself: the output stream is never trimmed above a floor, so a
        group lost and created again at its floor finds every entry it had not stored. A group
        retired for good is forgotten with ``HDEL`` (else the stream is kept from its floor on)."""
        return f"{self.prefix}floors"

    @property
    def order_id(self) -> str:
        """String counter: the last order id allocated by ``submit``."""
        return f"{self.prefix}order_id"

    def client_order(self, account: str, client_order_id: str) -> str:
        """String with a 24 h TTL: the order id and content digest of a client order id.

        The account is length-prefixed, so no pair of account and client order id can collide.
        """
        return f"{self.prefix}cid:{len(account)}:{account}:{client_order_id}"


# Hash: market id -> the shard that matches it, written once when the market is placed (HSETNX),
# so two API instances creating one market at once place it on one shard. Its own hash tag: on a
# cluster it lives in a slot of its own, apart from every shard's.
MARKET_DIRECTORY = "mb:{directory}:markets"
