"""``matchbox bench latency``: where an order's milliseconds go, beside the least a gateway can do.

In one run, on this machine, with every server process pinned to one core and the load on the
other (where there are two):

- **baseline**: :mod:`matchbox.bench.gateway` (the same ``POST /v1/orders`` body, the same
  server stack, ``Engine.apply`` in process, a write and an fsync per order, the answer);
- **matchbox**: a private Valkey with AOF ``always``, one engine leader and one API (open mode);
- first, a **trivial server** (the gateway's ``--trivial``: fixed answers, nothing else), in a
  closed loop: what the load generator costs, and how fast it goes, on its own.

Each is offered the same seeded flow by the load generator of ``matchbox loadgen``: a closed
loop (``--concurrency`` clients, as fast as answers come), then an open loop at ``--rate``
orders/s. The figures are Matchbox's as ratios to the baseline's, and Matchbox's per-stage
breakdown (``matchbox_order_stage_seconds`` of the API's ``/metrics``, counted over the open
loop): journal (the submission, its fsync included), to_engine, match, commit (until the API's
tail saw the outcome), answer. A stage's p50 and p99 are read from its histogram's buckets: the
bucket's upper bound.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import msgspec
from rich.console import Console
from rich.table import Table

from matchbox import loadgen
from matchbox.api.services import ORDER_STAGES
from matchbox.bus.server import EmbeddedValkey, free_port


@dataclass(frozen=True, slots=True)
class Run:
    orders_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    # CPU time (user + system) per order answered, ms, by process: the servers' and the load's own
    cpu_ms: dict[str, float]
    # the times a server process went to sleep waiting (voluntary context switches of all its
    # threads) per order answered: each is a wake-up later, dear on a virtual machine's idle core
    sleeps: dict[str, float]


@dataclass(frozen=True, slots=True)
class Figures:
    cores: str
    closed_trivial: Run  # the load generator against a server that does nothing: its own cost
    closed_baseline: Run
    closed_matchbox: Run
    open_rate: float
    open_baseline: Run
    open_matchbox: Run
    closed_ratio: float  # matchbox / baseline orders/s
    open_p50_ratio: float | None  # matchbox p50 / baseline p50
    open_p99_ratio: float | None
    stages: dict[str, tuple[float | None, float | None]]  # stage -> (p50 ms, p99 ms), at most


def measure(seconds: float, rate: float, concurrency: int) -> Figures:
    servers, load = _cores()
    with tempfile.TemporaryDirectory(prefix="matchbox-latency-") as folder:
        root = Path(folder)
        with _baseline(root, servers, trivial=True) as (url, pids):
            closed_trivial = _load(url, pids, seconds, 0.0, concurrency)
        with _baseline(root, servers) as (url, pids):
            closed_baseline = _load(url, pids, seconds, 0.0, concurrency)
            open_baseline = _load(url, pids, seconds, rate, concurrency)
        with _stack(root, servers) as (url, pids):
            closed_matchbox = _load(url, pids, seconds, 0.0, concurrency)
            before = _buckets(url)
            open_matchbox = _load(url, pids, seconds, rate, concurrency)
            after = _buckets(url)
    del load
    stages = {stage: _quantiles(before.get(stage, {}), after.get(stage, {})) for stage in ORDER_STAGES}
    return Figures(
        cores=f"servers on {sorted(servers)}, load on {sorted(os.sched_getaffinity(0))}",
        closed_trivial=closed_trivial,
        closed_baseline=closed_baseline,
        closed_matchbox=closed_matchbox,
        open_rate=rate,
        open_baseline=open_baseline,
        open_matchbox=open_matchbox,
        closed_ratio=closed_matchbox.orders_per_s / max(closed_baseline.orders_per_s, 1e-9),
        open_p50_ratio=_ratio(open_matchbox.p50_ms, open_baseline.p50_ms),
        open_p99_ratio=_ratio(open_matchbox.p99_ms, open_baseline.p99_ms),
        stages=stages,
    )


def _cores() -> tuple[set[int], set[int]]:
    """Servers on the first core, this process (the load) on the others; one core: all share it."""
    cores = sorted(os.sched_getaffinity(0))
    servers = {cores[0]}
    load = set(cores[1:]) or servers
    os.sched_setaffinity(0, load)
    return servers, load


def _pin(process: subprocess.Popen[bytes], cores: set[int]) -> None:
    with contextlib.suppress(OSError):  # it may have died already: the wait for it says so
        os.sched_setaffinity(process.pid, cores)


def _spawn(args: list[str], log: Path, env: dict[str, str], cores: set[int]) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, *args], env=env, stdout=out, stderr=subprocess.STDOUT)
    _pin(process, cores)
    return process


def _ready(url: str, path: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"a server of the benchmark exited: {log.read_text()[-2000:]}")
        # refused, or an HTTP error (URLError and HTTPError are OSErrors): not yet
        with contextlib.suppress(OSError), urllib.request.urlopen(url + path, timeout=1) as answer:
            if answer.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer {path} in 60 s: {log.read_text()[-2000:]}")


def _stop(*processes: subprocess.Popen[bytes]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@contextlib.contextmanager
def _baseline(root: Path, cores: set[int], *, trivial: bool = False) -> Iterator[tuple[str, dict[str, int]]]:
    port = free_port()
    log = root / "gateway.log"
    args = ["-m", "matchbox.bench.gateway", "--port", str(port), "--wal", str(root / "gateway.wal")]
    args += ["--trivial"] if trivial else []
    process = _spawn(args, log, dict(os.environ), cores)
    url = f"http://127.0.0.1:{port}"
    try:
        _ready(url, "/v1/health", process, log)
        yield url, {"gateway": process.pid}
    finally:
        _stop(process)


@contextlib.contextmanager
def _stack(root: Path, cores: set[int]) -> Iterator[tuple[str, dict[str, int]]]:
    with EmbeddedValkey(root / "valkey", fsync="always") as server:
        _pin_pid(None if server.process is None else server.process.pid, cores)
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("MATCHBOX_") and k != "REDIS_URL"},
            "REDIS_URL": server.url,
            "MATCHBOX_OPEN": "1",
            "MATCHBOX_DURABILITY": "always",
            "MATCHBOX_DATA_DIR": str(root / "data"),
            "MATCHBOX_LOG_LEVEL": "WARNING",
        }
        engine = _spawn(["-m", "matchbox", "engine", "--name", "bench"], root / "engine.log", env, cores)
        api = _spawn(["-m", "matchbox", "api", "--port", str(port)], root / "api.log", env, cores)
        url = f"http://127.0.0.1:{port}"
        try:
            _ready(url, "/ready", api, root / "api.log")
            _ready(url, "/v1/markets/default", api, root / "api.log")
            pids = {"api": api.pid, "engine": engine.pid}
            if server.process is not None:
                pids["valkey"] = server.process.pid
            yield url, pids
        finally:
            _stop(api, engine)


def _pin_pid(pid: int | None, cores: set[int]) -> None:
    if pid is not None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, cores)


def _load(url: str, pids: dict[str, int], seconds: float, rate: float, concurrency: int) -> Run:
    config = loadgen.Config(urls=(url,), seconds=seconds, rate=rate, concurrency=concurrency, progress=False)
    before = {name: _cpu_seconds(pid) for name, pid in pids.items()}
    slept = {name: _sleeps(pid) for name, pid in pids.items()}
    load_before = time.process_time()
    figures = loadgen.measure(config)
    load = time.process_time() - load_before
    used = {name: _cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    answered = max(figures.orders_per_s * figures.seconds, 1.0)
    cpu_ms = {name: 1000 * seconds / answered for name, seconds in {**used, "load": load}.items()}
    sleeps = {name: (_sleeps(pid) - slept[name]) / answered for name, pid in pids.items()}
    return Run(figures.orders_per_s, figures.latency_p50_ms, figures.latency_p99_ms, figures.errors, cpu_ms, sleeps)


def _sleeps(pid: int) -> int:
    """The voluntary context switches of every thread of a process, from /proc; 0 where there is none."""
    total = 0
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                status = (task / "status").read_text()
                total += int(status.split("voluntary_ctxt_switches:")[1].split()[0])
    return total


def _cpu_seconds(pid: int) -> float:
    """The user and system CPU time a process (every thread of it) has used, from /proc; 0 where there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


