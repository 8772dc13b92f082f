"""Rollbacks: a Redis restored to older data never hands out an id twice.

Each test restores a real Valkey's AOF to an earlier copy, the way an operator restores a backup,
and checks that the exchange halts before the first new id, naming the witness that noticed:
the leader's memory, its watermark file, an API instance's tail, a consumer group's tracking row.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from conftest import running_leader, wait_until
from matchbox.api.app import create_app
from matchbox.bus.aio import AsyncBus
from matchbox.bus.codec import decode_event
from matchbox.bus.commit import Offset, RollbackAlarm, Uncertified, read_offset
from matchbox.bus.connection import Bus
from matchbox.bus.durability import Durability
from matchbox.bus.journal import Journal, Request
from matchbox.bus.rollback import Witness, clear_alarm, disagreements, raise_alarm, read_alarm
from matchbox.bus.server import EmbeddedValkey
from matchbox.cli import app
from matchbox.consumers.db import open_database
from matchbox.consumers.persistence import PersistenceSink
from matchbox.consumers.process import SinkKind, run_consumer, sql_witnesses
from matchbox.consumers.runner import ConsumerConfig, GroupConsumer
from matchbox.engine.types import IDS_PER_MS, CreateMarket, PlaceOrder, Side, TickScheme, TradeExecuted
from matchbox.leader.recovery import RollbackDetected, Watermark
from matchbox.leader.runner import EngineLeader
from matchbox.settings import Settings

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]  # restores a real Valkey's AOF, test after test


class Restorable:
    """A Valkey (AOF, fsync always) whose data can be copied now and restored later."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.server = EmbeddedValkey(root / "valkey", fsync="always").start()
        self.port = self.server.port

    @property
    def url(self) -> str:
        return self.server.url

    def backup(self) -> Path:
        copy = self.root / "backup"
        shutil.copytree(self.server.data_dir, copy)
        return copy

    def restore(self, copy: Path) -> None:
        """The power cord, then the backup in place of the data, then the same port again."""
        self.server.kill()
        shutil.rmtree(self.server.data_dir)
        shutil.copytree(copy, self.server.data_dir)
        self.server = EmbeddedValkey(self.server.data_dir, port=self.port, fsync="always").start()

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[Restorable]:
    restorable = Restorable(tmp_path)
    yield restorable
    restorable.stop()


def market() -> CreateMarket:
    return CreateMarket(seq=0, ts=0, market_id="m", scheme=TickScheme.BINARY)


def order(side: Side, account: str, price: int = 50) -> PlaceOrder:
    return PlaceOrder(seq=0, ts=0, market_id="m", order_id=0, account=account, side=side, price=price, qty=1)


def trade(journal: Journal) -> list[int]:
    """A crossing pair; their order ids."""
    return [journal.submit(order(Side.SELL, "s")).order_id, journal.submit(order(Side.BUY, "b")).order_id]


def committed(bus: Bus, inputs: int) -> bool:
    offset = read_offset(bus)
    return offset is not None and offset.inputs >= inputs


def refusals_until_alarm(journal: Journal) -> list[str]:
    """Submit until the journal answers with the alarm; what it answered before (it must accept none)."""
    seen: list[str] = []

    def alarmed() -> bool:
        try:
            journal.submit(order(Side.BUY, "late"))
        except RollbackAlarm:
            return True
        except Uncertified:
            seen.append("uncertified")
            return False
        except redis.ConnectionError:
            seen.append("connection")
            return False
        seen.append("accepted")
        return True

    wait_until(alarmed, timeout=20, message="the rollback alarm")
    return seen


@contextmanager
def halting_leader(url: str, **config: Any) -> Iterator[EngineLeader]:
    """A leader candidate that must end halted by the rollback alarm."""
    with pytest.raises(RollbackDetected), running_leader(url, **config) as leader:
        yield leader


# --------------------------------------------------------------------------- the witnesses


