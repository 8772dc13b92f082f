"""Transfers of cash between shards: the engine's two halves, and the saga through three engines.

``TransferOut`` takes the cash on one shard, ``TransferIn`` pays it in on another, once: the
relay may deliver it any number of times, in any order among other transfers, and the money is
never made or lost."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from contextlib import ExitStack, closing
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ADMIN, api_settings, contract_violations, examples, fresh, in_thread, running_leader, wait_until
from matchbox.api.app import create_app
from matchbox.bus.codec import decode_command, decode_event
from matchbox.bus.connection import Bus
from matchbox.bus.durability import Durability
from matchbox.bus.journal import Journal
from matchbox.bus.server import EmbeddedValkey
from matchbox.consumers.process import SinkKind, run_consumer
from matchbox.consumers.runner import ConsumerConfig, GroupConsumer
from matchbox.consumers.transfers import TransferRelay, journal_cache
from matchbox.engine import Engine
from matchbox.engine.ids import RETURN_SUFFIX
from matchbox.engine.types import (
    BalanceChanged,
    BalanceReason,
    Deposit,
    Event,
    Rejected,
    RejectReason,
    TransferIn,
    TransferOut,
    TransferredIn,
    TransferredOut,
    TransferRefused,
    Withdraw,
)
from matchbox.settings import Settings

_seq = iter(range(1, 10**9))


def run(engine: Engine, command: object) -> list[Event]:
    return engine.apply(command)  # type: ignore[arg-type]


def out(account: str, amount: int, transfer_id: str, to_shard: int) -> TransferOut:
    return TransferOut(seq=next(_seq), ts=1, account=account, amount=amount, transfer_id=transfer_id, to_shard=to_shard)


def pay_in(event: TransferredOut, from_shard: int, transfer_id: str | None = None) -> TransferIn:
    return TransferIn(
        seq=next(_seq),
        ts=1,
        account=event.account,
        amount=event.amount,
        transfer_id=transfer_id or event.transfer_id,
        from_shard=from_shard,
    )


def cash(engine: Engine, account: str) -> int:
    held = engine.ledger.accounts.get(account)
    return 0 if held is None else held.total


@pytest.fixture
def shards() -> list[Engine]:
    engines = [Engine(shard=n) for n in range(3)]
    run(engines[0], Deposit(seq=next(_seq), ts=1, account="ann", amount=1_000))
    return engines


def test_a_transfer_takes_the_cash_on_one_shard_and_pays_it_in_on_another_once(shards: list[Engine]) -> None:
    source, _, target = shards
    taken = run(source, out("ann", 300, "ann:t1", to_shard=2))
    moved = next(e for e in taken if isinstance(e, TransferredOut))
    balance = next(e for e in taken if isinstance(e, BalanceChanged))
    assert (moved.amount, moved.to_shard, balance.total, balance.reason) == (300, 2, 700, BalanceReason.TRANSFER_OUT)
    paid = run(target, pay_in(moved, 0))
    assert [type(e) for e in paid] == [TransferredIn, BalanceChanged]
    assert (cash(source, "ann"), cash(target, "ann")) == (700, 300)
    again = run(target, pay_in(moved, 0))  # the relay sent it twice
    assert [(type(e), getattr(e, "reason", None)) for e in again] == [
        (TransferRefused, RejectReason.DUPLICATE_TRANSFER)
    ]
    assert cash(target, "ann") == 300
    assert (source.ledger.net_deposits + target.ledger.net_deposits) == 1_000  # conserved across shards


@pytest.mark.parametrize(
    ("amount", "transfer_id", "to_shard", "reason"),
    [
        (1_001, "ann:a", 1, RejectReason.INSUFFICIENT_FUNDS),  # beyond the free balance
        (0, "ann:b", 1, RejectReason.INVALID_AMOUNT),
        (10, "ann:c", 0, RejectReason.INVALID_TRANSFER),  # to its own shard
        (10, "ann:d", 4096, RejectReason.INVALID_TRANSFER),  # to no shard
        (10, "ann d", 1, RejectReason.INVALID_TRANSFER),  # a malformed transfer id
    ],
)
def test_a_transfer_out_that_cannot_be_is_rejected_and_changes_nothing(
    shards: list[Engine], amount: int, transfer_id: str, to_shard: int, reason: RejectReason
) -> None:
    source = shards[0]
    before = source.state_hash()
    (rejected,) = run(source, out("ann", amount, transfer_id, to_shard))
    assert isinstance(rejected, Rejected)
    assert rejected.reason is reason
    assert source.state_hash() == before


def test_a_transfer_id_moves_money_once_even_out_of_its_shard_again(shards: list[Engine]) -> None:
    source = shards[0]
    run(source, out("ann", 10, "ann:once", to_shard=1))
    (rejected,) = run(source, out("ann", 10, "ann:once", to_shard=2))
    assert isinstance(rejected, Rejected)
    assert (rejected.reason, cash(source, "ann")) == (RejectReason.DUPLICATE_TRANSFER, 990)


def test_the_ids_a_shard_has_seen_survive_its_snapshot(shards: list[Engine]) -> None:
    source, _, target = shards
    moved = next(e for e in run(source, out("ann", 5, "ann:kept", to_shard=2)) if isinstance(e, TransferredOut))
    run(target, pay_in(moved, 0))
    restored = Engine.restore(target.snapshot(), shard=2)
    assert (restored.transfers, restored.state_hash()) == ({"ann:kept"}, target.state_hash())
    refused = run(restored, pay_in(moved, 0))
    assert isinstance(refused[0], TransferRefused)
    assert refused[0].reason is RejectReason.DUPLICATE_TRANSFER


def test_a_refused_transfer_in_says_what_to_pay_back(shards: list[Engine]) -> None:
    source, _, target = shards
    run(target, Deposit(seq=next(_seq), ts=1, account="ann", amount=2**62))
    run(source, Deposit(seq=next(_seq), ts=1, account="ann", amount=2**62))
    moved = next(e for e in run(source, out("ann", 2**62, "ann:big", to_shard=2)) if isinstance(e, TransferredOut))
    (refused,) = run(target, pay_in(moved, 0))  # 2**62 more would overflow the target's ledger
    assert isinstance(refused, TransferRefused)
    assert (refused.reason, refused.amount, refused.from_shard) == (RejectReason.INVALID_AMOUNT, 2**62, 0)
    back = TransferIn(
        seq=next(_seq), ts=1, account="ann", amount=2**62, transfer_id="ann:big" + RETURN_SUFFIX, from_shard=2
    )
    run(source, back)
    assert cash(source, "ann") == 1_000 + 2**62


# --------------------------------------------------------------------------- the saga, as a property


@given(
    seed=st.integers(0, 2**32),
    steps=st.lists(
        st.tuples(st.sampled_from(["deposit", "withdraw", "transfer", "relay", "relay-again"]), st.integers(1, 400)),
        max_size=60,
    ),
)
@settings(max_examples=examples(200), deadline=None)
def test_transfers_never_make_or_lose_money_and_each_is_paid_in_once(seed: int, steps: list[tuple[str, int]]) -> None:
    """Deposits, withdrawals and transfers among three shards, the relay delivering each transfer's
    second half late, out of order and again: at every step the cash on the shards plus what is
    in flight is what was deposited less what was withdrawn; once everything is relayed, nothing
    is in flight and each transfer was paid in exactly once."""
    rng = random.Random(seed)
    engines = [Engine(shard=n) for n in range(3)]
    accounts = ("ann", "bob")
    deposited = 0
    in_flight: dict[str, TransferredOut] = {}  # transfer id -> its first half
    sent: list[tuple[TransferIn, int]] = []  # second halves, with their target, not yet delivered
    paid_in: dict[str, int] = {}
    number = 0

    def deliver(command: TransferIn, target: int) -> None:
        for event in run(engines[target], command):
            if isinstance(event, TransferredIn):
                paid_in[event.transfer_id] = paid_in.get(event.transfer_id, 0) + 1
                in_flight.pop(event.transfer_id, None)

    for action, amount in steps:
        shard, account = rng.randrange(3), rng.choice(accounts)
        if action == "deposit":
            run(engines[shard], Deposit(seq=next(_seq), ts=1, account=account, amount=amount))
            deposited += amount
        elif action == "withdraw":
            events = run(engines[shard], Withdraw(seq=next(_seq), ts=1, account=account, amount=amount))
            if not isinstance(events[0], Rejected):
                deposited -= amount
        elif action == "transfer":
            number += 1
            target = rng.choice([n for n in range(3) if n != shard])
            for event in run(engines[shard], out(account, amount, f"{account}:{number}", target)):
                if isinstance(event, TransferredOut):
                    in_flight[event.transfer_id] = event
                    sent.append((pay_in(event, shard), target))
        elif sent:
            command, target = sent.pop(rng.randrange(len(sent)))
            deliver(command, target)
            if action == "relay-again":
                sent.append((command, target))  # delivered, and queued to be delivered again
        held = sum(cash(engine, account) for engine in engines for account in accounts)
        assert held + sum(e.amount for e in in_flight.values()) == deposited
    for command, target in sent:
        deliver(command, target)
    assert in_flight == {}
    assert all(times == 1 for times in paid_in.values())
    assert sum(cash(engine, account) for engine in engines for account in accounts) == deposited


# --------------------------------------------------------------------------- through the API and the relays


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Three shards on one Valkey: a leader and a transfer relay each; yields the Redis URL."""
    stop = threading.Event()
    with ExitStack() as stack:
        server = stack.enter_context(EmbeddedValkey(tmp_path_factory.mktemp("valkey"), fsync="everysec"))
        for shard in range(3):
            stack.enter_context(running_leader(server.url, shard))
        for shard in range(3):
            bus = stack.enter_context(closing(Bus.connect(server.url, shard)))
            relay = TransferRelay(shard, journal_cache(partial(Bus.connect, server.url), Durability.ALWAYS), stop)
            consumer = GroupConsumer(bus, relay, ConsumerConfig(group="transfers", block_ms=20), stop)
            stack.enter_context(in_thread(consumer.run, stop))
        yield server.url


