"""``matchbox up``: the whole exchange on one machine, as supervised child processes.

In start order: the embedded Valkey (AOF on, fsync always, data in ``<data>/valkey``), one engine
leader, one API instance, the persistence and the analytics consumers (SQLite in the data
folder), and with ``--demo`` the demo bots. With ``REDIS_URL`` set there is no Valkey of our own;
with ``DATABASE_URL`` the consumers and the API use that database.

Once the API is ready, and unless it runs with ``--open`` (no API keys), ``up`` makes sure the
account ``you`` exists with a working API key in ``<data>/you.key`` (mode 0600), funded with
$1,000 when it is first made, and prints a dashboard link that logs in with that key.

Each child runs ``python -m matchbox <command>`` in a session of its own, so a Ctrl-C in the
terminal reaches only this supervisor, which then stops the children in order (demo, API,
engine, consumers, Valkey: each SIGTERM, then SIGKILL after a grace period) and exits 0. Should ``up`` itself be killed,
each child gets a SIGTERM from the kernel (Linux's parent-death signal) and stops too. A child
that exits on its own is logged, with the tail of its log, and started again after a backoff
that doubles up to 30 s and resets once it has run for a minute. Children log to
``<data>/logs/<name>.log``.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from matchbox.bus.server import find_binary, free_port, port_in_use

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
STABLE_AFTER_S = 60.0  # a child that ran this long starts again from the first backoff
STOP_GRACE_S = 15.0
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a child gets when its parent dies
READY_TIMEOUT_S = 90.0
YOU = "you"  # the account up makes for whoever runs it
YOU_DEPOSIT_CENTS = 100_000  # $1,000 to trade with, deposited once, when the account is made
HTTP_TIMEOUT_S = 10.0


class UpError(RuntimeError):
    """Something the user must fix before ``up`` can start (a port in use, no Valkey binary)."""


@dataclass(frozen=True, slots=True)
class ClusterLayout:
    """``matchbox cluster up``: a local Valkey Cluster of ``masters`` masters with ``replicas`` replicas
    each, and ``shards`` shards of markets placed on them (see :class:`~matchbox.bus.server.EmbeddedCluster`)."""

    masters: int = 3
    replicas: int = 1
    shards: int = 3

    @property
    def nodes(self) -> int:
        return self.masters * (1 + self.replicas)

    def ports(self, base: int) -> range:
        """The ports the nodes take: theirs, then their cluster bus's."""
        return range(base, base + 2 * self.nodes)

    def url(self, base: int) -> str:
        return "redis://" + ",".join(f"127.0.0.1:{base + i}" for i in range(self.nodes))


@dataclass(frozen=True, slots=True)
class Plan:
    """What ``up`` runs, worked out from the options and the environment."""

    data_dir: Path
    host: str
    port: int
    valkey_port: int
    redis_url: str | None  # an external Redis; None: our embedded Valkey
    database_url: str | None  # an external database; None: SQLite in the data folder
    admin_token: str
    demo: bool
    open_access: bool = False  # no API keys (--open): said in the banner and on every response
    cluster: ClusterLayout | None = None  # a local Valkey Cluster (matchbox cluster up) instead of one server

    @property
    def own_valkey(self) -> bool:
        return self.redis_url is None

    @property
    def shards(self) -> int:
        return 1 if self.cluster is None else self.cluster.shards

    @property
    def url(self) -> str:
        if self.cluster is not None:
            return self.cluster.url(self.valkey_port)
        return self.redis_url or f"redis://127.0.0.1:{self.valkey_port}/0"

    @property
    def api(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"


@dataclass(slots=True)
class Child:
    """One supervised process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    due_at: float = 0.0  # when to start it again after an exit (monotonic)
    backoff: float = BACKOFF_FIRST_S
    restarts: int = 0
    stopping: bool = field(default=False)

    @property
    def output_path(self) -> Path:
        """What the child writes outside its log (a crash's traceback, a server's own output)."""
        return self.log_path.with_suffix(".out")

    def start(self) -> None:
        """Start it: its log to ``log_path`` (rotated by the child, ``MATCHBOX_LOG_FILE``), its
        standard output and error to ``output_path``."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.output_path.open("ab") as out:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                self.argv,
                env={**self.env, "MATCHBOX_LOG_FILE": str(self.log_path)},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # the terminal's Ctrl-C is ours to hand on, in order
                preexec_fn=_die_with_parent,  # noqa: PLW1509 (up runs no threads)
            )
        self.started_at = time.monotonic()
        log.info("started", extra={"child": self.name, "pid": self.process.pid})

    def stop(self, grace: float = STOP_GRACE_S) -> int | None:
        """SIGTERM, wait up to ``grace``, then SIGKILL; the exit code."""
        self.stopping = True
        process = self.process
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(grace)
        except subprocess.TimeoutExpired:
            log.warning("did not stop in time; killing it", extra={"child": self.name, "grace_s": grace})
            process.kill()
            return process.wait()

    def tail(self, lines: int = 5) -> str:
        """The last lines of its log, then of its output (where a crash's traceback is)."""
        found = []
        for path in (self.log_path, self.output_path):
            try:
                found += path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
        return "\n".join(found)