def test_the_leaders_memory_halts_a_restored_backup_before_any_new_id(valkey: Restorable) -> None:
    bus = Bus.connect(valkey.url)
    journal = Journal(bus, Durability.ALWAYS)
    with halting_leader(valkey.url):
        journal.submit(market())
        trade(journal)
        wait_until(lambda: committed(bus, 3), message="the first trade committed")
        backup = valkey.backup()
        trade(journal)
        trade(journal)  # "trade twice more"
        wait_until(lambda: committed(bus, 7), message="two more trades committed")
        counter_before = int(bus.client.get(bus.keys.order_id) or 0)
        valkey.restore(backup)
        assert int(bus.client.get(bus.keys.order_id) or 0) < counter_before  # the counter went back
        answers = refusals_until_alarm(journal)
        assert "accepted" not in answers  # the alarm came before the first new id
        alarm = read_alarm(bus)
        assert alarm is not None
        assert "this candidate saw 7 inputs committed, Redis holds 3" in alarm
    assert int(bus.client.get(bus.keys.order_id) or 0) < counter_before  # nothing was handed out again
    bus.close()


def test_a_restarted_leader_remembers_through_its_watermark_file(valkey: Restorable, tmp_path: Path) -> None:
    bus = Bus.connect(valkey.url)
    journal = Journal(bus, Durability.ALWAYS)
    watermark = tmp_path / "engine.watermark"
    with running_leader(valkey.url, watermark=watermark):
        journal.submit(market())
        trade(journal)
        wait_until(lambda: committed(bus, 3), message="the first trade committed")
        backup = valkey.backup()
        trade(journal)
        wait_until(lambda: committed(bus, 5), message="one more trade committed")
    valkey.restore(backup)
    with halting_leader(valkey.url, watermark=watermark):  # a new process: only the file remembers
        assert "accepted" not in refusals_until_alarm(journal)
    assert "engine.watermark saw 5 inputs committed, Redis holds 3" in (read_alarm(bus) or "")
    # the operator's view: matchbox alarm says why (exit 1), --clear lifts it
    shown = CliRunner().invoke(app, ["alarm", "--redis-url", valkey.url])
    assert shown.exit_code == 1
    assert "engine.watermark saw 5 inputs committed" in shown.output
    assert CliRunner().invoke(app, ["alarm", "--redis-url", valkey.url, "--clear"]).exit_code == 0
    assert read_alarm(bus) is None
    assert CliRunner().invoke(app, ["alarm", "--redis-url", valkey.url]).exit_code == 0
    bus.close()


def test_an_api_instance_is_a_witness_and_refuses_orders_naming_the_alarm(valkey: Restorable, tmp_path: Path) -> None:
    settings = Settings(
        open_access=True,
        redis_url=valkey.url,
        durability=Durability.ALWAYS,
        outcome_timeout=5.0,
        data_dir=tmp_path / "data",
    )
    bus = Bus.connect(valkey.url)
    body = {"market_id": "m", "account": "a", "side": "buy", "price": 40, "qty": 1}
    with running_leader(valkey.url), TestClient(create_app(settings)) as client:
        Journal(bus, Durability.ALWAYS).submit(market())
        wait_until(lambda: "m" in client.get("/v1/markets").text, message="the market")
        assert client.post("/v1/orders", json=body).status_code == 201
        backup = valkey.backup()
        assert client.post("/v1/orders", json=body).status_code == 201
        assert client.post("/v1/orders", json=body).status_code == 201
    # no leader now: only this API instance's tail knows what Redis held
    with TestClient(create_app(settings)) as fresh, TestClient(create_app(settings)) as witness:
        valkey.restore(backup)
        answers = []  # the first may find the pool's connections broken by the restart: a plain 503

        def refused_with_a_reason() -> bool:
            answers.append(witness.post("/v1/orders", json=body))
            return bool(answers[-1].json()["error"]["code"] == "HALTED")

        wait_until(refused_with_a_reason, message="an answer that names the alarm")
        assert {answer.status_code for answer in answers} == {503}
        assert answers[-1].json()["error"]["code"] == "HALTED"
        assert "an API instance saw event" in answers[-1].json()["error"]["message"]
        # every instance refuses now, and /ready says why
        assert fresh.post("/v1/orders", json=body).json()["error"]["code"] == "HALTED"
        ready = fresh.get("/ready")
        assert ready.status_code == 503
        assert "rollback alarm" in ready.json()["error"]["message"]
    bus.close()