@pytest.fixture(scope="module")
def api(exchange: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = api_settings(exchange, tmp_path_factory.mktemp("data"), shards=3, open_access=True)
    with TestClient(create_app(settings)) as client:
        yield client


def parts(api: TestClient, account: str) -> list[int]:
    return [part["total"] for part in api.get("/v1/account", params={"account": account}).json()["shards"]]


def deposit(api: TestClient, account: str, amount: int, shard: int) -> None:
    funded = api.post(f"/v1/admin/accounts/{account}/deposit", json={"amount": amount, "shard": shard}, headers=ADMIN)
    assert funded.status_code == 200, funded.text


def status_of(api: TestClient, account: str, transfer_id: str) -> str:
    found = api.get(f"/v1/account/transfers/{transfer_id}", params={"account": account})
    return str(found.json().get("status")) if found.status_code == 200 else "unknown"


def test_cash_moves_between_shards_through_the_api_once_however_often_it_is_asked(api: TestClient) -> None:
    account = fresh("mover")
    deposit(api, account, 1_000, 0)
    body = {"amount": 400, "from_shard": 0, "to_shard": 2, "transfer_id": "t1"}
    sent = api.post("/v1/account/transfers", json=body, params={"account": account})
    assert sent.status_code == 202, sent.text
    assert sent.json()["status"] in ("in_flight", "done")
    wait_until(lambda: status_of(api, account, "t1") == "done", message="the relay paying it in on shard 2")
    assert parts(api, account) == [600, 0, 400]
    again = api.post("/v1/account/transfers", json=body, params={"account": account})  # a retry: nothing moves
    assert (again.status_code, again.json()["status"]) == (202, "done")
    assert parts(api, account) == [600, 0, 400]
    short = api.post(
        "/v1/account/transfers", json={**body, "transfer_id": "t2", "amount": 601}, params={"account": account}
    )
    assert (short.status_code, short.json()["error"]["code"], short.json()["error"]["field"]) == (
        409,
        "INSUFFICIENT_FUNDS",
        "amount",
    )
    same = api.post(
        "/v1/account/transfers", json={**body, "transfer_id": "t3", "to_shard": 0}, params={"account": account}
    )
    assert (same.status_code, same.json()["error"]["field"]) == (400, "to_shard")
    nowhere = api.post(
        "/v1/account/transfers", json={**body, "transfer_id": "t4", "to_shard": 7}, params={"account": account}
    )
    assert (nowhere.status_code, nowhere.json()["error"]["field"]) == (404, "to_shard")
    total = api.get("/v1/account", params={"account": account}).json()
    assert (total["total"], total["free"]) == (1_000, 1_000)


def test_a_relay_that_sends_everything_again_moves_no_money_twice(api: TestClient, exchange: str) -> None:
    """As after a relay's crash between its submission and its acknowledgement, or its group made
    again at the start of the stream: every second half again, refused where it was paid."""
    account = fresh("again")
    deposit(api, account, 500, 1)
    api.post("/v1/account/transfers", json={"amount": 200, "from_shard": 1, "to_shard": 0}, params={"account": account})
    wait_until(lambda: parts(api, account) == [200, 300, 0], message="the first delivery")
    bus = Bus.connect(exchange, 1)
    relay = TransferRelay(1, journal_cache(partial(Bus.connect, exchange), Durability.ALWAYS), threading.Event())
    relay.apply(bus.range(bus.keys.events))  # the whole stream: every transfer ever taken out of shard 1
    bus.close()
    assert relay.sent >= 1

    def refused_again() -> bool:
        target = Bus.connect(exchange, 0)
        events = [decode_event(fields[b"event"]).event for _, fields in target.range(target.keys.events)]
        target.close()
        return any(isinstance(e, TransferRefused) and e.account == account for e in events)

    wait_until(refused_again, message="shard 0 refusing the repeat")
    assert parts(api, account) == [200, 300, 0]


def test_a_transfer_the_target_refuses_is_paid_back(api: TestClient, exchange: str) -> None:
    """Shard 2 holds so much that one more deposit would overflow its ledger: it refuses the
    transfer, and its relay pays the cash back on shard 0."""
    Journal(Bus.connect(exchange, 2)).submit(Deposit(seq=0, ts=0, account="whale", amount=2**63 - 1 - 2**52))
    account = fresh("refused")
    deposit(api, account, 2**53, 0)
    body = {"amount": 2**53, "from_shard": 0, "to_shard": 2, "transfer_id": "big"}
    with api.websocket_connect(f"/v1/ws?subscribe=orders:{account}") as feed:
        assert api.post("/v1/account/transfers", json=body, params={"account": account}).status_code == 202
        wait_until(lambda: status_of(api, account, "big") == "returned", message="the transfer paid back")
        assert parts(api, account) == [2**53, 0, 0]
        seen: list[dict[str, Any]] = []
        while not {"TransferredOut", "TransferRefused", "TransferredIn"} <= {m["type"] for m in seen}:
            seen.append(feed.receive_json())
    # the transfers' messages as the feed's contract has them (one shard has none: test_asyncapi.py)
    document = api.get("/v1/asyncapi.json").json()
    assert contract_violations(document, seen)[0] == []


def test_the_relay_runs_without_the_consumers_database(tmp_path: Path) -> None:
    """``matchbox consume transfers`` keeps no table: it needs Redis alone, not DATABASE_URL's server."""
    with EmbeddedValkey(tmp_path / "valkey", fsync="everysec") as server, running_leader(server.url, 0):
        source = Bus.connect(server.url, 0)
        journal = Journal(source)
        journal.submit(Deposit(seq=0, ts=0, account="ann", amount=100))
        journal.submit(out("ann", 60, "ann:no-db", to_shard=1))
        wait_until(lambda: any(isinstance(e, TransferredOut) for e in all_events(source)), message="taken out")
        nowhere = "postgresql://matchbox@127.0.0.1:1/none"  # nothing listens there
        settings = Settings(redis_url=server.url, database_url=nowhere, data_dir=tmp_path, shard=0)
        assert run_consumer(settings, SinkKind.TRANSFERS, "transfers", "burst", True, threading.Event()) >= 2
        target = Bus.connect(server.url, 1)
        sent = [decode_command(f[b"c"], seq=0, ts=0) for _, f in target.range(target.keys.input)]
        assert [(c.transfer_id, c.amount) for c in sent if isinstance(c, TransferIn)] == [("ann:no-db", 60)]
        source.close()
        target.close()


def all_events(bus: Bus) -> list[Event]:
    return [decode_event(fields[b"event"]).event for _, fields in bus.range(bus.keys.events)]
