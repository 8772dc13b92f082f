"""The exchange under test, as supervised child processes on free ports (``matchbox up``'s Child).

Seven children, each ``python -m matchbox <command>`` with its log in ``<data>/logs``: ``valkey``
(AOF with ``appendfsync always``), ``engine-1`` and ``engine-2`` (leader candidates, each with
its own watermark file), ``api-1`` and ``api-2`` (API keys required, the admin token set), and
the ``persistence`` and ``analytics`` consumers (SQLite in the data folder, or the database
given). Every child gets the parent-death signal from :class:`~matchbox.up.Child`, so none
outlives the run; all are started from the main thread, the one whose death that signal follows.

A child that exits on its own is recorded (with its log's tail) and started again by the
:class:`~matchbox.up.Supervisor`. A child being faulted on purpose is marked ``stopping`` for the
time, so the supervisor leaves it to the fault, which starts it again itself.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import redis
import redis.asyncio as aioredis

from matchbox.bus.keys import Keys
from matchbox.bus.server import free_port
from matchbox.chaos.http import Instance
from matchbox.chaos.records import Exit, Records
from matchbox.up import Child, Supervisor

LOCK_TTL_MS = 1500  # short, so that a SIGSTOP of a second or two outlives the lease: fencing is tested
CLAIM_IDLE_MS = 2000  # a killed consumer's entries are reclaimed soon, not after the default 30 s
SNAPSHOT_SECONDS = 10  # snapshots (and journal trims) happen within a short run, so recovery uses them
KEY_CACHE_SECONDS = 5.0  # how long an instance may go on trusting a revoked key
ENGINES = ("engine-1", "engine-2")
APIS = ("api-1", "api-2")
CONSUMERS = ("persistence", "analytics")
STOP_ORDER = (*APIS, *ENGINES, *CONSUMERS, "valkey")
EXIT_WAIT_S = 15.0
EXIT_LOG_LINES = 80  # of a child that died on its own: enough for its traceback
VALKEY_WAIT_S = 30.0


class ClusterError(RuntimeError):
    """The exchange could not be started or restarted: the run cannot go on."""


class Cluster:
    def __init__(self, data_dir: Path, database_url: str | None, admin_token: str) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.admin_token = admin_token
        self.valkey_port = free_port()
        self.api_ports = {name: free_port() for name in APIS}
        self.keys = Keys()
        self.supervisor = Supervisor(self._children())
        self._redis: aioredis.Redis | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.valkey_port}/0"

    @property
    def instances(self) -> list[Instance]:
        return [Instance(name, f"http://127.0.0.1:{port}") for name, port in self.api_ports.items()]

    @property
    def logs(self) -> Path:
        return self.data_dir / "logs"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MATCHBOX_") and k != "DATABASE_URL"}
        env |= {
            "REDIS_URL": self.url,
            "MATCHBOX_DATA_DIR": str(self.data_dir),
            "MATCHBOX_ADMIN_TOKEN": self.admin_token,
            "MATCHBOX_DURABILITY": "always",
            "MATCHBOX_LOCK_TTL_MS": str(LOCK_TTL_MS),
            "MATCHBOX_CLAIM_IDLE_MS": str(CLAIM_IDLE_MS),
            "MATCHBOX_SNAPSHOT_SECONDS": str(SNAPSHOT_SECONDS),
            "MATCHBOX_KEY_CACHE_SECONDS": str(KEY_CACHE_SECONDS),
            "PYTHONUNBUFFERED": "1",
        }
        if self.database_url:
            env["DATABASE_URL"] = self.database_url
        return env

    def _children(self) -> list[Child]:
        python = [sys.executable, "-m", "matchbox"]
        env = self._env()
        valkey = [*python, "valkey", "--port", str(self.valkey_port), "--data-dir", str(self.data_dir / "valkey")]
        found = [Child("valkey", [*valkey, "--fsync", "always"], env, self.logs / "valkey.log")]
        for name in ENGINES:
            engine = [*python, "engine", "--name", name, "--watermark", str(self.data_dir / f"{name}.watermark")]
            found.append(Child(name, engine, env, self.logs / f"{name}.log"))
        for name, port in self.api_ports.items():
            api = [*python, "api", "--host", "127.0.0.1", "--port", str(port)]
            found.append(Child(name, api, env, self.logs / f"{name}.log"))
        for sink in CONSUMERS:
            consume = [*python, "consume", sink, "--name", f"chaos-{sink}"]
            found.append(Child(sink, consume, env, self.logs / f"{sink}.log"))
        return found

    def child(self, name: str) -> Child:
        return self.supervisor.child(name)

    def pid(self, name: str) -> int | None:
        process = self.child(name).process
        return process.pid if process is not None and process.poll() is None else None

    # ------------------------------------------------------------------ start, watch, stop

    async def start(self) -> None:
        """Valkey first (until it answers), then every other child."""
        self._redis = aioredis.Redis.from_url(self.url, socket_connect_timeout=0.5, socket_timeout=2.0)
        self.child("valkey").start()
        await self.wait_valkey()
        for child in self.supervisor.children[1:]:
            child.start()

    async def wait_valkey(self, timeout_s: float = VALKEY_WAIT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not await self.ping():
            if time.monotonic() > deadline:
                raise ClusterError(f"Valkey did not answer within {timeout_s:.0f} s: {self.child('valkey').tail()}")
            await asyncio.sleep(0.05)

    async def ping(self) -> bool:
        assert self._redis is not None
        try:
            return bool(await self._redis.ping())
        except redis.RedisError:
            return False

    def supervise(self, records: Records) -> None:
        """Record the children that exited on their own, then let the supervisor restart them."""
        for child in self.supervisor.children:
            process = child.process
            if child.stopping or process is None or process.poll() is None:
                continue
            tail = child.tail(EXIT_LOG_LINES)
            records.exits.append(Exit(child.name, process.returncode, time.monotonic(), tail, str(child.log_path)))
        self.supervisor.check()

    def stop(self) -> None:
        """Continue anything paused, then stop every child in order (SIGTERM, then SIGKILL)."""
        for child in self.supervisor.children:
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signal.SIGCONT)
        self.supervisor.stop_all(STOP_ORDER)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    # ------------------------------------------------------------------ faults

    async def leader(self) -> str | None:
        """The engine candidate holding the lock (by the name in its token), if it is one of ours."""
        assert self._redis is not None
        try:
            token = await self._redis.get(self.keys.leader)
        except redis.RedisError:
            return None
        name = token.decode().rsplit(":", 1)[0] if isinstance(token, bytes) else ""
        return name if name in ENGINES else None

    async def newest_event(self) -> str:
        """The id of the output stream's newest entry ("" for none): where a new reader starts."""
        assert self._redis is not None
        entries = await self._redis.xrevrange(self.keys.events, count=1)
        newest = entries[0][0] if entries else b""
        return newest.decode() if isinstance(newest, bytes) else str(newest)

    async def kill(self, name: str) -> None:
        """SIGKILL the child and start it again at once (the supervisor keeps out of it)."""
        child = self.child(name)
        if self.pid(name) is None:
            raise ClusterError(f"{name} is not running")
        child.stopping = True
        try:
            assert child.process is not None
            child.process.kill()
            await self._wait_exit(child)
            child.start()
        finally:
            child.stopping = False

    def send(self, name: str, signum: signal.Signals) -> None:
        pid = self.pid(name)
        if pid is None:
            raise ClusterError(f"{name} is not running")
        os.kill(pid, signum)

    async def restart_valkey(self, hard: bool, down_s: float, restart_meanwhile: str | None = None) -> None:
        """Stop Valkey (SIGKILL of the server: a crash; else a clean SHUTDOWN), wait ``down_s``, and
        start it again on the same port and data folder. ``restart_meanwhile``: a child SIGKILLed
        and started again while Valkey is down (it must wait for Valkey, not exit)."""
        child = self.child("valkey")
        if self.pid("valkey") is None:
            raise ClusterError("valkey is not running")
        child.stopping = True
        try:
            server = await self._valkey_pid() if hard else None
            if server is not None:
                os.kill(server, signal.SIGKILL)  # the wrapper sees it gone and exits
            else:
                assert child.process is not None
                child.process.send_signal(signal.SIGTERM)  # the wrapper shuts the server down cleanly
            await self._wait_exit(child)
            if restart_meanwhile is not None:
                await self.kill(restart_meanwhile)
            await asyncio.sleep(down_s)
            child.start()
            await self.wait_valkey()
        finally:
            child.stopping = False

    async def lose_group(self, consumer: str, kill_first: bool) -> None:
        """XGROUP DESTROY the group of ``consumer`` (named as its sink), under it while it runs, or
        while it is SIGKILLed (its entries in hand were pending), starting it again after."""
        assert self._redis is not None
        child = self.child(consumer)
        if self.pid(consumer) is None:
            raise ClusterError(f"{consumer} is not running")
        if not kill_first:
            await self._redis.xgroup_destroy(self.keys.events, consumer)
            return
        child.stopping = True
        try:
            assert child.process is not None
            child.process.kill()
            await self._wait_exit(child)
            await self._redis.xgroup_destroy(self.keys.events, consumer)
            child.start()
        finally:
            child.stopping = False

    async def _valkey_pid(self) -> int | None:
        assert self._redis is not None
        try:
            info = await self._redis.info("server")
        except redis.RedisError:
            return None
        pid = info.get("process_id")
        return int(pid) if pid is not None else None

    async def _wait_exit(self, child: Child) -> None:
        process = child.process
        assert process is not None
        deadline = time.monotonic() + EXIT_WAIT_S
        while process.poll() is None:
            if time.monotonic() > deadline:
                process.kill()
                process.wait()
                raise ClusterError(f"{child.name} did not exit within {EXIT_WAIT_S:.0f} s")
            await asyncio.sleep(0.02)
        child.process = None