def test_a_consumer_groups_tracking_row_is_a_witness(valkey: Restorable, tmp_path: Path) -> None:
    bus = Bus.connect(valkey.url)
    journal = Journal(bus, Durability.ALWAYS)
    database = open_database(None, tmp_path / "data")
    settings = Settings(redis_url=valkey.url, data_dir=tmp_path / "data")
    with running_leader(valkey.url):
        journal.submit(market())
        trade(journal)
        wait_until(lambda: committed(bus, 3), message="the first trade committed")
        backup = valkey.backup()
        trade(journal)
        wait_until(lambda: committed(bus, 5), message="one more trade committed")
    consumer = GroupConsumer(bus, PersistenceSink(database, group="persistence"), ConsumerConfig(group="persistence"))
    consumer.ensure_group()
    consumer.drain()
    database.dispose()
    valkey.restore(backup)
    # a consumer started on the older Redis halts (and halts everything) rather than skip or repeat
    with pytest.raises(RollbackAlarm, match="consumer group persistence"):
        run_consumer(settings, SinkKind.PERSISTENCE, "persistence", "c", True, threading.Event())
    clear_alarm(bus)
    # a leader with no memory and no watermark: the tracking row is the witness
    with halting_leader(valkey.url, witnesses=sql_witnesses(settings)):
        assert "accepted" not in refusals_until_alarm(journal)
    assert "consumer group persistence (its SQL tracking row) saw event" in (read_alarm(bus) or "")
    bus.close()


@pytest.mark.parametrize("durability", [Durability.ALWAYS, Durability.EVERYSEC])
def test_the_alarm_reaches_submitters_whatever_its_words(valkey: Restorable, durability: Durability) -> None:
    """The durable path pipelines the script with WAITAOF: its refusal is read from the script's own
    reply, not from redis-py's annotated message (which quotes differently around an apostrophe)."""
    bus = Bus.connect(valkey.url)
    reason = raise_alarm(bus, "Redis went back in time: the operator's restore lost 2 inputs")

    async def submit_async() -> None:
        aio = AsyncBus.connect(valkey.url, durability=durability)
        try:
            await aio.submit_many([Request(market())])
        finally:
            await aio.close()

    with pytest.raises(RollbackAlarm) as sync_refusal:
        Journal(bus, durability).submit(market())
    with pytest.raises(RollbackAlarm) as async_refusal:
        asyncio.run(submit_async())
    assert str(sync_refusal.value) == str(async_refusal.value) == reason
    bus.close()


def test_a_standing_by_candidate_is_a_witness(valkey: Restorable) -> None:
    """A candidate that never led: what it followed is enough to halt a restored backup."""
    bus = Bus.connect(valkey.url)
    journal = Journal(bus, Durability.ALWAYS)
    with running_leader(valkey.url):
        journal.submit(market())
        trade(journal)
        wait_until(lambda: committed(bus, 3), message="the first trade committed")
        backup = valkey.backup()
        trade(journal)
        wait_until(lambda: committed(bus, 5), message="one more trade committed")
    holder = "someone-else:1"  # the lock is held elsewhere for the whole test: this one stands by
    bus.client.set(bus.keys.leader, holder, px=600_000)
    with halting_leader(valkey.url) as standby:
        wait_until(lambda: standby.seen.inputs == 5, message="the standby followed the journal")
        valkey.restore(backup)
        bus.client.set(bus.keys.leader, holder, px=600_000)
        wait_until(lambda: read_alarm(bus) is not None, timeout=20, message="the standby raises the alarm")
    assert standby.stats.terms == 0
    assert "this candidate (standing by) saw 5 inputs committed, Redis holds 3" in (read_alarm(bus) or "")
    bus.close()


def test_a_witness_of_another_history_is_a_disagreement(bus: Bus) -> None:
    """Redis reaches as far back as the witness's newest event, but does not hold it: another history."""
    for entry_id in ("5-1", "7-2", "9-3"):
        bus.client.xadd(bus.keys.events, {"event": b"x"}, id=entry_id)
    offset = Offset(id="9-0", inputs=3, events=3, last_event="9-3")
    assert disagreements(bus, [Witness("w", last_event="7-2")], offset) == []
    assert disagreements(bus, [Witness("w", last_event="3-1")], offset) == []  # before the stream: trimmed
    assert disagreements(bus, [Witness("w", last_event="8-2")], offset) == [
        "w saw event 8-2, which Redis's output stream does not hold"
    ]
    assert disagreements(bus, [Witness("w", events=4)], offset) == ["w saw 4 events committed, Redis holds 3"]


