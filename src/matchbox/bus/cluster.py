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
import time
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import MovedError, RedisClusterException

from matchbox.bus.aio import AsyncBus
from matchbox.bus.calls import CONNECT_OPTIONS, Call, Command, as_text, command
from matchbox.bus.connection import Bus
from matchbox.bus.durability import Durability
from matchbox.bus.keys import Keys
from matchbox.bus.line import Line

NODE_TIMEOUT_MAX_MS = 15_000  # a failover takes about cluster-node-timeout: longer stalls the shard as long


def settings() -> Call[dict[str, str]]:
    """The server settings a shard's master is checked for (see :func:`settings_problems`)."""
    names = ("cluster-require-full-coverage", "min-replicas-to-write", "cluster-node-timeout")
    return command("CONFIG GET", *names, read=lambda reply: {as_text(k): as_text(v) for k, v in reply.items()})


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
        """A bus over the shard's master, found from the cluster's nodes named by ``url`` (see :func:`seeds`)."""
        return cls(cluster_client(url, **options), shard)

    @property
    def routed(self) -> RedisCluster:
        return self.cluster

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


class AsyncClusterBus(AsyncBus):
    """:class:`ClusterBus` for asyncio (the API): a shard's calls go to its slot's master, found in
    the cluster's slot map, read again after a failover. Until the first call it talks to a seed
    node, whose ``MOVED`` (if it is not the master) is followed like a failover's: nothing here
    blocks or fails while the cluster is still down."""

    def __init__(
        self, cluster: AsyncRedisCluster, shard: int = 0, durability: Durability = Durability.ALWAYS, **options: Any
    ) -> None:
        self.cluster = cluster
        self._options = options
        seed = next(iter(cluster.nodes_manager.startup_nodes.values()))
        super().__init__(self._client(seed.host, int(seed.port)), shard, durability)

    @classmethod
    def connect(
        cls, url: str, shard: int = 0, durability: Durability = Durability.ALWAYS, **options: Any
    ) -> AsyncClusterBus:
        options = {**CONNECT_OPTIONS, **credentials(url), **options}
        nodes = [AsyncClusterNode(host, port) for host, port in seeds(url)]
        return cls(AsyncRedisCluster(startup_nodes=nodes, **options), shard, durability, **options)

    def _client(self, host: str, port: int) -> aioredis.Redis:
        pool = aioredis.BlockingConnectionPool(host=host, port=port, max_connections=64, timeout=5, **self._options)
        return aioredis.Redis(connection_pool=pool)

    def sibling(self, shard: int) -> AsyncClusterBus:
        return AsyncClusterBus(self.cluster, shard, self.durability, **self._options)

    @property
    def routed(self) -> AsyncRedisCluster:
        return self.cluster

    async def close(self) -> None:
        await self.close_lines()
        await self.client.aclose(close_connection_pool=True)
        with contextlib.suppress(RuntimeError):  # closed already by a sibling
            await self.cluster.aclose()

    async def refresh(self) -> None:
        """Read the slot map again and follow the shard's slot to its master now."""
        await self.cluster.initialize()  # the first time: the slot map and the command table
        await self.cluster.nodes_manager.initialize()  # every time: the slot map as it is now
        node = self.cluster.get_node_from_key(self.keys.prefix, replica=False)
        if node is None:
            raise redis.ConnectionError(f"no master serves shard {self.keys.shard}'s slot")
        kwargs = self.client.connection_pool.connection_kwargs
        if (kwargs.get("host"), kwargs.get("port")) != (node.host, node.port):
            old, self.client = self.client, self._client(node.host, int(node.port))
            await old.aclose(close_connection_pool=True)

    async def _send(self, commands: tuple[Command, ...], line: Line | None = None) -> list[Any]:
        try:
            replies = await super()._send(commands, line)
        except redis.ConnectionError:
            with contextlib.suppress(redis.RedisError):
                await self.refresh()  # the next call goes to the new master, if there is one yet
            raise
        if any(isinstance(reply, MovedError) for reply in replies):  # not run: send it to the master
            await self.refresh()
            replies = await super()._send(commands, line)
        return replies


def seeds(url: str) -> list[tuple[str, int]]:
    """The nodes a cluster client starts from: ``redis://host:port``, or several joined by commas
    (``redis://h1:7000,h2:7000,h3:7000``), so a client (re)started while one node is down finds
    the cluster through another."""
    netloc = urlsplit(url).netloc.rpartition("@")[2]
    found = []
    for part in netloc.split(","):
        host, _, port = part.rpartition(":")
        found.append((host or "127.0.0.1", int(port or 6379)))
    return found


def cluster_client(url: str, **options: Any) -> RedisCluster:
    """A blocking cluster client, started from the nodes ``url`` names (see :func:`seeds`)."""
    nodes = [ClusterNode(host, port) for host, port in seeds(url)]  # type: ignore[no-untyped-call]
    return RedisCluster(startup_nodes=nodes, **{**CONNECT_OPTIONS, **credentials(url), **options})


