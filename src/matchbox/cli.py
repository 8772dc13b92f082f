"""The ``matchbox`` command."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from matchbox.bus.accounts import AccountStore
    from matchbox.consumers.process import SinkKind
    from matchbox.settings import Settings

app = typer.Typer(
    help="Matchbox: an exchange core for prediction markets and betting exchanges.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
# Fewer, larger young-generation collections: a service holding a big projection otherwise
# pauses for a full collection every few hundred allocations' worth of churn (p99 latency).
GC_THRESHOLDS = (50_000, 50, 100)
# options several commands share, declared once
JsonOutput = Annotated[bool, typer.Option("--json", help="Also print the figures as one JSON object, last line.")]
JournalRedis = Annotated[str | None, typer.Option(envvar="REDIS_URL", help="The Redis/Valkey holding the journal.")]
StreamRedis = Annotated[
    str | None, typer.Option(envvar="REDIS_URL", help="The Redis/Valkey holding the output stream.")
]
ConsumerDatabase = Annotated[
    str | None, typer.Option(envvar="DATABASE_URL", help="postgresql://… ; unset: SQLite in --data-dir.")
]
SqliteFolder = Annotated[Path | None, typer.Option(help="Where the SQLite file lives (default: data).")]
ShardOption = Annotated[
    int | None,
    typer.Option("--shard", min=0, help="The shard to run for (default: MATCHBOX_SHARD, else 0)."),
]
OpenAccess = Annotated[
    bool,
    typer.Option(
        "--open",
        envvar="MATCHBOX_OPEN",
        help="No API keys: anyone trades as any account the request names. Local demos only; said loudly.",
    ),
]
bench_app = typer.Typer(help="Benchmarks that print figures (ratios against a baseline in the same run).")
app.add_typer(bench_app, name="bench")


def _stop_on_signals() -> threading.Event:
    """An event set by the first SIGINT or SIGTERM; a second SIGINT interrupts as usual."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


@app.command()
def up(
    data_dir: Annotated[
        Path, typer.Option(envvar="MATCHBOX_DATA_DIR", help="Where Valkey's AOF, SQLite and the logs live.")
    ] = Path("data"),
    port: Annotated[int | None, typer.Option(help="The API's port (default: PORT, else 8080).")] = None,
    host: Annotated[str, typer.Option(help="The API's interface.")] = "127.0.0.1",
    valkey_port: Annotated[int, typer.Option(help="The embedded Valkey's port (127.0.0.1).")] = 6390,
    demo: Annotated[bool, typer.Option(help="Create demo markets and run bots that keep them trading.")] = False,
    open_access: OpenAccess = False,
    redis_url: Annotated[
        str | None, typer.Option(envvar="REDIS_URL", help="Use this Redis/Valkey instead of an embedded one.")
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(envvar="DATABASE_URL", help="Use this database (postgresql://…) instead of SQLite.")
    ] = None,
) -> None:
    """Run the whole exchange on this machine: Valkey, engine, API, consumers (and --demo bots).

    Prints the URLs once the API is ready. Ctrl-C or SIGTERM stops everything in order and exits
    0; running it again resumes where it stopped (same markets, orders, trades and candles).
    """
    _up(
        data_dir=data_dir,
        host=host,
        port=port,
        valkey_port=valkey_port,
        redis_url=redis_url,
        database_url=database_url,
        demo=demo,
        open_access=open_access,
    )


