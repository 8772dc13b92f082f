"""One shard of the bus on a Valkey Cluster: the third transport, beside :class:`~matchbox.bus.connection.Bus`.

Every key of a shard carries its hash tag (``mb:{N}:…``), so the whole shard lives in one slot,
on one master: its calls (scripts with their ``WAITAOF`` and ``WAIT``, which must run on the
connection that wrote) go there as they would to a single server. redis-py's ``RedisCluster``
only finds that master. After a failover the old master is gone (a connection error) or
answers ``MOVED``: the slot map is read again, and a ``MOVED`` call, which the server did not
run, is sent once more to the new master; a connection error is raised as the outage it is, for
the caller's backoff, and the next call goes to the new master.
"""

from __future__ import annotations

import contextlib
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.exceptions import MovedError

from matchbox.bus.calls import CONNECT_OPTIONS, Call, Command, as_text, command
from matchbox.bus.connection import Bus
from matchbox.bus.durability import Durability
from matchbox.bus.keys import Keys

NODE_TIMEOUT_MAX_MS = 15_000  # a failover takes about cluster-node-timeout: longer stalls the shard as long


def settings() -> Call[dict[str, str]]:
    """The server settings a shard's master is checked for (see :func:`settings_problems`)."""
    names = ("cluster-require-full-coverage", "min-replicas-to-write", "cluster-node-timeout")
    return command("CONFIG", "GET", *names, read=lambda reply: {as_text(k): as_text(v) for k, v in reply.items()})


def settings_problems(config: dict[str, str], durability: Durability) -> list[str]:
    """What is wrong with a master's ``config`` for Matchbox, each in one line with its fix."""
    problems = []
    if config.get("cluster-require-full-coverage", "yes") == "yes":
        problems.append(
            "cluster-require-full-coverage is yes: while one shard's master fails over, every shard stops "
            "taking orders; set it to no (CONFIG SET cluster-require-full-coverage no, and in each node's config)"
        )
    if durability is Durability.REPLICATED and int(config.get("min-replicas-to-write", "0")) < 1:
        problems.append(
            "min-replicas-to-write is 0: a master cut off from its replicas still appends orders that no replica "
            "will ever hold (replicated durability answers them 503, but they stay in its journal); set it to 1"
        )
    if int(config.get("cluster-node-timeout", "15000")) > NODE_TIMEOUT_MAX_MS:
        problems.append(
            f"cluster-node-timeout is {config['cluster-node-timeout']} ms: a failover waits about that long, "
            f"with the shard stopped; {NODE_TIMEOUT_MAX_MS} ms or less is recommended"
        )
    return problems


class ClusterBus(Bus):
    """The keys of one shard, and a client of the master that holds them, found in the cluster."""

    def __init__(self, cluster: RedisCluster, shard: int = 0) -> None:
        self.cluster = cluster
        super().__init__(self._master(shard), shard)

    @classmethod
    def connect(cls, url: str, shard: int = 0, **options: Any) -> ClusterBus:
        """A bus over the shard's master, found from any node of the cluster at ``url``."""
        return cls(RedisCluster.from_url(url, **{**CONNECT_OPTIONS, **options}), shard)

    def _master(self, shard: int) -> redis.Redis:
        node = self.cluster.get_node_from_key(Keys(shard).prefix, replica=False)  # type: ignore[no-untyped-call]
        client = self.cluster.get_redis_connection(node)
        assert client is not None, f"no connection to {node.name}"
        return client

    def close(self) -> None:
        self.cluster.close()

    def problems(self, durability: Durability) -> list[str]:
        return [*super().problems(durability), *settings_problems(self.run(settings()), durability)]

    def refresh(self) -> None:
        """Read the slot map again and follow the shard's slot to its master now."""
        self.cluster.nodes_manager.initialize()
        self.client = self._master(self.keys.shard)

    def _send(self, commands: tuple[Command, ...]) -> list[Any]:
        try:
            replies = super()._send(commands)
        except redis.ConnectionError:
            self.reconnect()
            raise
        if any(isinstance(reply, MovedError) for reply in replies):  # not run: send it to the new master
            self.refresh()
            replies = super()._send(commands)
        return replies

    def reconnect(self) -> None:
        """:meth:`refresh`, unless the cluster cannot be reached at all (then the next call tries again)."""
        with contextlib.suppress(redis.RedisError):
            self.refresh()
