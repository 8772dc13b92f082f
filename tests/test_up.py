"""``matchbox up`` as a user runs it: everything starts, the account ``you`` is there with its key
and $1,000, a dead child comes back, Ctrl-C stops everything in order, and a second run resumes
with the same markets, book, trades, candles and balance. The demo trades on collateral markets;
``--open`` says loudly that there is no authentication."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import redis

from conftest import wait_until
from matchbox.bus.cluster import ClusterBus
from matchbox.bus.keys import Keys
from matchbox.bus.server import EmbeddedValkey, free_port, free_ports, port_in_use
from matchbox.demo import MARKETS
from matchbox.engine.ids import shard_of
from stack import Up, up

pytestmark = pytest.mark.e2e  # starts `matchbox up` as processes

STOP_ORDER = ["api", "engine", "persistence", "analytics", "valkey"]


def metric(text: str, name: str) -> float:
    """A sample's value in Prometheus's text format, by its name and labels (the first match)."""
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {" or name.endswith("}")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} in the metrics")


def accounts_cli(exchange: Up, *args: str) -> subprocess.CompletedProcess[str]:
    """``matchbox accounts …`` as a user runs it beside ``matchbox up``: no REDIS_URL, only the data folder."""
    env = {key: value for key, value in os.environ.items() if key not in ("REDIS_URL", "MATCHBOX_REDIS_URL")}
    argv = [sys.executable, "-m", "matchbox", "accounts", *args, "--data-dir", str(exchange.data_dir)]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)


def stopped_children(output: str) -> list[str]:
    return [line.split("child=")[1].split()[0] for line in output.splitlines() if " stopped child=" in line]


def test_up_runs_the_exchange_restarts_a_dead_child_stops_in_order_and_resumes(tmp_path: Path) -> None:
    with up(tmp_path) as exchange:
        exchange.start()
        # the account "you": its key in a file only its owner reads, in the banner's link, and $1,000
        key = exchange.your_key()
        assert stat.S_IMODE((exchange.data_dir / "you.key").stat().st_mode) == 0o600
        assert f"/#key={key}" in exchange.output()
        wait_until(
            lambda: exchange.balance(key) == {"account": "you", "total": 100_000, "reserved": 0, "free": 100_000},
            message="you's $1,000",
        )
        assert exchange.http.get("/v1/account").status_code == 401  # keys mode: no key, no account
        # the README's walk-through: `matchbox accounts` finds this exchange by its data folder
        made = accounts_cli(exchange, "create", "carol", "--deposit", "2500")
        assert made.returncode == 0, made.stderr
        carol = next(line.split()[-1] for line in made.stdout.splitlines() if line.startswith("API key"))
        wait_until(lambda: (exchange.balance(carol) or {}).get("total") == 2500, message="carol's deposit")
        assert accounts_cli(exchange, "deposit", "carol", "500").returncode == 0
        wait_until(lambda: (exchange.balance(carol) or {}).get("total") == 3000, message="carol's second deposit")
        assert "carol" in accounts_cli(exchange, "list").stdout
        # every process exposes Prometheus metrics, its process's included; up.json says where
        state = json.loads((exchange.data_dir / "up.json").read_text())
        assert set(state["metrics"]) == {"api", "engine", "persistence", "analytics"}
        engine = httpx.get(state["metrics"]["engine"], timeout=5).text
        assert "process_cpu_seconds_total" in engine
        assert metric(engine, 'matchbox_engine_leading{name="engine",shard="0"}') == 1.0
        assert metric(engine, 'matchbox_engine_commits_total{name="engine",shard="0"}') > 0
        wait_until(
            lambda: (
                metric(httpx.get(state["metrics"]["persistence"], timeout=5).text, "matchbox_consumer_applied_total")
                > 0
            ),
            message="the persistence consumer's applied count",
        )
        assert "process_resident_memory_bytes" in exchange.http.get("/metrics").text
        # each logs into its own file (rotated by size), its raw output beside it
        logs = exchange.data_dir / "logs"
        assert "leader" in (logs / "engine.log").read_text()
        assert (logs / "engine.out").exists()

        created = exchange.http.post(
            "/v1/markets", json={"market_id": "rain", "scheme": "binary"}, headers=exchange.admin()
        )
        assert created.status_code == 201, created.text
        ann, bob = exchange.key_of("ann"), exchange.key_of("bob")
        exchange.place(ann, side="sell", price=55, qty=5)
        assert exchange.place(bob, side="buy", price=55, qty=2)["status"] == "filled"
        wait_until(
            lambda: exchange.http.get("/v1/markets/rain/candles", params={"interval": "1m"}).json() != [],
            timeout=30,
            message="the analytics consumer's first candle",
        )

        # the engine dies: up starts it again and the exchange trades on
        client = redis.Redis(port=exchange.valkey_port)
        engine_pid = int(client.hget(Keys().leader_info, "pid") or 0)
        os.kill(engine_pid, signal.SIGKILL)
        wait_until(lambda: "exited; restarting after backoff child=engine" in exchange.output(), message="restart")
        wait_until(
            lambda: int(client.hget(Keys().leader_info, "pid") or 0) not in (0, engine_pid),
            timeout=30,
            message="the new engine leading (once the dead one's lock has lapsed)",
        )
        assert exchange.place(bob, side="buy", price=55, qty=1)["status"] == "filled"
        client.close()

        assert exchange.stop(signal.SIGINT) == 0
        assert stopped_children(exchange.output()) == STOP_ORDER
        stopped = accounts_cli(exchange, "list")  # nothing runs there now: it says how to reach an exchange
        assert (stopped.returncode, "no `matchbox up` running" in stopped.stderr) == (2, True)

        exchange.start()  # the same data folder: everything is where it was
        # the key still works, so it is kept; and nothing is deposited again
        wait_until(lambda: exchange.output().count(f"/#key={key}") == 2, timeout=30, message="the second banner")
        assert (exchange.data_dir / "you.key").read_text().strip() == key
        assert exchange.output().count("$1,000 deposited") == 1
        wait_until(lambda: (exchange.balance(key) or {}).get("total") == 100_000, message="you's balance")
        book = exchange.http.get("/v1/markets/rain/book").json()
        assert [(level["price"], level["qty"]) for level in book["asks"]] == [(55, 2)]
        trades = exchange.http.get("/v1/markets/rain/trades").json()["items"]
        assert [(t["price"], t["qty"]) for t in trades] == [(55, 1), (55, 2)]
        candles = "/v1/markets/rain/candles?interval=1m"
        wait_until(  # the analytics consumer resumes from its tracking row: the third trade, once
            lambda: sum(c["volume"] for c in exchange.http.get(candles).json()["items"]) == 3,
            timeout=30,
            message="candles holding all three trades' volume",
        )
        assert exchange.stop(signal.SIGTERM) == 0


def test_demo_markets_keep_trading(tmp_path: Path) -> None:
    with up(tmp_path, "--demo") as exchange:
        exchange.start()
        for market in MARKETS:  # a binary and an odds market, both with trades flowing

            def traded(market_id: str = market.market_id) -> bool:
                found = exchange.http.get(f"/v1/markets/{market_id}/trades").json()  # a 404 until the bots made it
                return len(found.get("items", [])) >= 3

            wait_until(traded, timeout=30, message=f"trades on {market.market_id}")
        markets = {m["market_id"]: m for m in exchange.http.get("/v1/markets").json()["items"]}
        assert {markets[m.market_id]["scheme"] for m in MARKETS} == {"binary", "odds"}
        assert all(markets[m.market_id]["collateral"] for m in MARKETS)  # every order needed money
        accounts = exchange.http.get("/v1/admin/accounts", headers=exchange.admin()).json()["items"]
        bots = {a["account"]: a["key_ids"] for a in accounts if a["account"].startswith("demo-")}
        assert set(bots) == {"demo-mm", *(f"demo-taker-{n}" for n in range(1, 6))}
        assert all(len(keys) == 1 for keys in bots.values())  # a key each
        assert exchange.stop(signal.SIGTERM) == 0
        assert stopped_children(exchange.output())[0] == "demo"


def test_open_mode_says_so_in_the_banner_and_on_every_answer(tmp_path: Path) -> None:
    with up(tmp_path, "--open") as exchange:
        exchange.start()
        wait_until(lambda: "OPEN MODE: no authentication" in exchange.output(), timeout=30, message="the banner")
        assert "Authentication is OFF" in exchange.output()
        health = exchange.http.get("/health")
        assert health.json()["auth"] == "open"
        assert health.headers["X-Matchbox-Auth"] == "open"
        answer = exchange.http.post(
            "/v1/orders", json={"market_id": "default", "side": "buy", "price": 5, "qty": 1, "account": "ann"}
        )
        assert answer.status_code == 201, answer.text  # no key: the order names its account
        assert answer.headers["X-Matchbox-Auth"] == "open"
        assert "Dashboard as you" not in exchange.output()
        assert not (exchange.data_dir / "you.key").exists()
        assert exchange.stop(signal.SIGTERM) == 0


def test_with_redis_url_only_the_matchbox_processes_start(tmp_path: Path, valkey_server: EmbeddedValkey) -> None:
    with up(tmp_path) as exchange:
        exchange.start(REDIS_URL=valkey_server.url)
        assert exchange.http.get("/v1/markets/default").status_code == 200  # made on that server
        assert redis.Redis.from_url(valkey_server.url).exists(Keys().events)
        assert exchange.stop(signal.SIGTERM) == 0
        assert stopped_children(exchange.output()) == ["api", "engine", "persistence", "analytics"]
        assert not (exchange.data_dir / "valkey").exists()


def test_children_stop_when_up_is_killed(tmp_path: Path) -> None:
    with up(tmp_path) as exchange:
        exchange.start()
        client = redis.Redis(port=exchange.valkey_port)
        engine_pid = int(client.hget(Keys().leader_info, "pid") or 0)
        client.close()
        assert exchange.process is not None
        exchange.process.kill()  # SIGKILL: up cannot stop anything itself
        exchange.process.wait(10)
        wait_until(lambda: not _alive(engine_pid), timeout=30, message="the engine to stop with its parent")
        wait_until(lambda: not port_in_use(exchange.valkey_port), timeout=30, message="Valkey to stop")
        wait_until(lambda: not port_in_use(exchange.port), timeout=30, message="the API to stop")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = [sys.executable, "-m", "matchbox", "up", "--data-dir", str(tmp_path), "--port", str(port)]
        result = subprocess.run(argv, capture_output=True, timeout=60, check=False)
    assert result.returncode == 2
    assert f"port {port} is already in use" in result.stderr.decode()
    assert b"Traceback" not in result.stderr


# --------------------------------------------------------------------------- matchbox cluster up


def test_cluster_up_trades_binary_and_odds_on_three_shards_and_resumes(tmp_path: Path) -> None:
    """``matchbox cluster up``: a local Valkey Cluster (3 masters, 3 replicas), two engine candidates
    per shard, the API over the three shards and the consumers of each: markets on shards 1 and 2
    trade, the account shows each shard's cash, the database holds every shard's trades, a
    SIGKILLed master's shard comes back through its replica, and a second run resumes."""
    exchange = Up(tmp_path / "data", free_port(), free_ports(12), tmp_path / "up.log", command=("cluster", "up"))
    try:
        exchange.start()
        key = exchange.your_key()
        assert "$1,000 deposited on each shard" in exchange.output()
        you = {"Authorization": f"Bearer {key}"}
        wait_until(lambda: (exchange.balance(key) or {}).get("total") == 300_000, message="you's $1,000 x 3")
        for market_id, scheme, shard in (("rain", "binary", 2), ("derby", "odds", 1)):
            body = {"market_id": market_id, "scheme": scheme, "shard": shard, "collateral": True}
            created = exchange.http.post("/v1/markets", json=body, headers=exchange.admin())
            assert (created.status_code, created.json()["shard"]) == (201, shard), created.text
        bob = exchange.key_of("bob")
        for shard in (1, 2):
            body = {"amount": 100_000, "shard": shard}
            assert (
                exchange.http.post("/v1/admin/accounts/bob/deposit", json=body, headers=exchange.admin()).status_code
                == 200
            )
        sell = exchange.place(you, side="sell", price=52, qty=10)
        fill = exchange.place(bob, side="buy", price=55, qty=4)["fills"][0]
        assert (shard_of(sell["order_id"]), shard_of(fill["trade_id"])) == (2, 2)
        back = exchange.place(you, market_id="derby", side="back", odds=2.5, stake=2000)
        laid = exchange.place(bob, market_id="derby", side="lay", odds=2.5, stake=500)
        assert (shard_of(back["order_id"]), laid["status"]) == (1, "filled")
        parts = {p["shard"]: p for p in (exchange.balance(key) or {})["shards"]}
        assert (parts[0]["total"], parts[1]["reserved"], parts[2]["reserved"]) == (100_000, 1_500, 6 * 48)
        wait_until(
            lambda: len(exchange.http.get("/v1/account/trades", headers=you).json()["items"]) == 2,
            timeout=30,
            message="the consumers of shards 1 and 2 storing your trades in the one database",
        )

        # cash moves from shard 0 to shard 2 through the relays, once
        moved = exchange.http.post(
            "/v1/account/transfers", json={"amount": 5_000, "from_shard": 0, "to_shard": 2}, headers=you
        )
        assert moved.status_code == 202, moved.text
        transfer = f"/v1/account/transfers/{moved.json()['transfer_id']}"
        wait_until(lambda: exchange.http.get(transfer, headers=you).json()["status"] == "done", message="paid in")
        parts = {p["shard"]: p for p in (exchange.balance(key) or {})["shards"]}
        # shard 2: the transfer in, less the 48 a contract the sell of 4 paid in
        assert (parts[0]["total"], parts[2]["total"]) == (95_000, 100_000 + 5_000 - 4 * 48)

        # shard 2's master is SIGKILLed: its replica takes over, the other shards trade on
        client = ClusterBus.connect(exchange_url(exchange), 2)
        port = client.client.connection_pool.connection_kwargs["port"]
        client.close()
        os.kill(
            int(subprocess.check_output(["pgrep", "-f", f"valkey-server 127.0.0.1:{port} "]).split()[0]), signal.SIGKILL
        )
        assert exchange.place(bob, market_id="derby", side="back", odds=3.0, stake=100)["status"] == "open"

        def shard_2_trades() -> bool:
            answer = exchange.http.post(
                "/v1/orders", json={"market_id": "rain", "side": "buy", "price": 52, "qty": 1}, headers=bob
            )
            return answer.status_code == 201

        wait_until(shard_2_trades, timeout=60, message="shard 2 trading again after its failover")
        assert exchange.stop(signal.SIGINT) == 0
        stopped = stopped_children(exchange.output())
        assert (stopped[0], stopped[-1]) == ("api", "valkey")
        assert [name for name in stopped if name.startswith("engine-")] == [
            f"engine-{s}{c}" for s in range(3) for c in "ab"
        ]

        exchange.start()  # the same cluster, from its folder
        markets = {m["market_id"]: m["shard"] for m in exchange.http.get("/v1/markets").json()["items"]}
        assert (markets["rain"], markets["derby"]) == (2, 1)
        asks = exchange.http.get("/v1/markets/rain/book").json()["asks"]
        assert [(level["price"], level["qty"]) for level in asks] == [(52, 5)]
        assert exchange.stop(signal.SIGTERM) == 0
    finally:
        exchange.close()


def exchange_url(exchange: Up) -> str:
    return f"redis://127.0.0.1:{exchange.valkey_port}"