def _up(*, port: int | None, open_access: bool, **plan: Any) -> None:
    """``up`` and ``cluster up``: the plan, checked (a clear error, exit 2), then run until stopped."""
    from rich.console import Console

    from matchbox.bus.server import ServerError
    from matchbox.logs import configure_from
    from matchbox.settings import Settings
    from matchbox.up import UpError, make_plan, run

    settings = Settings()
    configure_from(settings)
    try:
        made = make_plan(
            port=port or settings.port,
            admin_token=settings.admin_token,
            open_access=open_access or settings.open_access,
            **plan,
        )
    except (UpError, ServerError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    stop = _stop_on_signals()
    try:
        code = run(made, stop, Console())
    except UpError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


cluster_app = typer.Typer(help="Matchbox on a Valkey Cluster: shards of markets on several masters, with replicas.")
app.add_typer(cluster_app, name="cluster")
Masters = Annotated[int, typer.Option(min=1, help="Cluster masters.")]
Replicas = Annotated[int, typer.Option(min=0, help="Replicas of each master (1 or more: replicated durability).")]
Shards = Annotated[int, typer.Option(min=1, help="Shards of markets, placed on the masters in turn.")]


@cluster_app.command("up")
def cluster_up(
    data_dir: Annotated[
        Path, typer.Option(help="Where the nodes' AOF, SQLite and the logs live (apart from `matchbox up`'s).")
    ] = Path("data-cluster"),
    shards: Shards = 3,
    masters: Masters = 3,
    replicas: Replicas = 1,
    port: Annotated[int | None, typer.Option(help="The API's port (default: PORT, else 8080).")] = None,
    host: Annotated[str, typer.Option(help="The API's interface.")] = "127.0.0.1",
    valkey_port: Annotated[
        int, typer.Option(help="The first node's port; the nodes take 2 x (masters x (1 + replicas)) ports from it.")
    ] = 7100,
    demo: Annotated[bool, typer.Option(help="Create demo markets and run bots that keep them trading.")] = False,
    open_access: OpenAccess = False,
    database_url: Annotated[
        str | None, typer.Option(envvar="DATABASE_URL", help="Use this database (postgresql://…) instead of SQLite.")
    ] = None,
) -> None:
    """Run the exchange on a local Valkey Cluster: the nodes, two engine candidates per shard, the
    API over every shard, and the consumers of each shard, as `matchbox up` runs one of each.

    With replicas, orders are acknowledged once a replica holds them (replicated durability): a
    master's failover loses none. Ctrl-C or SIGTERM stops everything in order and exits 0;
    running it again resumes the same cluster from its folder.
    """
    from matchbox.up import ClusterLayout

    _up(
        data_dir=data_dir,
        host=host,
        port=port,
        valkey_port=valkey_port,
        redis_url=None,
        database_url=database_url,
        demo=demo,
        open_access=open_access,
        cluster=ClusterLayout(masters=masters, replicas=replicas, shards=shards),
    )


@cluster_app.command("serve")
def cluster_serve(
    data_dir: Annotated[Path, typer.Option(help="The nodes' folders (kept: the cluster starts again from them).")],
    base_port: Annotated[int, typer.Option(help="The first node's port (2 x nodes ports are taken).")],
    shards: Shards = 3,
    masters: Masters = 3,
    replicas: Replicas = 1,
) -> None:
    """Run a local Valkey Cluster in the foreground (for `cluster up`, or by hand): nodes that die
    are started again; the shards are placed on the masters. Writes `ready` in its folder once up."""
    from matchbox.bus.cluster import PlacementError
    from matchbox.bus.server import EmbeddedCluster, ServerError

    stop = _stop_on_signals()
    cluster = EmbeddedCluster(
        data_dir,
        masters=masters,
        replicas=replicas,
        shards=shards,
        base_port=base_port,
        node_timeout_ms=2000,
        min_replicas_to_write=1 if replicas else 0,  # a master cut off from its replicas takes no orders
    )
    try:
        cluster.start()
    except (ServerError, PlacementError) as exc:
        typer.echo(f"error: {exc}", err=True)
        cluster.stop()
        raise typer.Exit(1) from None
    (data_dir / "ready").write_text(cluster.url + "\n")
    typer.echo(f"valkey cluster on {cluster.url}, {shards} shards placed; Ctrl-C stops it")
    try:
        while not stop.wait(0.5):
            for node in cluster.revive():
                typer.echo(f"node on port {node.port} exited; started again", err=True)
    finally:
        (data_dir / "ready").unlink(missing_ok=True)
        cluster.stop()


@cluster_app.command("place")
def cluster_place(
    shards: Shards = 3,
    redis_url: Annotated[
        str | None, typer.Option(envvar="REDIS_URL", help="Any node of the cluster (or several, joined by commas).")
    ] = None,
) -> None:
    """Place the shards on the cluster's masters (shard i on the i-th master, in turn), before use.

    A shard's slot is moved only while it holds no key; placing again changes nothing."""
    from matchbox.bus.cluster import PlacementError, place_shards

    try:
        placed = place_shards(_required_url(redis_url), shards)
    except PlacementError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    for shard, master in placed.items():
        typer.echo(f"shard {shard}: {master}")


@app.command()
def demo(
    url: Annotated[str, typer.Option(help="The API to trade on.")] = "http://127.0.0.1:8080",
    admin_token: Annotated[
        str | None, typer.Option(envvar="MATCHBOX_ADMIN_TOKEN", help="To create the demo markets.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the bots' randomness.")] = 1,
) -> None:
    """Create demo markets (binary and odds) and run a market maker and a taker on each until stopped."""
    from matchbox.demo import run
    from matchbox.logs import configure_from
    from matchbox.settings import Settings

    settings = Settings()
    configure_from(settings)
    run(url.rstrip("/"), admin_token, seed)


@app.command()
def engine(
    redis_url: JournalRedis = None,
    name: Annotated[str, typer.Option(help="This candidate's name in logs and GET /engine (default host:pid).")] = "",
    lock_ttl_ms: Annotated[
        int | None, typer.Option(help="Leader lock TTL in ms (default: MATCHBOX_LOCK_TTL_MS, else 3000).")
    ] = None,
    watermark: Annotated[
        Path | None, typer.Option(help="A local file recording the highest committed state (rollback alarm).")
    ] = None,
    shard: ShardOption = None,
) -> None:
    """Run an engine leader candidate of one shard: it waits for the shard's lock, then matches its journal.

    Run several for failover: one leads, the others take over within about one lock TTL.
    Exits 0 on SIGINT/SIGTERM (after committing the batch in hand), 3 if Redis went back in time.
    """
    from matchbox.bus.cluster import connect_bus
    from matchbox.bus.outage import wait_out
    from matchbox.consumers.process import sql_witnesses
    from matchbox.leader.recovery import RollbackDetected
    from matchbox.leader.runner import EngineLeader, LeaderConfig
    from matchbox.logs import configure_from
    from matchbox.metrics import StatsCollector
    from matchbox.metrics import serve as watch
    from matchbox.settings import Settings

    settings = Settings(**_shard_override(shard))  # type: ignore[arg-type]
    configure_from(settings)
    url = _required_url(redis_url or settings.redis_url)
    config = LeaderConfig(
        lock_ttl_ms=lock_ttl_ms or settings.lock_ttl_ms,
        batch=settings.batch,
        snapshot_every=settings.snapshot_every,
        snapshot_seconds=settings.snapshot_seconds,
        snapshot_on_stop=settings.snapshot_on_stop,
        snapshots_kept=settings.snapshots_kept,
        trim_input=settings.trim_input,
        name=name,
        watermark=watermark,
        witnesses=sql_witnesses(settings),
        durability=settings.durability,
    )
    import gc

    gc.set_threshold(*GC_THRESHOLDS)
    stop = _stop_on_signals()
    # a cluster's client reads its slot map at once: one that does not answer yet is waited for
    bus = wait_out(f"Redis at {url}", lambda: connect_bus(url, settings.shard, cluster=settings.cluster), stop)
    if bus is None:
        return
    leader = EngineLeader(bus, config, stop)
    watch(
        settings.metrics_port,
        settings.metrics_host,
        StatsCollector(
            "engine",
            lambda: leader.stats,
            {"shard": str(settings.shard), "name": config.name or "engine"},
            gauges=frozenset({"recovery_seconds"}),
            extra=lambda: {"epoch": leader.epoch, "leading": float(leader.lease.held)},
        ),
    )
    try:
        leader.run()
    except RollbackDetected as exc:
        typer.echo(f"ALARM: {exc}", err=True)
        raise typer.Exit(3) from None


@app.command()
def api(
    redis_url: JournalRedis = None,
    host: Annotated[str | None, typer.Option(help="Interface to listen on (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: PORT, else 8080).")] = None,
    open_access: OpenAccess = False,
    shards: Annotated[
        int | None, typer.Option(min=1, help="How many shards the exchange has (default: MATCHBOX_SHARDS, else 1).")
    ] = None,
) -> None:
    """Serve the HTTP and WebSocket API over every shard. Run as many as you like over one Redis."""
    import uvicorn

    from matchbox.api.app import create_app
    from matchbox.api.ws import MAX_FRAME_BYTES
    from matchbox.bus.server import port_in_use
    from matchbox.logs import configure_from
    from matchbox.settings import Settings

    overrides: dict[str, object] = {"redis_url": redis_url} if redis_url else {}
    if open_access:
        overrides["open_access"] = True
    if shards is not None:
        overrides["shards"] = shards
    settings = Settings(**overrides)  # type: ignore[arg-type]
    _required_url(settings.redis_url)
    configure_from(settings)
    bind_port = port or settings.port
    if port_in_use(bind_port):
        typer.echo(f"error: port {bind_port} is already in use: pick another with --port or PORT", err=True)
        raise typer.Exit(2)
    import gc

    gc.set_threshold(*GC_THRESHOLDS)
    uvicorn.run(
        create_app(settings),
        host=host or settings.host,
        port=bind_port,
        log_config=None,
        access_log=False,
        ws_ping_interval=20,
        ws_ping_timeout=20,
        ws_max_size=MAX_FRAME_BYTES,  # a bigger WebSocket frame is refused as it arrives (1009)
    )


@app.command()
def alarm(
    redis_url: JournalRedis = None,
    clear: Annotated[
        bool, typer.Option("--clear", help="Lift the halt: only once Redis holds the newest data again.")
    ] = False,
    shard: ShardOption = None,
) -> None:
    """Show the rollback alarm: why the exchange halted (Redis held less than a witness saw).

    Exits 0 when no alarm is set, 1 when one is. With --clear the alarm is lifted: do that only
    after restoring the newest Redis data (or after clearing Redis, the watermark files and the
    consumers' database to start a new history on purpose); restart the engine candidates after.
    """
    from matchbox.bus.cluster import connect_bus
    from matchbox.bus.rollback import clear_alarm, read_alarm
    from matchbox.settings import Settings

    settings = Settings(**_shard_override(shard))  # type: ignore[arg-type]
    bus = connect_bus(_required_url(redis_url or settings.redis_url), settings.shard, cluster=settings.cluster)
    try:
        reason = read_alarm(bus)
        if reason is None:
            typer.echo("no rollback alarm: the exchange is not halted")
            return
        typer.echo(f"ALARM: {reason}")
        if not clear:
            raise typer.Exit(1)
        clear_alarm(bus)
        typer.echo("cleared: restart the engine candidates (matchbox up restarts its own)")
    finally:
        bus.close()


@app.command()
def consume(
    sink: Annotated[
        str,
        typer.Argument(
            help="persistence (markets, orders, trades), analytics (candles, stats) or transfers (the relay "
            "of transfers between shards)."
        ),
    ],
    redis_url: StreamRedis = None,
    database_url: ConsumerDatabase = None,
    data_dir: SqliteFolder = None,
    group: Annotated[str | None, typer.Option(help="The consumer group (default: the sink's name).")] = None,
    name: Annotated[str, typer.Option(help="This consumer's name in the group (default host:pid).")] = "",
    burst: Annotated[bool, typer.Option(help="Drain what is there, then exit.")] = False,
    shard: ShardOption = None,
) -> None:
    """Feed a SQL projection from one shard's output stream, exactly once per event (one per shard).

    Run several with one group to share the work, or different groups to each see everything.
    SIGINT/SIGTERM: the batch in hand is committed and acknowledged, then it exits 0. Exits 3 if
    the group stored more than Redis holds (Redis went back in time: the rollback alarm).
    """
    from matchbox.bus.commit import RollbackAlarm
    from matchbox.bus.outage import REDIS_DOWN
    from matchbox.consumers.process import run_consumer
    from matchbox.logs import configure_from

    settings = _consumer_settings(redis_url, database_url, data_dir, shard)
    configure_from(settings)
    kind = _sink_kind(sink)
    try:
        run_consumer(settings, kind, group or kind.value, name, burst, _stop_on_signals())
    except RollbackAlarm as exc:
        typer.echo(f"ALARM: {exc}", err=True)
        raise typer.Exit(3) from None
    except REDIS_DOWN as exc:  # --burst only: the long-running consumer waits for Redis
        typer.echo(f"error: Redis cannot be reached ({exc}): start it, or check REDIS_URL", err=True)
        raise typer.Exit(1) from None


@app.command()
def replay(
    group: Annotated[str, typer.Option(help="The group to (re)create at 0, e.g. persistence or analytics.")],
    sink: Annotated[
        str | None, typer.Option(help="persistence or analytics (default: the group's name, if it is one).")
    ] = None,
    redis_url: StreamRedis = None,
    database_url: ConsumerDatabase = None,
    data_dir: SqliteFolder = None,
    shard: ShardOption = None,
    keep_group: Annotated[
        bool, typer.Option("--keep-group", help="Leave the group in Redis afterwards (default: removed).")
    ] = False,
) -> None:
    """Rebuild a sink's tables from the whole output stream: the group starts again at 0.

    Applying an event twice changes nothing, so replaying into a database that already holds the
    tables converges to the same rows; point --database-url at an empty database for a clean copy.
    The group is removed when the replay is done, so that it never holds back trimming; a
    consumer of that group started later makes it again where its tables stand.
    """
    from rich.console import Console

    from matchbox.consumers.process import replay as run_replay
    from matchbox.logs import configure_from

    settings = _consumer_settings(redis_url, database_url, data_dir, shard)
    configure_from(settings)
    kind = _sink_kind(sink or group)
    console = Console(stderr=True)
    started = time.perf_counter()
    applied = run_replay(settings, kind, group, console, keep_group)
    console.print(
        f"replayed {applied:,} events into {kind.value} (group {group}) in {time.perf_counter() - started:.1f} s"
    )


def _shard_override(shard: int | None) -> dict[str, object]:
    return {} if shard is None else {"shard": shard}


def _consumer_settings(
    redis_url: str | None, database_url: str | None, data_dir: Path | None, shard: int | None = None
) -> Settings:
    from matchbox.settings import Settings

    overrides: dict[str, object] = _shard_override(shard)
    if redis_url:
        overrides["redis_url"] = redis_url
    if database_url:
        overrides["database_url"] = database_url
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    settings = Settings(**overrides)  # type: ignore[arg-type]
    _required_url(settings.redis_url)
    return settings


def _sink_kind(name: str) -> SinkKind:
    from matchbox.consumers.process import SinkKind

    try:
        return SinkKind(name)
    except ValueError:
        raise typer.BadParameter(f"{name!r}: give persistence, analytics or transfers", param_hint="sink") from None


@app.command()
def valkey(
    data_dir: Annotated[Path, typer.Option(help="Where the server keeps its AOF.")] = Path("data/valkey"),
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 6390,
    fsync: Annotated[str, typer.Option(help="AOF fsync policy: always or everysec.")] = "always",
) -> None:
    """Run the embedded Valkey server in the foreground (for running the parts by hand)."""
    from matchbox.bus.server import EmbeddedValkey, ServerError

    if fsync not in ("always", "everysec"):
        raise typer.BadParameter("always or everysec", param_hint="--fsync")
    stop = _stop_on_signals()
    try:
        server = EmbeddedValkey(data_dir, port=port, fsync="always" if fsync == "always" else "everysec").start()
    except ServerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"valkey on {server.url}, data in {data_dir}; Ctrl-C stops it")
    try:
        while not stop.wait(0.5):
            if server.process is None or server.process.poll() is not None:
                typer.echo("valkey exited", err=True)
                raise typer.Exit(1)
    finally:
        server.stop()