def _die_with_parent() -> None:
    """In the child, before it runs: on Linux, a SIGTERM when ``up`` itself dies, even by SIGKILL,
    so that no child outlives its supervisor (elsewhere, nothing: stop ``up`` with Ctrl-C)."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Supervisor:
    """Starts children in order, restarts the ones that die, stops them in a given order."""

    def __init__(self, children: Sequence[Child]) -> None:
        self.children = list(children)

    def child(self, name: str) -> Child:
        return next(c for c in self.children if c.name == name)

    def check(self) -> None:
        """One pass: a child that exited is logged and due again after its backoff; a due one starts."""
        now = time.monotonic()
        for child in self.children:
            process = child.process
            if child.stopping:
                continue
            if process is not None and process.poll() is not None:
                ran = now - child.started_at
                if ran >= STABLE_AFTER_S:
                    child.backoff = BACKOFF_FIRST_S
                child.due_at = now + child.backoff
                child.restarts += 1
                log.warning(
                    "exited; restarting after backoff",
                    extra={
                        "child": child.name,
                        "code": process.returncode,
                        "ran_s": round(ran, 1),
                        "backoff_s": child.backoff,
                        "restarts": child.restarts,
                        "log": str(child.log_path),
                        "last_lines": child.tail(),
                    },
                )
                child.backoff = min(child.backoff * 2, BACKOFF_MAX_S)
                child.process = None
            elif process is None and now >= child.due_at:
                child.start()

    def stop_all(self, order: Sequence[str]) -> None:
        for name in order:
            child = self.child(name)
            code = child.stop()
            log.info("stopped", extra={"child": name, "code": code})


# --------------------------------------------------------------------------- the plan


def make_plan(
    *,
    data_dir: Path,
    host: str,
    port: int,
    valkey_port: int,
    redis_url: str | None,
    database_url: str | None,
    admin_token: str | None,
    demo: bool,
    open_access: bool = False,
    cluster: ClusterLayout | None = None,
) -> Plan:
    """The plan, after the checks that make a clear error instead of a traceback later."""
    if port_in_use(port):
        raise UpError(f"port {port} is already in use: stop what uses it, or pass --port (or set PORT)")
    if cluster is not None:
        taken = [p for p in cluster.ports(valkey_port) if port_in_use(p)]
        if taken:
            raise UpError(
                f"the cluster's nodes take ports {valkey_port}..{valkey_port + 2 * cluster.nodes - 1}, and "
                f"{taken[0]} is in use: pass --valkey-port"
            )
        find_binary()
    elif redis_url is None:
        if port_in_use(valkey_port):
            raise UpError(
                f"port {valkey_port} (the embedded Valkey's) is already in use: pass --valkey-port, "
                "or set REDIS_URL to use that server instead"
            )
        find_binary()  # raises ServerError saying how to get one
    data_dir.mkdir(parents=True, exist_ok=True)
    return Plan(
        data_dir=data_dir,
        host=host,
        port=port,
        valkey_port=valkey_port,
        redis_url=redis_url,
        database_url=database_url,
        admin_token=admin_token or _stored_admin_token(data_dir),
        demo=demo,
        open_access=open_access,
        cluster=cluster,
    )


def _stored_admin_token(data_dir: Path) -> str:
    """The admin token kept in the data folder (made on first start), so a restart keeps it."""
    path = data_dir / "admin_token"
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_urlsafe(24)
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token


def children(plan: Plan) -> list[Child]:
    """The children in start order."""
    python = [sys.executable, "-m", "matchbox"]
    env = {
        **os.environ,
        "REDIS_URL": plan.url,
        "MATCHBOX_DATA_DIR": str(plan.data_dir),
        "MATCHBOX_ADMIN_TOKEN": plan.admin_token,
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("DATABASE_URL", "MATCHBOX_OPEN", "MATCHBOX_CLUSTER", "MATCHBOX_SHARDS", "MATCHBOX_SHARD"):
        env.pop(name, None)
    if plan.open_access:
        env["MATCHBOX_OPEN"] = "1"
    if plan.database_url:
        env["DATABASE_URL"] = plan.database_url
    logs = plan.data_dir / "logs"
    found: list[Child] = []
    layout = plan.cluster
    if layout is not None:
        env.update(MATCHBOX_CLUSTER="1", MATCHBOX_SHARDS=str(layout.shards))
        if layout.replicas:
            env["MATCHBOX_DURABILITY"] = "replicated"  # a replica's failover loses no acknowledged order
        serve = [
            *python,
            "cluster",
            "serve",
            "--base-port",
            str(plan.valkey_port),
            "--data-dir",
            str(cluster_dir(plan)),
        ]
        serve += ["--masters", str(layout.masters), "--replicas", str(layout.replicas), "--shards", str(layout.shards)]
        found.append(Child("valkey", serve, env, logs / "valkey.log"))
    elif plan.own_valkey:
        valkey = [*python, "valkey", "--port", str(plan.valkey_port), "--data-dir", str(plan.data_dir / "valkey")]
        found.append(Child("valkey", valkey, env, logs / "valkey.log"))
    # one engine on a single server (as always); on a cluster two candidates per shard, for failover
    candidates = [("engine", ["--name", "engine"])]
    if layout is not None:
        candidates = [
            (f"engine-{shard}{c}", ["--shard", str(shard), "--name", f"engine-{shard}{c}"])
            for shard in range(layout.shards)
            for c in "ab"
        ]
    for name, options in candidates:
        engine = [*python, "engine", *options, "--watermark", str(plan.data_dir / f"{name}.watermark")]
        found.append(Child(name, engine, watched(env), logs / f"{name}.log"))
    api = [*python, "api", "--host", plan.host, "--port", str(plan.port)]
    found.append(Child("api", api, env, logs / "api.log"))
    for sink in ("persistence", "analytics"):
        if layout is None:
            consume = [*python, "consume", sink, "--name", f"up-{sink}"]
            found.append(Child(sink, consume, watched(env), logs / f"{sink}.log"))
            continue
        for shard in range(layout.shards):  # a group per shard's stream, all into one database
            name = f"{sink}-{shard}"
            consume = [*python, "consume", sink, "--shard", str(shard), "--name", f"up-{name}"]
            found.append(Child(name, consume, watched(env), logs / f"{name}.log"))
    for shard in range(layout.shards if layout is not None and layout.shards > 1 else 0):
        name = f"transfers-{shard}"  # the relay that pays in, on their target, the transfers taken out here
        consume = [*python, "consume", "transfers", "--shard", str(shard), "--name", f"up-{name}"]
        found.append(Child(name, consume, watched(env), logs / f"{name}.log"))
    if plan.demo:
        demo = [*python, "demo", "--url", plan.api]
        found.append(Child("demo", demo, env, logs / "demo.log"))
    return found


def watched(env: dict[str, str]) -> dict[str, str]:
    """A child's environment with a port of its own for its Prometheus metrics (listed in up.json)."""
    return {**env, "MATCHBOX_METRICS_PORT": str(free_port())}