def test_a_watermark_never_goes_down_and_an_unreadable_one_stops_its_candidate(tmp_path: Path) -> None:
    path = tmp_path / "engine.watermark"
    Watermark(path).write(Offset(id="9-0", inputs=9, events=12, last_event="9-12"), force=True)
    again = Watermark(path)  # a new process, after Redis went back to 3
    again.write(Offset(id="3-0", inputs=3, events=4, last_event="3-4"), force=True)
    assert again.read() == Offset(id="9-0", inputs=9, events=12, last_event="9-12")
    again.write(Offset(id="10-0", inputs=10, events=13, last_event="10-13"), force=True)
    assert (again.read() or Offset()).inputs == 10
    path.write_text('{"id": "10-0", "inp')  # a torn write, a full disk
    with pytest.raises(RollbackDetected, match=r"engine\.watermark cannot be read"):
        Watermark(path).read()
    Watermark(path).write(Offset(id="11-0", inputs=11), force=True)  # never overwrites what it cannot read
    assert path.read_text() == '{"id": "10-0", "inp'


# --------------------------------------------------------------------------- ids that cannot repeat


def test_ids_lost_where_no_witness_saw_them_are_never_handed_out_again(valkey: Restorable) -> None:
    """An everysec loss nobody saw: the operator restores, no witness remembers, trading goes on;
    every order id and trade id is still new."""
    bus = Bus.connect(valkey.url)
    journal = Journal(bus, Durability.ALWAYS)
    with running_leader(valkey.url):
        journal.submit(market())
        wait_until(lambda: committed(bus, 1), message="the market")
        backup = valkey.backup()
        lost_orders = trade(journal) + trade(journal)
        wait_until(lambda: committed(bus, 5), message="the trades committed")
        lost_trades = trade_ids(bus)
    valkey.restore(backup)
    with running_leader(valkey.url):  # a new process, no watermark: it cannot know
        wait_until(lambda: certified_submit(journal), timeout=20, message="a leader certifies the restored server")
        new_orders = trade(journal) + trade(journal)
        wait_until(lambda: len(trade_ids(bus)) == 2, message="the new trades")
        new_trades = trade_ids(bus)
    assert lost_trades
    assert min(new_orders) > max(lost_orders)
    assert min(new_trades) > max(lost_trades)
    assert min(new_orders) >= IDS_PER_MS  # the floor is the server's time, not a count
    bus.close()


def certified_submit(journal: Journal) -> bool:
    try:
        journal.submit(order(Side.BUY, "probe", price=1))
    except Uncertified:
        return False
    return True


def trade_ids(bus: Bus) -> list[int]:
    events = [decode_event(fields[b"event"]).event for _, fields in bus.range(bus.keys.events)]
    return [e.trade_id for e in events if isinstance(e, TradeExecuted)]


# --------------------------------------------------------------------------- item 9: no AOF


def test_a_redis_without_aof_is_named_with_its_two_fixes(valkey: Restorable, tmp_path: Path) -> None:
    bus = Bus.connect(valkey.url)
    bus.client.config_set("appendonly", "no")
    settings = Settings(
        open_access=True,
        redis_url=valkey.url,
        durability=Durability.ALWAYS,
        outcome_timeout=2.0,
        data_dir=tmp_path / "data",
        admin_token="t",
    )
    with running_leader(valkey.url), TestClient(create_app(settings)) as client:
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert "appendonly off" in ready.json()["error"]["message"]
        assert "MATCHBOX_DURABILITY=everysec" in ready.json()["error"]["message"]
        market = {"market_id": "m", "scheme": "binary"}
        answer = client.post("/v1/markets", json=market, headers={"Authorization": "Bearer t"})
        assert answer.status_code == 503
        assert "CONFIG SET appendonly yes" in answer.json()["error"]["message"]  # not "Redis is unavailable"
    bus.close()