@app.command()
def loadgen(
    url: Annotated[
        list[str] | None, typer.Option("--url", help="An API instance; repeat for several (round robin).")
    ] = None,
    orders: Annotated[int | None, typer.Option(min=1, help="Orders to send (default 10,000 without --seconds).")] = (
        None
    ),
    seconds: Annotated[float | None, typer.Option(min=0.1, help="Send for this long (with --orders: first wins).")] = (
        None
    ),
    rate: Annotated[
        float, typer.Option(min=0, help="Offered orders/s, open loop (latency counted from each due time); 0 = max.")
    ] = 0,
    concurrency: Annotated[int, typer.Option(min=1, help="Concurrent workers (and keep-alive connections).")] = 64,
    market: Annotated[str, typer.Option(help="The market of the flow.")] = "default",
    create_market: Annotated[
        str | None, typer.Option(help="First create this binary market (admin) and send the flow there.")
    ] = None,
    admin_token: Annotated[
        str | None,
        typer.Option(
            envvar="MATCHBOX_ADMIN_TOKEN",
            help="The admin token: for --create-market, and to make the flow's accounts when the API wants keys.",
        ),
    ] = None,
    crossing: Annotated[float, typer.Option(min=0, max=1, help="Share of orders that cross the spread.")] = 0.4,
    mid: Annotated[int, typer.Option(min=10, max=90, help="Where the flow's mid starts (it drifts in 10..90).")] = 50,
    seed: Annotated[int, typer.Option(help="Seed of the flow.")] = 7,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    json_output: JsonOutput = False,
) -> None:
    """Send an order flow to API instances over HTTP; print throughput and latency (POST /orders, order-to-fill)."""
    from matchbox.loadgen import Config, run

    config = Config(
        urls=tuple(u.rstrip("/") for u in url or ["http://127.0.0.1:8080"]),
        orders=orders if orders is not None or seconds is not None else 10_000,
        seconds=seconds,
        rate=rate,
        concurrency=concurrency,
        market=create_market or market,
        crossing=crossing,
        mid=mid,
        seed=seed,
        create_market=create_market,
        admin_token=admin_token,
        progress=progress,
    )
    raise typer.Exit(run(config, json_output=json_output))