BUCKET = re.compile(r"^matchbox_order_stage_seconds_bucket\{(?P<labels>[^}]*)\} (?P<count>\S+)$", re.MULTILINE)


def _buckets(url: str) -> dict[str, dict[float, float]]:
    """stage -> {upper bound (s): cumulative count} from the API's /metrics."""
    found: dict[str, dict[float, float]] = {}
    with urllib.request.urlopen(url + "/metrics", timeout=10) as answer:
        text = answer.read().decode()
    for match in BUCKET.finditer(text):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        found.setdefault(labels["stage"], {})[float(labels["le"])] = float(match["count"])
    return found


def _quantiles(before: dict[float, float], after: dict[float, float]) -> tuple[float | None, float | None]:
    """The p50 and p99 (ms, a bucket's upper bound) of what the histogram counted between the two readings."""
    counts = sorted((bound, after[bound] - before.get(bound, 0.0)) for bound in after)
    total = counts[-1][1] if counts else 0.0
    if total <= 0:
        return None, None

    def quantile(q: float) -> float | None:
        bound = next(b for b, cumulative in counts if cumulative >= q * total)
        return None if bound == float("inf") else bound * 1000

    return quantile(0.5), quantile(0.99)


def _ratio(value: float | None, base: float | None) -> float | None:
    return None if value is None or not base else value / base