def cluster_dir(plan: Plan) -> Path:
    return plan.data_dir / "valkey-cluster"


STOP_ORDER = ("demo", "api", "engine", "transfers", "persistence", "analytics", "valkey")


def stop_order(names: Sequence[str]) -> list[str]:
    """``names`` in :data:`STOP_ORDER`, by kind (``engine-1a`` is an engine), in start order within one."""
    return [name for kind in STOP_ORDER for name in names if name == kind or name.startswith(f"{kind}-")]


# --------------------------------------------------------------------------- running it


STATE_FILE = "up.json"  # how the running exchange is reached: `matchbox accounts` finds it by the data folder
# the settings a process of this exchange needs to reach it, as its children have them
STATE_SETTINGS = ("REDIS_URL", "MATCHBOX_CLUSTER", "MATCHBOX_SHARDS", "MATCHBOX_DURABILITY")


def write_state(plan: Plan, children: list[Child]) -> None:
    """``data/up.json``: this process, its API, the settings that reach its Redis, and where each
    process's Prometheus metrics are."""
    env = children[0].env
    metrics = {"api": f"{plan.api}/metrics"}
    metrics |= {
        c.name: f"http://127.0.0.1:{c.env['MATCHBOX_METRICS_PORT']}/metrics"
        for c in children
        if "MATCHBOX_METRICS_PORT" in c.env
    }
    state = {
        "pid": os.getpid(),
        "api": plan.api,
        "settings": {k: env[k] for k in STATE_SETTINGS if k in env},
        "metrics": metrics,
    }
    path = plan.data_dir / STATE_FILE
    path.write_text(json.dumps(state, indent=2) + "\n")