@app.command()
def chaos(
    seconds: Annotated[float, typer.Option(min=10, help="How long the traffic, faults and hostile clients run.")] = 60,
    seed: Annotated[int, typer.Option(help="Seed of every decision: which fault when, which order next.")] = 1,
    json_output: JsonOutput = False,
    database_url: Annotated[
        str | None,
        typer.Option(help="The consumers' database (postgresql://… gets a schema of its own); unset: SQLite."),
    ] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the data folder (AOF, SQLite, logs) afterwards.")] = False,
    cluster: Annotated[
        bool,
        typer.Option(
            "--cluster",
            help="Three shards on a local Valkey Cluster instead: leaders, replicas and masters faulted "
            "under orders and transfers (no APIs, no hostile clients).",
        ),
    ] = False,
) -> None:
    """Run a whole exchange under seeded faults and hostile clients, then check its promises.

    Starts Valkey (AOF, fsync always), two engine candidates, two API instances and both
    consumers on this machine; drives keyed traffic, WebSocket subscribers that resume, and
    hostile clients; kills and pauses the leader and the standby, kills an API instance and a
    consumer, restarts Valkey. Then it waits for quiet and checks every acknowledged order, the
    trades in the database, money, the instances and the feeds. Exits 1 on any violation.
    """
    if cluster:
        from matchbox.chaos.shards import run as run_cluster

        raise typer.Exit(run_cluster(seconds=seconds, seed=seed, json_output=json_output, keep=keep))
    from matchbox.chaos.run import Config, run

    raise typer.Exit(
        run(Config(seconds=seconds, seed=seed, json_output=json_output, database_url=database_url, keep=keep))
    )