def credentials(url: str) -> dict[str, Any]:
    """The username and password of a cluster URL, if it names them."""
    userinfo, at, _ = urlsplit(url).netloc.rpartition("@")
    if not at:
        return {}
    user, _, password = userinfo.partition(":")
    return {key: value for key, value in (("username", user), ("password", password)) if value}


def connect_bus(url: str, shard: int = 0, *, cluster: bool = False) -> Bus:
    """The blocking bus of ``shard``: over a single server, or (``cluster``) over a Valkey Cluster.

    A cluster client reads the slot map as it is made: with no node answering, that is the outage
    it is (``redis.ConnectionError``), for the caller to wait out as it waits for a single server."""
    if not cluster:
        return Bus.connect(url, shard)
    try:
        return ClusterBus.connect(url, shard)
    except RedisClusterException as exc:
        raise redis.ConnectionError(f"no node of the cluster answers: {exc}") from None


def connect_async_bus(url: str, shard: int, durability: Durability, *, cluster: bool = False) -> AsyncBus:
    """The asyncio bus of ``shard``: over a single server, or (``cluster``) over a Valkey Cluster."""
    return AsyncClusterBus.connect(url, shard, durability) if cluster else AsyncBus.connect(url, shard, durability)


# --------------------------------------------------------------------------- placing shards on masters

PLACE_TIMEOUT_S = 30.0


class PlacementError(RuntimeError):
    """A shard could not be placed: its slot holds data on another master, or the cluster did not agree."""


def shard_slot(shard: int) -> int:
    """The cluster slot every key of ``shard`` hashes to (its hash tag's)."""
    return key_slot(Keys(shard).prefix.encode())


def place_shards(url: str, shards: int, timeout: float = PLACE_TIMEOUT_S) -> dict[int, str]:
    """Shard ``i`` on the ``i % masters``-th master (masters in address order), each shard's slot moved
    there if it is elsewhere; the shard -> master address map. Tags that hash to one master are
    not left to chance: three shards on three masters use all three.

    A slot is moved with the cluster's own resharding steps (``CLUSTER SETSLOT`` IMPORTING,
    MIGRATING, then NODE on every master), and only while it holds no key: a shard with data
    stays where it is (PlacementError says how to move it with ``valkey-cli --cluster reshard``).
    Placing again is a no-op."""
    cluster = cluster_client(url)
    try:
        masters = sorted(cluster.get_primaries(), key=lambda node: (node.host, node.port))  # type: ignore[no-untyped-call]
        ids = {node.name: as_text(cluster.execute_command("CLUSTER", "MYID", target_nodes=node)) for node in masters}  # type: ignore[no-untyped-call]
        placed: dict[int, str] = {}
        for shard in range(shards):
            slot, target = shard_slot(shard), masters[shard % len(masters)]
            owner = cluster.nodes_manager.get_node_from_slot(slot)
            if owner.name != target.name:
                _move_slot(cluster, slot, owner, target, ids, masters)
            placed[shard] = target.name
        _wait_agreed(cluster, {shard_slot(s): name for s, name in placed.items()}, masters, timeout)
        return placed
    finally:
        cluster.close()


def _move_slot(
    cluster: RedisCluster, slot: int, owner: Any, target: Any, ids: dict[str, str], masters: list[Any]
) -> None:
    def run(node: Any, *args: Any) -> Any:
        return cluster.execute_command(*args, target_nodes=node)  # type: ignore[no-untyped-call]

    if int(run(owner, "CLUSTER", "COUNTKEYSINSLOT", slot)):
        raise PlacementError(
            f"slot {slot} holds keys on {owner.name}: move it with valkey-cli --cluster reshard "
            f"(--cluster-from {ids[owner.name]} --cluster-to {ids[target.name]}), or place the shards before use"
        )
    run(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", ids[owner.name])
    run(owner, "CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target.name])
    for node in [target, owner, *(m for m in masters if m.name not in (target.name, owner.name))]:
        run(node, "CLUSTER", "SETSLOT", slot, "NODE", ids[target.name])


def _wait_agreed(cluster: RedisCluster, owners: dict[int, str], masters: list[Any], timeout: float) -> None:
    """Until every master maps each slot of ``owners`` to its owner."""
    deadline = time.monotonic() + timeout
    for node in masters:
        while True:
            ranges = cluster.execute_command("CLUSTER", "SLOTS", target_nodes=node)  # type: ignore[no-untyped-call]
            seen = {slot: f"{as_text(r[2][0])}:{r[2][1]}" for slot in owners for r in ranges if r[0] <= slot <= r[1]}
            if seen == owners:
                break
            if time.monotonic() > deadline:
                raise PlacementError(f"{node.name} does not see the shards where they were placed: {seen} != {owners}")
            time.sleep(0.05)
    cluster.nodes_manager.initialize()