def running_state(data_dir: Path) -> dict[str, Any] | None:
    """What ``data_dir``'s ``up.json`` says, if the ``matchbox up`` that wrote it still runs."""
    try:
        state: dict[str, Any] = json.loads((data_dir / STATE_FILE).read_text())
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state


def run(plan: Plan, stop: threading.Event, console: Console) -> int:
    """Start everything, announce it once the API is ready, supervise until ``stop``; the exit code."""
    supervisor = Supervisor(children(plan))
    present = [child.name for child in supervisor.children]
    write_state(plan, supervisor.children)
    try:
        for child in supervisor.children:
            if child.name == "valkey" and plan.cluster is not None:
                (cluster_dir(plan) / READY_FILE).unlink(missing_ok=True)
            child.start()
            if child.name == "valkey":
                _wait_for_valkey(plan, child, stop)
        ready_by = time.monotonic() + READY_TIMEOUT_S
        announced = False
        while not stop.wait(0.2):
            supervisor.check()
            if announced:
                continue
            if _ready(plan.api):
                you = None if plan.open_access else _your_account(plan, console)
                announce(plan, you, console)
                announced = True
            elif time.monotonic() > ready_by:
                logs = plan.data_dir / "logs"
                console.print(f"[red]the API did not become ready in {READY_TIMEOUT_S:.0f} s[/]: see {logs}")
                return 1
        console.print("stopping: demo, API, engine, consumers, then Valkey …")
        return 0
    finally:
        supervisor.stop_all(stop_order(present))
        (plan.data_dir / STATE_FILE).unlink(missing_ok=True)


READY_FILE = "ready"  # written by ``matchbox cluster serve`` once the cluster is up and its shards placed