@bench_app.command("engine")
def bench_engine(
    ops: Annotated[int, typer.Option(min=1_000, help="Commands in the generated flow.")] = 200_000,
    seed: Annotated[int, typer.Option(help="Seed of the generated flow (same seed, same flow).")] = 7,
    repeat: Annotated[int, typer.Option(min=1, help="Timed runs of each side; the best is reported.")] = 3,
    json_output: JsonOutput = False,
) -> None:
    """Run a seeded flow through the engine and a bare baseline book; print ops/s, ratio, latency, memory."""
    from matchbox.bench.engine import run

    raise typer.Exit(run(ops=ops, seed=seed, repeat=repeat, json_output=json_output))


@bench_app.command("pipeline")
def bench_pipeline(
    orders: Annotated[int, typer.Option(min=1_000, help="Orders preloaded in the journal.")] = 200_000,
    seed: Annotated[int, typer.Option(help="Seed of the flow (the engine benchmark's).")] = 7,
    lpop_sample: Annotated[int, typer.Option(min=100, help="Orders through the original design's LPOP loop.")] = 20_000,
    submits: Annotated[int, typer.Option(min=10, help="Single submissions timed per durability mode.")] = 2_000,
    json_output: JsonOutput = False,
) -> None:
    """Time one engine leader draining a preloaded journal on an embedded Valkey, against raw XADD."""
    from matchbox.bench.pipeline import run

    raise typer.Exit(run(orders=orders, seed=seed, lpop_sample=lpop_sample, submits=submits, json_output=json_output))


