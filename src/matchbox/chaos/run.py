"""A whole ``matchbox chaos`` run: start, traffic with faults and hostile clients, quiet, checks.

Everything runs on one event loop in the main thread, which also starts every child process
(their parent-death signal follows that thread). The children are stopped in order when the run
ends, however it ends; the data folder (Valkey's AOF, SQLite, every process's log) is removed
after a run that passed, unless ``--keep``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import msgspec
from rich.console import Console
from rich.live import Live

from matchbox.bus.connection import id_order
from matchbox.chaos.checks import (
    Check,
    check_feeds,
    check_hostile,
    check_instances,
    check_orders,
    check_processes,
    check_trades,
)
from matchbox.chaos.clock import pause, until
from matchbox.chaos.cluster import Cluster, ClusterError
from matchbox.chaos.faults import grace_of, run_faults
from matchbox.chaos.feeds import Subscriber
from matchbox.chaos.hostile import Hostile
from matchbox.chaos.http import Http
from matchbox.chaos.money import check_money
from matchbox.chaos.quiet import Quiet, wait_for_quiet
from matchbox.chaos.records import FeedLog, Records
from matchbox.chaos.report import LiveView, Report
from matchbox.chaos.scratch import ScratchDatabase, ScratchError
from matchbox.chaos.state import State, gather
from matchbox.chaos.traffic import (
    GTD_MAX_MS,
    MARKETS,
    SetupError,
    Trader,
    make_account,
    make_markets,
    make_traders,
)
from matchbox.engine.types import TradeExecuted
from matchbox.logs import LogfmtFormatter

SUBSCRIBERS = 4
READY_TIMEOUT_S = 90.0
CATCH_UP_S = 30.0  # for the subscribers to reach the last trade once all is quiet
STOP_TIMEOUT_S = 60.0  # for the fault in hand and the last probe to finish


@dataclass(frozen=True, slots=True)
class Config:
    seconds: float
    seed: int
    json_output: bool = False
    database_url: str | None = None
    keep: bool = False


def run(config: Config) -> int:
    """The exit code: 0 if every check held, 1 on a violation, 2 if the exchange could not run.

    The data folder is kept with ``--keep``, and whenever the run did not pass: its logs are
    what a violation is investigated with."""
    console = Console(stderr=config.json_output)
    data_dir = Path(tempfile.mkdtemp(prefix="matchbox-chaos-"))
    _log_to(data_dir / "logs" / "chaos.log")
    signal.signal(signal.SIGTERM, _interrupt)
    report = _attempt(config, data_dir, console)
    code = 2 if report is None else 1 if report.violations else 0
    kept = config.keep or code != 0
    if report is not None:
        report.data_dir = str(data_dir) if kept else None
        console.print(report.render())
    if kept:
        console.print(f"data and logs kept in {data_dir}", highlight=False)
    else:
        shutil.rmtree(data_dir, ignore_errors=True)
    if report is not None and config.json_output:
        sys.stdout.write(msgspec.json.encode(report.figures()).decode() + "\n")
    return code


def _attempt(config: Config, data_dir: Path, console: Console) -> Report | None:
    """The run's report, or None (said why) if the exchange could not be run."""
    scratch = ScratchDatabase(config.database_url, config.seed) if config.database_url else None
    cluster: Cluster | None = None
    report: Report | None = None
    try:
        database_url = scratch.create() if scratch else None
        cluster = Cluster(data_dir, database_url, secrets.token_urlsafe(24))
        with asyncio.Runner() as runner:
            report = runner.run(_session(config, cluster, console))
    except (ClusterError, SetupError, ScratchError) as exc:
        console.print(f"[red]error:[/] {exc}")
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: the exchange is stopped, nothing was checked")
    except Exception:  # a fault of the tool itself: said as such, never as a violation of the exchange
        console.print_exception()
        console.print("[red]matchbox chaos failed[/]")
    finally:
        if cluster is not None:
            cluster.stop()
        if scratch is not None and not config.keep:  # a shared database is left as found
            _drop(scratch, console)
    return report


def _drop(scratch: ScratchDatabase, console: Console) -> None:
    try:
        scratch.drop()
    except ScratchError as exc:
        console.print(f"[yellow]the run's schema {scratch.schema} was not dropped[/]: {exc}")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # the run's finally blocks stop the children and clean up