def render(figures: Figures, console: Console) -> None:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:,.2f} ms"

    def ratio(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}x"

    table = Table(title=f"matchbox bench latency ({figures.cores})")
    for column in ("", "baseline gateway", "matchbox", "matchbox / baseline"):
        table.add_column(column, justify="right")
    table.add_row(
        "closed loop: orders/s",
        f"{figures.closed_baseline.orders_per_s:,.0f}",
        f"{figures.closed_matchbox.orders_per_s:,.0f}",
        ratio(figures.closed_ratio),
    )
    table.add_row(
        f"open loop {figures.open_rate:,.0f}/s: p50",
        ms(figures.open_baseline.p50_ms),
        ms(figures.open_matchbox.p50_ms),
        ratio(figures.open_p50_ratio),
    )
    table.add_row(
        f"open loop {figures.open_rate:,.0f}/s: p99",
        ms(figures.open_baseline.p99_ms),
        ms(figures.open_matchbox.p99_ms),
        ratio(figures.open_p99_ratio),
    )
    console.print(table)
    cpu = Table(title="CPU time per order (user + system), by process")
    for column in ("run", "servers", "of which", "load generator", "sleeps per order"):
        cpu.add_column(column, justify="right")
    for name, run_ in (
        ("trivial server, closed", figures.closed_trivial),
        ("baseline, closed", figures.closed_baseline),
        ("matchbox, closed", figures.closed_matchbox),
        ("baseline, open", figures.open_baseline),
        ("matchbox, open", figures.open_matchbox),
    ):
        servers = {k: v for k, v in run_.cpu_ms.items() if k != "load"}
        parts = ", ".join(f"{k} {v * 1000:,.0f} µs" for k, v in servers.items())
        sleeps = ", ".join(f"{k} {v:.1f}" for k, v in run_.sleeps.items())
        cpu.add_row(
            name,
            f"{sum(servers.values()) * 1000:,.0f} µs",
            parts,
            f"{run_.cpu_ms.get('load', 0) * 1000:,.0f} µs",
            sleeps,
        )
    console.print(cpu)
    trivial, matchbox = figures.closed_trivial, figures.closed_matchbox
    matchbox_cpu = sum(v for k, v in matchbox.cpu_ms.items() if k != "load")
    console.print(
        f"The load generator alone (against the trivial server): {trivial.orders_per_s:,.0f} orders/s, "
        f"{trivial.cpu_ms.get('load', 0) * 1000:,.0f} µs of CPU an order, "
        f"{trivial.cpu_ms.get('load', 0) / max(matchbox_cpu, 1e-9):.0%} of what Matchbox's servers spend an order "
        "in the closed loop."
    )
    stages = Table(title="matchbox, open loop: where an order's time goes (at most, by histogram bucket)")
    for column in ("stage", "p50", "p99"):
        stages.add_column(column, justify="right")
    for stage, (p50, p99) in figures.stages.items():
        stages.add_row(stage, f"≤ {ms(p50)}", f"≤ {ms(p99)}")
    console.print(stages)


def run(*, seconds: float, rate: float, concurrency: int, json_output: bool) -> int:
    """Measure, print the tables (and the JSON line); the exit code."""
    console = Console(stderr=json_output)
    figures = measure(seconds, rate, concurrency)
    render(figures, console)
    if json_output:
        sys.stdout.write(msgspec.json.encode(asdict(figures)).decode() + "\n")
    return 0