@bench_app.command("shards")
def bench_shards(
    orders: Annotated[int, typer.Option(min=3_000, help="Journal entries in all (three markets' flows).")] = 150_000,
    seed: Annotated[int, typer.Option(help="Seed of the flows (the engine benchmark's).")] = 7,
    json_output: JsonOutput = False,
) -> None:
    """The same flow matched by 1 shard and by 3, in always and replicated durability, on a local cluster."""
    from matchbox.bench.shards import run

    raise typer.Exit(run(orders=orders, seed=seed, json_output=json_output))


@bench_app.command("failover")
def bench_failover(
    kills: Annotated[int, typer.Option(min=1, help="Leaders to SIGKILL, one after another.")] = 5,
    lock_ttl_ms: Annotated[int, typer.Option(min=200, help="The candidates' lock TTL.")] = 3000,
    resting: Annotated[int, typer.Option(min=0, help="Orders resting in the book before the first kill.")] = 0,
    json_output: JsonOutput = False,
) -> None:
    """Kill the engine leader repeatedly under a trickle of orders; time each takeover against the lock TTL."""
    from matchbox.bench.failover import run

    raise typer.Exit(run(kills=kills, lock_ttl_ms=lock_ttl_ms, resting=resting, json_output=json_output))


@bench_app.command("recovery")
def bench_recovery(
    orders: Annotated[int, typer.Option(min=1, help="Resting orders in the book.")] = 1_000_000,
    tail: Annotated[int, typer.Option(min=0, help="Journal entries replayed after the restore.")] = 50_000,
    repeat: Annotated[int, typer.Option(min=1, help="Timed passes of rebuild and restore (best kept).")] = 2,
    json_output: JsonOutput = False,
) -> None:
    """Snapshot, restore and replay a large book, against rebuilding it from its commands."""
    from matchbox.bench.recovery import run

    code = run(orders=orders, tail=tail, repeat=repeat, gc_thresholds=GC_THRESHOLDS, json_output=json_output)
    raise typer.Exit(code)