def _log_to(path: Path) -> None:
    """This process's own log (the supervisor's notes) goes to a file: the terminal is the view's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(LogfmtFormatter())
    logging.getLogger().handlers[:] = [handler]
    logging.getLogger().setLevel(logging.INFO)


async def _session(config: Config, cluster: Cluster, console: Console) -> Report:
    records = Records()
    view = LiveView(records, config.seed, config.seconds)
    done = asyncio.Event()
    watcher: asyncio.Task[None] | None = None
    with Live(view, console=console, transient=True, auto_refresh=False) as live:
        try:
            await cluster.start()
            watcher = asyncio.create_task(_watch(cluster, records, live, done))  # once all are started
            async with Http(cluster.instances, cluster.admin_token, records.answers) as http:
                checks = await _exercise(config, cluster, http, records, view, console)
        finally:
            done.set()
            if watcher is not None:
                await watcher
            await cluster.close()
    return Report(config.seed, config.seconds, records, checks, None)


async def _watch(cluster: Cluster, records: Records, live: Live, done: asyncio.Event) -> None:
    """Supervise the children and redraw the view, on the loop (records are never read off it)."""
    while not await pause(done, 0.25):
        cluster.supervise(records)
        live.refresh()


def _phase(view: LiveView, console: Console, phase: str) -> None:
    view.phase = phase
    console.print(f"chaos: {phase}", highlight=False)


@dataclass(frozen=True, slots=True)
class Cast:
    """Who acts during the run."""

    traders: list[Trader]
    hostile: Hostile
    subscribers: list[Subscriber]


async def _exercise(
    config: Config, cluster: Cluster, http: Http, records: Records, view: LiveView, console: Console
) -> list[Check]:
    _phase(view, console, "waiting for both API instances to be ready")
    await _ready(cluster, http.counting(records.check_answers))
    _phase(view, console, "making markets and funded accounts")
    cast = await _cast(config, cluster, http, records)
    stop, feeds_done = asyncio.Event(), asyncio.Event()
    _phase(view, console, f"traffic, faults and hostile clients for {config.seconds:g} s")
    view.traffic_started = time.monotonic()
    feeds = [asyncio.create_task(s.run(feeds_done)) for s in cast.subscribers]
    busy = [asyncio.create_task(t.run(stop)) for t in cast.traders]
    busy.append(asyncio.create_task(run_faults(cluster, records, random.Random(config.seed + 1), config.seconds, stop)))
    busy.append(asyncio.create_task(cast.hostile.run(config.seconds, stop)))
    try:
        await pause(stop, config.seconds)
        stop.set()
        _phase(view, console, "stopping the traffic and the faults")
        await asyncio.wait_for(asyncio.gather(*busy), STOP_TIMEOUT_S)
        quiet, state = await _settle(cluster, http, records, view, console, cast.subscribers)
    finally:
        stop.set()
        feeds_done.set()
        for task in busy:
            task.cancel()
        await asyncio.gather(*busy, *feeds, return_exceptions=True)
        await cast.hostile.close()
    _phase(view, console, "checking")
    return _checks(records, state, quiet)


async def _cast(config: Config, cluster: Cluster, http: Http, records: Records) -> Cast:
    await make_markets(http)
    traders = await make_traders(http, records, config.seed)
    hostile_key = await make_account(http, records, "chaos-hostile", 0)
    hostile = Hostile(http, records, random.Random(config.seed + 2), hostile_key)
    start_after = await cluster.newest_event()  # every subscriber is owed every trade after this
    subscribers = [_subscriber(config.seed, i, start_after, http) for i in range(SUBSCRIBERS)]
    records.feeds = [s.log for s in subscribers]
    return Cast(traders, hostile, subscribers)


def _subscriber(seed: int, i: int, start_after: str, http: Http) -> Subscriber:
    market_id = MARKETS[i % len(MARKETS)].market_id
    return Subscriber(FeedLog(f"feed-{i}", market_id, start_after), http, random.Random(seed * 7919 + i))


async def _settle(
    cluster: Cluster, http: Http, records: Records, view: LiveView, console: Console, subscribers: list[Subscriber]
) -> tuple[Quiet, State]:
    """Quiet, what every part holds, and the subscribers caught up with it."""
    await asyncio.sleep(GTD_MAX_MS / 1000 + 0.5)  # the last GTD orders expire: the books settle
    _phase(view, console, "waiting for quiet")
    own = http.counting(records.check_answers)
    quiet = await wait_for_quiet(cluster, own)
    _phase(view, console, "reading what every part holds")
    state = await gather(cluster.url, cluster.database_url, cluster.data_dir, own, records)
    for subscriber in subscribers:
        subscriber.cycling = False
    _phase(view, console, "letting the WebSocket subscribers catch up")
    await until(lambda: _caught_up(records.feeds, state), CATCH_UP_S)
    return quiet, state


async def _ready(cluster: Cluster, http: Http) -> None:
    async def ready() -> bool:
        replies = [await http.call(instance, "GET", "/ready") for instance in http.instances]
        return all(reply.status == 200 for reply in replies)

    if not await until(ready, READY_TIMEOUT_S, every_s=0.5):
        tails = "\n".join(f"--- {c.name}\n{c.tail()}" for c in cluster.supervisor.children)
        raise ClusterError(f"the API instances were not ready within {READY_TIMEOUT_S:.0f} s\n{tails}")


async def _caught_up(feeds: list[FeedLog], state: State) -> bool:
    """Every subscriber has the last trade of its market (one that never connected is not waited for)."""
    last = {e.event.market_id: e.stream_id for e in state.events if isinstance(e.event, TradeExecuted)}
    return all(
        not f.connections or f.market_id not in last or id_order(f.cursor or "0-0") >= id_order(last[f.market_id])
        for f in feeds
    )


def _checks(records: Records, state: State, quiet: Quiet) -> list[Check]:
    windows = [fault.window(grace_of(fault.kind)) for fault in records.faults]
    return [
        check_orders(records.acks, state.events, state.undecodable),
        check_trades(state.events, state.sql, state.dead_letters),
        check_money(state.events, state.engine, state.apis, state.sql, records.cash),
        check_instances(
            state.apis,
            state.stream_end,
            state.engine,
            records.answers,
            records.check_answers,
            windows,
            quiet,
        ),
        check_feeds(records.feeds, state.events),
        check_hostile(records.probes),
        check_processes(records.exits),
    ]