def _wait_for_valkey(plan: Plan, child: Child, stop: threading.Event) -> None:
    """Until the embedded Valkey answers (a cluster: until it is up with its shards placed)."""
    ready_file = cluster_dir(plan) / READY_FILE
    client = redis.Redis(host="127.0.0.1", port=plan.valkey_port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + (60.0 if plan.cluster else 30.0)
    try:
        while not stop.is_set():
            try:
                client.ping()
                if plan.cluster is None or ready_file.exists():
                    return
                raise redis.ConnectionError("the cluster is not placed yet")
            except redis.RedisError:
                if child.process is not None and child.process.poll() is not None:
                    raise UpError(f"the embedded Valkey exited; its log: {child.log_path}\n{child.tail()}") from None
                if time.monotonic() > deadline:
                    raise UpError(f"the embedded Valkey did not come up in time; see {child.log_path}") from None
                stop.wait(0.05)
    finally:
        client.close()


def _ready(api: str) -> bool:
    """``GET /ready`` answers 200: Redis reachable and a leader committing."""
    try:
        with urllib.request.urlopen(f"{api}/ready", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


# --------------------------------------------------------------------------- the account "you"


@dataclass(frozen=True, slots=True)
class YourAccount:
    """The account ``up`` trades as in the dashboard, and its API key (also in ``key_file``)."""

    account: str
    api_key: str
    key_file: Path
    created: bool  # made, and funded, by this start


def ensure_your_account(plan: Plan) -> YourAccount:
    """The account ``you`` with an API key the API takes, kept in ``<data>/you.key``.

    A key in the file that still works is kept. Otherwise the account is made and funded (only
    then, so a restart deposits nothing), or, if it exists already, given a new key.
    """
    path = plan.data_dir / "you.key"
    key = path.read_text().strip() if path.exists() else ""
    if key and _key_works(plan.api, key):
        return YourAccount(YOU, key, path, created=False)
    admin = plan.admin_token
    status, body = _call("POST", f"{plan.api}/v1/admin/accounts", admin, {"account": YOU})
    created = status == 201
    if status == 409:  # the account exists, its key is lost: another one
        status, body = _call("POST", f"{plan.api}/v1/admin/accounts/{YOU}/keys", admin)
    if status != 201:
        raise UpError(f"could not get an API key for the account {YOU!r}: {status} {body}")
    key = str(body["api_key"])
    _write_secret(path, key)
    for shard in range(plan.shards) if created else ():  # cash lives per shard: some on each
        deposit = {"amount": YOU_DEPOSIT_CENTS, "shard": shard}
        status, body = _call("POST", f"{plan.api}/v1/admin/accounts/{YOU}/deposit", admin, deposit)
        if status != 200:
            raise UpError(f"could not fund the account {YOU!r}: {status} {body}")
    return YourAccount(YOU, key, path, created=created)


def _your_account(plan: Plan, console: Console) -> YourAccount | None:
    """``ensure_your_account``, or None after saying why not: the exchange runs on without it."""
    try:
        return ensure_your_account(plan)
    except (UpError, OSError, ValueError, KeyError) as exc:
        console.print(f"[yellow]no account {YOU!r} for the dashboard[/]: {exc}")
        return None


def _key_works(api: str, key: str) -> bool:
    status, body = _call("GET", f"{api}/v1/account", key)
    if status in (401, 403):
        return False
    if status != 200:
        raise UpError(f"GET /account with the key in you.key: {status} {body}")
    return True


def _call(method: str, url: str, token: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """One JSON request with a bearer token: the status and the decoded body (None if empty)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def _write_secret(path: Path, text: str) -> None:
    """``text`` in ``path``, readable by its owner only (the mode is set before anything is written)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # a file that was there keeps its old mode through os.open
    with os.fdopen(descriptor, "w") as out:
        out.write(text + "\n")


# --------------------------------------------------------------------------- the banner


def announce(plan: Plan, you: YourAccount | None, console: Console) -> None:
    """The banner; below it, the dashboard link that logs in as ``you``, on a line of its own that
    is never cut or broken by the panel (the terminal wraps it, so it stays one link to copy)."""
    console.print(banner(plan, you))
    if you is not None:
        console.print(f"Dashboard as {you.account}: {plan.api}/#key={you.api_key}", soft_wrap=True, highlight=False)
    if plan.open_access:
        console.print("[bold red]OPEN MODE: no authentication. Use it for local demos only.[/]")


def banner(plan: Plan, you: YourAccount | None = None) -> Panel:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    ws = plan.api.replace("http://", "ws://", 1)
    table.add_row("Dashboard", f"{plan.api}/")
    table.add_row("API", plan.api)
    table.add_row("API docs", f"{plan.api}/v1/docs")
    table.add_row("WebSocket", f"{ws}/v1/ws")
    if plan.cluster is not None:
        layout = plan.cluster
        nodes = f"{layout.masters} masters with {layout.replicas} replica{'s' * (layout.replicas != 1)} each"
        table.add_row("Valkey Cluster", f"{nodes}, {layout.shards} shards: {plan.url}")
    else:
        table.add_row("Redis", plan.url + ("" if plan.own_valkey else "  (external)"))
    database = plan.database_url or f"sqlite: {plan.data_dir / 'matchbox.db'}"
    table.add_row("Database", database)
    table.add_row("Data", f"{plan.data_dir}  (logs in {plan.data_dir / 'logs'})")
    table.add_row("Admin token", plan.admin_token)
    if plan.open_access:
        table.add_row("Auth", "[bold red]Authentication is OFF (--open): anyone may trade as any account[/]")
    elif you is not None:
        each = " on each shard" if plan.shards > 1 else ""
        funded = f", ${YOU_DEPOSIT_CENTS // 100:,} deposited{each}" if you.created else ""
        table.add_row("Account", f"{you.account}  (API key in {you.key_file}{funded})")
    if plan.demo:
        table.add_row("Demo", "market-maker and taker bots are trading")
    return Panel(table, title="Matchbox is up", subtitle="Ctrl-C stops it", expand=False)