@bench_app.command("consumers")
def bench_consumers(
    events: Annotated[int, typer.Option(min=1_000, help="Events preloaded in the output stream.")] = 200_000,
    seed: Annotated[int, typer.Option(help="Seed of the flow (the engine benchmark's).")] = 7,
    batch: Annotated[int, typer.Option(min=1, help="Events per consumer transaction.")] = 1000,
    postgres_url: Annotated[
        str | None, typer.Option(envvar="DATABASE_URL", help="A PostgreSQL to measure too (a scratch schema).")
    ] = "postgresql://127.0.0.1:5432/test",
    json_output: JsonOutput = False,
) -> None:
    """Time the persistence consumer draining a preloaded output stream into SQLite and PostgreSQL."""
    from matchbox.bench.consumers import run

    raise typer.Exit(run(events=events, seed=seed, batch=batch, postgres_url=postgres_url, json_output=json_output))


@bench_app.command("latency")
def bench_latency(
    seconds: Annotated[float, typer.Option(min=0.5, help="How long each loop runs, against each.")] = 10.0,
    rate: Annotated[float, typer.Option(min=1.0, help="The open loop's offered orders a second.")] = 1000.0,
    concurrency: Annotated[int, typer.Option(min=1, help="The closed loop's clients (and the open loop's most).")] = 32,
    json_output: JsonOutput = False,
) -> None:
    """Time POST /v1/orders through the whole stack (Valkey with AOF always, an engine, an API),
    beside a baseline gateway (the same body and server stack, the engine in process, a write and
    an fsync per order), servers pinned to one core and the load to the other; Matchbox's figures
    as ratios to the baseline's, and where an order's time goes, stage by stage."""
    from matchbox.bench.latency import run

    raise typer.Exit(run(seconds=seconds, rate=rate, concurrency=concurrency, json_output=json_output))


def main() -> None:
    app()


# --------------------------------------------------------------------------- accounts

accounts_app = typer.Typer(help="Accounts and API keys (kept in the exchange's Redis; keys are shown once).")
app.add_typer(accounts_app, name="accounts")


def _required_url(url: str | None) -> str:
    """The exchange's Redis URL, or exit 2 saying how to give it."""
    if not url:
        typer.echo("error: set REDIS_URL (or --redis-url) to the Redis/Valkey of the exchange", err=True)
        raise typer.Exit(2)
    return url


UpFolder = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar="MATCHBOX_DATA_DIR",
        help="Without REDIS_URL: the data folder of a running `matchbox up`, whose exchange this reaches.",
    ),
]


def _exchange_settings(redis_url: str | None, data_dir: Path) -> Settings:
    """The settings that reach the exchange: REDIS_URL (or --redis-url) and the environment, or
    else those of the ``matchbox up`` running on ``data_dir``; exit 2 saying how, if neither."""
    from matchbox.bus.durability import Durability
    from matchbox.settings import Settings
    from matchbox.up import running_state

    if redis_url or Settings().redis_url:
        return Settings(redis_url=redis_url) if redis_url else Settings()
    state = running_state(data_dir)
    if state is None:
        typer.echo(
            f"error: no REDIS_URL, and no `matchbox up` running on {data_dir}: set REDIS_URL (or --redis-url) "
            "to the exchange's Redis/Valkey, or --data-dir to the folder of a running `matchbox up`",
            err=True,
        )
        raise typer.Exit(2)
    found: dict[str, str] = state["settings"]
    return Settings(
        redis_url=found["REDIS_URL"],
        cluster=found.get("MATCHBOX_CLUSTER", "0") == "1",
        durability=Durability(found.get("MATCHBOX_DURABILITY") or Settings().durability),
    )


def _account_store(redis_url: str | None, data_dir: Path) -> AccountStore:
    from matchbox.bus.accounts import AccountStore
    from matchbox.bus.cluster import connect_bus

    settings = _exchange_settings(redis_url, data_dir)
    assert settings.redis_url is not None
    return AccountStore(connect_bus(settings.redis_url, cluster=settings.cluster).routed)


@accounts_app.command("create")
def accounts_create(
    account: Annotated[str | None, typer.Argument(help="The account's name (default: a fresh acct-…).")] = None,
    name: Annotated[str, typer.Option(help="A display name.")] = "",
    deposit: Annotated[int, typer.Option(min=0, help="Cents to deposit at once (journaled like any deposit).")] = 0,
    redis_url: JournalRedis = None,
    data_dir: UpFolder = Path("data"),
) -> None:
    """Create an account and print its first API key: the only time it is shown."""
    import redis

    from matchbox.bus.accounts import AccountError

    store = _account_store(redis_url, data_dir)
    try:
        issued = store.create(account, name)
    except AccountError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except redis.RedisError as exc:
        typer.echo(f"error: the exchange's Redis does not answer: {exc}", err=True)
        raise typer.Exit(1) from None
    if deposit:
        _journal_deposit(redis_url, data_dir, issued.account, deposit)
    typer.echo(f"account  {issued.account}")
    typer.echo(f"key id   {issued.key_id}")
    typer.echo(f"API key  {issued.api_key}")
    typer.echo("Keep the key: it is not stored, only its hash. Send it as Authorization: Bearer <key>.", err=True)


@accounts_app.command("key")
def accounts_key(
    account: Annotated[str, typer.Argument(help="The account.")],
    redis_url: JournalRedis = None,
    data_dir: UpFolder = Path("data"),
) -> None:
    """Issue another API key for an account (a lost key cannot be shown again)."""
    from matchbox.bus.accounts import AccountError

    try:
        issued = _account_store(redis_url, data_dir).issue_key(account)
    except AccountError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"key id   {issued.key_id}")
    typer.echo(f"API key  {issued.api_key}")


@accounts_app.command("revoke")
def accounts_revoke(
    account: Annotated[str, typer.Argument(help="The account.")],
    key_id: Annotated[str, typer.Argument(help="The key's id (see `matchbox accounts list`).")],
    redis_url: JournalRedis = None,
    data_dir: UpFolder = Path("data"),
) -> None:
    """Revoke a key: every API instance refuses it within MATCHBOX_KEY_CACHE_SECONDS."""
    if not _account_store(redis_url, data_dir).revoke(account, key_id):
        typer.echo(f"error: account {account!r} has no key {key_id!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")


@accounts_app.command("list")
def accounts_list(
    redis_url: JournalRedis = None, data_dir: UpFolder = Path("data"), json_output: JsonOutput = False
) -> None:
    """Every account, when it was made, and the ids of its keys."""
    import dataclasses

    import msgspec
    from rich.console import Console
    from rich.table import Table

    found = _account_store(redis_url, data_dir).list()
    if json_output:
        typer.echo(msgspec.json.encode([dataclasses.asdict(a) for a in found]).decode())
        return
    table = Table("account", "name", "created", "keys")
    for info in found:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(info.created / 1000))
        table.add_row(info.account, info.name, created, ", ".join(info.key_ids))
    Console().print(table)


@accounts_app.command("deposit")
def accounts_deposit(
    account: Annotated[str, typer.Argument(help="The account.")],
    amount: Annotated[int, typer.Argument(min=1, help="Cents to add.")],
    redis_url: JournalRedis = None,
    data_dir: UpFolder = Path("data"),
) -> None:
    """Add cents to an account (journaled like any deposit; to MATCHBOX_SHARD's cash, the first shard's by default)."""
    _journal_deposit(redis_url, data_dir, account, amount)


def _journal_deposit(redis_url: str | None, data_dir: Path, account: str, amount: int) -> None:
    from matchbox.bus.cluster import connect_bus
    from matchbox.bus.journal import Journal
    from matchbox.engine.types import Deposit

    settings = _exchange_settings(redis_url, data_dir)  # to MATCHBOX_SHARD's cash (the first shard's unless set)
    assert settings.redis_url is not None
    bus = connect_bus(settings.redis_url, settings.shard, cluster=settings.cluster)
    try:
        submission = Journal(bus, settings.durability).submit(Deposit(seq=0, ts=0, account=account, amount=amount))
    finally:
        bus.close()
    typer.echo(f"deposit  {amount} cents (journal entry {submission.entry_id})")
