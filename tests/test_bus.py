"""The bus against a real Valkey: codec, submission, commits, fencing, recovery, poison input, restarts."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import cast

import msgspec
import pytest
import redis
from redis.credentials import CredentialProvider
from redis.typing import EncodableT, FieldT

from conftest import running_leader, wait_until
from matchbox.bus import calls
from matchbox.bus.aio import AsyncBus
from matchbox.bus.codec import MAX_COMMAND_BYTES, CodecError, decode_command, decode_event, encode_command, encode_event
from matchbox.bus.commit import (
    Batch,
    CommitRefused,
    Offset,
    Uncertified,
    commit,
    latest_snapshot,
    read_offset,
    store_snapshot,
)
from matchbox.bus.connection import Bus
from matchbox.bus.durability import Durability
from matchbox.bus.journal import Journal, Request, Submission
from matchbox.bus.rollback import certify, is_certified
from matchbox.bus.server import EmbeddedValkey, free_port
from matchbox.engine import Engine
from matchbox.engine.types import (
    IDS_PER_MS,
    MAX_LONG_TEXT,
    CancelOrder,
    CreateMarket,
    FeeSchedule,
    MarketCreated,
    MarketInfo,
    OrderAccepted,
    OrderRested,
    PlaceOrder,
    Rejected,
    RejectReason,
    Side,
    TickScheme,
    TradeExecuted,
)
from matchbox.leader.apply import apply_entry
from matchbox.leader.recovery import RollbackDetected, recover
from matchbox.leader.runner import EngineLeader, LeaderConfig


def order(price: int, qty: int = 5, side: Side = Side.BUY, account: str = "a", market: str = "m") -> PlaceOrder:
    return PlaceOrder(seq=0, ts=0, market_id=market, order_id=0, account=account, side=side, price=price, qty=qty)


def binary_market(market: str = "m") -> CreateMarket:
    return CreateMarket(seq=0, ts=0, market_id=market, scheme=TickScheme.BINARY)


def run_leader_for(url: str, seconds: float, **config: object) -> None:
    """Run a leader candidate in this thread for at most ``seconds`` (it may raise before)."""
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    timer.start()
    try:
        EngineLeader(Bus.connect(url), LeaderConfig(lock_ttl_ms=1000, **config), stop).run()  # type: ignore[arg-type]
    finally:
        timer.cancel()


def committed_inputs(bus: Bus) -> int:
    """Input entries committed, counted once the committed state hash is taken at the offset."""
    offset = read_offset(bus)
    return offset.inputs if offset and offset.hash_at == offset.id else 0


def all_events(bus: Bus) -> list[tuple[str, bytes]]:
    return [(entry_id.decode(), fields[b"event"]) for entry_id, fields in bus.range(bus.keys.events)]


# --------------------------------------------------------------------------- codec


def test_command_round_trip_takes_seq_ts_and_order_id_from_the_journal() -> None:
    raw = encode_command(
        PlaceOrder(seq=99, ts=99, market_id="m", order_id=99, account="a", side=Side.SELL, price=7, qty=3)
    )
    command = decode_command(raw, seq=5, ts=6, order_id=42)
    assert command == PlaceOrder(seq=5, ts=6, market_id="m", order_id=42, account="a", side=Side.SELL, price=7, qty=3)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'{"type": "Teleport"}',
        b'{"type": "CancelOrder"}',
        b'{"type": "CancelOrder", "order_id": "7"}',
        b'{"type": "CancelOrder", "order_id": 99999999999999999999999}',
        b'{"type": "CancelOrder", "order_id": 1e999}',
        b'{"type": "CancelAll", "market_id": "m", "account": "' + b"x" * 300 + b'"}',
        b'{"type": "PlaceOrder", "market_id": "m", "account": "a", "side": 0, "price": 5, "qty": 1}',
        b'{"type": "PlaceOrder", "market_id": "m", "account": "a", "side": 7, "price": 5, "qty": 1}',
    ],
)
def test_malformed_commands_are_codec_errors(raw: bytes) -> None:
    with pytest.raises(CodecError):
        decode_command(raw, seq=1, ts=1)


def test_the_largest_market_a_command_may_describe_fits_an_input_entry() -> None:
    """Every text field of a CreateMarket at its longest, in JSON's costliest character (an
    escaped control character, six bytes), and the largest fee schedule: the command still fits
    MAX_COMMAND_BYTES, so the API's field bounds never let through a market the journal refuses."""
    worst = "\x01"
    info = MarketInfo(
        title=worst * 256,
        question=worst * MAX_LONG_TEXT,
        rules=worst * MAX_LONG_TEXT,
        category=worst * 256,
        outcomes=(worst * 256, worst * 256),
    )
    low = -(2**63)  # the longest integer
    fees = FeeSchedule(
        maker_bps=low,
        taker_bps=low,
        maker_per_contract=low,
        taker_per_contract=low,
        commission_bps=low,
        account=worst * 256,
    )
    command = CreateMarket(
        seq=low,
        ts=low,
        market_id=worst * 256,
        scheme=TickScheme.BINARY,
        max_tick=low,
        max_qty=low,
        opens_at=low,
        closes_at=low,
        info=info,
        fees=fees,
    )
    raw = encode_command(command)
    assert len(raw) <= MAX_COMMAND_BYTES, len(raw)
    assert decode_command(raw, seq=1, ts=1) == msgspec.structs.replace(command, seq=1, ts=1)


def test_event_envelope_round_trip() -> None:
    event = OrderRested(1, 2, "m", 3, "ann", Side.BUY, 40, 5)
    decoded = decode_event(encode_event(event, 17, "1700000000000-3"))
    assert (decoded.n, decoded.in_id, decoded.event) == (17, "1700000000000-3", event)


# --------------------------------------------------------------------------- submission


def test_submit_allocates_increasing_order_ids_and_appends(bus: Bus) -> None:
    journal = Journal(bus, Durability.EVERYSEC)
    first = journal.submit(order(40))
    second = journal.submit(order(41))
    cancel = journal.submit(CancelOrder(seq=0, ts=0, order_id=first.order_id))
    assert (first.status, second.status, cancel.status) == ("new", "new", "new")
    assert second.order_id > first.order_id
    for submission in (first, second):  # never below the time in ms x IDS_PER_MS (see bus.rollback)
        assert submission.order_id >= int(submission.entry_id.partition("-")[0]) * IDS_PER_MS
    assert cancel.order_id == 0
    entries = bus.range(bus.keys.input)
    assert [e[0].decode() for e in entries] == [first.entry_id, second.entry_id, cancel.entry_id]
    assert entries[1][1][b"oid"] == str(second.order_id).encode()
    assert b"oid" not in entries[2][1]


def test_client_order_id_is_idempotent_and_conflicts_are_refused(bus: Bus) -> None:
    journal = Journal(bus, Durability.EVERYSEC)
    first = journal.submit(order(40, account="ann"), client_order_id="c-1")
    again = journal.submit(order(40, account="ann"), client_order_id="c-1")
    changed = journal.submit(order(45, account="ann"), client_order_id="c-1")
    other_account = journal.submit(order(40, account="bob"), client_order_id="c-1")
    assert again == type(first)("dup", first.order_id, first.entry_id)
    assert changed.status == "conflict"
    assert changed.order_id == first.order_id
    assert other_account.status == "new"
    assert bus.client.xlen(bus.keys.input) == 2
    ttl_ms = bus.client.pttl(bus.keys.client_order("ann", "c-1"))
    assert 23 * 3600 * 1000 < ttl_ms <= 24 * 3600 * 1000


def test_submit_many_is_one_call_with_an_outcome_each(bus: Bus) -> None:
    journal = Journal(bus, Durability.EVERYSEC)
    results = journal.submit_many([Request(order(30 + i), f"k{i % 3}") for i in range(6)])
    assert [r.status for r in results] == ["new", "new", "new", "conflict", "conflict", "conflict"]
    assert bus.client.xlen(bus.keys.input) == 3


def test_always_durability_waits_for_the_aof_fsync(tmp_path: Path) -> None:
    with EmbeddedValkey(tmp_path / "v", fsync="always") as server:
        bus = Bus.connect(server.url)
        submission = Journal(bus, Durability.ALWAYS).submit(order(40))
        assert submission.status == "new"
        server.kill()  # the power cord: what was acknowledged is on disk
    with EmbeddedValkey(tmp_path / "v", fsync="always") as server:
        bus = Bus.connect(server.url)
        assert [e[0].decode() for e in bus.range(bus.keys.input)] == [submission.entry_id]


def test_scripts_reload_after_script_flush(bus: Bus) -> None:
    journal = Journal(bus, Durability.EVERYSEC)
    journal.submit(order(40))
    bus.client.script_flush()
    assert journal.submit(order(41)).status == "new"
    assert Journal(bus, Durability.ALWAYS).submit(order(42)).status == "new"  # inside a pipeline too


# --------------------------------------------------------------------------- commits and fencing


def test_a_fenced_or_stale_commit_writes_nothing(bus: Bus) -> None:
    bus.client.set(bus.keys.epoch, 2)
    certify(bus, 2)
    batch = Batch(follows="", offset=Offset("5-0", 1, 1, "h", 2, "5-1"), events=[("5-1", b"{}")])
    with pytest.raises(CommitRefused) as fenced:
        commit(bus, 1, batch)
    assert fenced.value.fenced
    with pytest.raises(CommitRefused) as stale:
        commit(bus, 2, Batch(follows="4-0", offset=batch.offset, events=batch.events))
    assert not stale.value.fenced
    assert read_offset(bus) is None
    assert bus.client.xlen(bus.keys.events) == 0
    commit(bus, 2, batch)
    assert read_offset(bus) == batch.offset
    with pytest.raises(CommitRefused):  # the same batch again: it no longer follows the offset
        commit(bus, 2, batch)
    assert bus.client.xlen(bus.keys.events) == 1


def test_a_snapshot_is_stored_at_any_offset_its_epoch_committed_never_ahead(bus: Bus) -> None:
    """The leader stores snapshots from a thread while it commits on: the committed offset may
    be past the snapshot's by then. One behind it is stored; one ahead of it, or from a fenced
    epoch, is refused and nothing is written."""
    bus.client.set(bus.keys.epoch, 2)
    certify(bus, 2)
    first = Offset("5-0", 1, 1, "h1", 2, "5-1")
    second = Offset("6-0", 2, 2, "h2", 2, "6-2")
    commit(bus, 2, Batch(follows="", offset=first, events=[("5-1", b"{}")]))
    commit(bus, 2, Batch(follows="5-0", offset=second, events=[("6-2", b"{}")]))
    store_snapshot(bus, 2, first, b"at 5-0", keep=3, trim_input=False)  # behind the committed offset
    stored = latest_snapshot(bus)
    assert stored is not None
    assert (stored.offset.id, stored.offset.inputs, stored.data) == ("5-0", 1, b"at 5-0")
    ahead = Offset("7-0", 3, 3, "h3", 2, "7-3")
    with pytest.raises(CommitRefused) as stale:
        store_snapshot(bus, 2, ahead, b"at 7-0", keep=3, trim_input=False)
    assert not stale.value.fenced
    with pytest.raises(CommitRefused) as fenced:
        store_snapshot(bus, 1, second, b"old epoch", keep=3, trim_input=False)
    assert fenced.value.fenced
    assert bus.client.xlen(bus.keys.snapshot) == 1


def test_a_reemitted_event_id_is_refused_by_the_stream_itself(bus: Bus) -> None:
    bus.client.xadd(bus.keys.events, {"event": b"{}"}, id="5-1")
    with pytest.raises(redis.ResponseError, match="equal or smaller"):
        bus.client.xadd(bus.keys.events, {"event": b"{}"}, id="5-1")


# --------------------------------------------------------------------------- the leader


def test_leader_matches_the_journal_and_commits_numbered_events(bus: Bus, redis_url: str) -> None:
    journal = Journal(bus, Durability.EVERYSEC)
    journal.submit(binary_market())
    sell = journal.submit(order(55, qty=10, side=Side.SELL, account="s"))
    buy = journal.submit(order(56, qty=4, side=Side.BUY, account="b"))
    with running_leader(redis_url):
        wait_until(lambda: committed_inputs(bus) == 3, message="3 inputs committed")
    events = [decode_event(raw) for _, raw in all_events(bus)]
    assert [e.n for e in events] == list(range(1, len(events) + 1))
    assert [type(e.event) for e in events] == [MarketCreated, OrderAccepted, OrderRested, OrderAccepted, TradeExecuted]
    trade = events[-1].event
    assert isinstance(trade, TradeExecuted)
    assert (trade.price, trade.qty, trade.maker_order_id, trade.taker_order_id) == (55, 4, sell.order_id, buy.order_id)
    assert events[-1].in_id == buy.entry_id
    stream_ids = [entry_id for entry_id, _ in all_events(bus)]
    assert stream_ids[-1] == f"{buy.entry_id.split('-')[0]}-5"
    assert not list(bus.client.scan_iter(match="*book*"))  # the events are the contract: no book is stored
    offset = read_offset(bus)
    assert offset is not None
    assert (offset.id, offset.inputs, offset.events, offset.last_event) == (buy.entry_id, 3, 5, stream_ids[-1])


def test_a_clean_stop_leaves_a_snapshot_at_the_last_commit(bus: Bus, redis_url: str) -> None:
    """Stopped cleanly (Ctrl-C, an upgrade), a leader snapshots where it committed last: its
    successor, perhaps a newer engine, restores there and replays nothing the old one wrote."""
    journal = Journal(bus, Durability.EVERYSEC)
    journal.submit(binary_market())
    last = journal.submit(order(55, qty=10, side=Side.SELL, account="s"))
    with running_leader(redis_url, snapshot_every=10**6, snapshot_seconds=3600, snapshot_on_stop=True):
        wait_until(lambda: committed_inputs(bus) == 2, message="2 inputs committed")
    stored = latest_snapshot(bus)
    assert stored is not None
    assert (stored.offset.id, stored.offset.inputs) == (last.entry_id, 2)
    assert Engine.restore(stored.data).orders.keys() == {last.order_id}


def test_poison_input_is_rejected_and_the_leader_goes_on(bus: Bus, redis_url: str) -> None:
    journal = Journal(bus, Durability.EVERYSEC)
    journal.submit(binary_market())
    poison: list[dict[FieldT, EncodableT]] = [
        {"c": b"\xff\xfe garbage"},
        {"c": b'{"type":"PlaceOrder","market_id":"m","account":"a","side":0,"price":"high","qty":1}', "oid": b"2"},
        {"c": b'{"type":"CancelOrder","order_id":123456789012345678901234567890}'},
        {"nothing": b"here"},
        {"c": encode_command(order(40)), "oid": b"not a number"},
    ]
    poison_ids = [cast("bytes", bus.client.xadd(bus.keys.input, fields)).decode() for fields in poison]
    huge = journal.submit(order(40, qty=2**62))  # well-formed, but over the market's maximum
    good = journal.submit(order(40))
    with running_leader(redis_url) as leader:
        wait_until(lambda: committed_inputs(bus) == 8, message="every entry committed")
        assert leader.stats.terms == 1
    outcomes = {e.in_id: e.event for e in (decode_event(raw) for _, raw in all_events(bus))}
    for entry_id in poison_ids:
        rejected = outcomes[entry_id]
        assert isinstance(rejected, Rejected)
        assert rejected.reason is RejectReason.MALFORMED_COMMAND
    assert isinstance(outcomes[huge.entry_id], Rejected)
    assert outcomes[huge.entry_id].reason is RejectReason.QUANTITY_OVER_MAX  # type: ignore[attr-defined]
    assert isinstance(outcomes[good.entry_id], OrderRested)


@pytest.mark.parametrize("overlap_from", [1, 10**9], ids=["committed-from-a-thread", "one-round-trip"])
def test_recovery_from_snapshot_and_replay_gives_the_live_state_hash(
    bus: Bus, redis_url: str, overlap_from: int
) -> None:
    """Both ways a leader commits (a busy one from a thread while it matches the next batch, an
    idle one with the read of the next batch in the same round trip) commit the same history,
    and the snapshots stored meanwhile are at committed offsets a successor recovers from."""
    journal = Journal(bus, Durability.EVERYSEC)
    journal.submit(binary_market())
    for i in range(300):
        journal.submit(order(40 + i % 20, side=Side(i % 2), account=f"a{i % 5}"))
    with running_leader(redis_url, snapshot_every=100, batch=50, trim_input=False, overlap_from=overlap_from):
        wait_until(lambda: committed_inputs(bus) == 301, message="all committed")
    live = read_offset(bus)
    snapshot = latest_snapshot(bus)
    assert live is not None
    assert snapshot is not None
    assert 0 < snapshot.offset.inputs < 301  # so that recovery must replay part of the journal
    journal.submit(order(50))
    with running_leader(redis_url) as successor:
        wait_until(lambda: committed_inputs(bus) == 302, message="the successor commits")
        assert successor.stats.replayed == 301 - snapshot.offset.inputs
    # the successor checked the state hash at the committed offset; check it again from scratch
    engine = Engine()
    for seq, (entry_id, fields) in enumerate(bus.range(bus.keys.input), start=1):
        apply_entry(engine, entry_id.decode(), fields, seq)
        if seq == 301:
            assert engine.state_hash() == live.hash
    final = read_offset(bus)
    assert final is not None
    assert engine.state_hash() == final.hash


def test_journal_is_trimmed_only_behind_the_oldest_kept_snapshot(bus: Bus, redis_url: str) -> None:
    journal = Journal(bus, Durability.EVERYSEC)
    journal.submit(binary_market())
    for i in range(400):
        journal.submit(order(40 + i % 10, side=Side(i % 2)))
    with running_leader(redis_url, snapshot_every=100, batch=50, snapshots_kept=2, trim_input=True):
        wait_until(lambda: committed_inputs(bus) == 401, message="all committed")
    snapshots = bus.range(bus.keys.snapshot)
    assert len(snapshots) == 2
    oldest_kept = snapshots[0][1][b"in"].decode()
    first_entry = bus.range(bus.keys.input, count=1)[0][0].decode()
    assert first_entry == oldest_kept
    with running_leader(redis_url) as successor:  # recovery still works from what is left
        wait_until(lambda: successor.stats.terms == 1 and successor.lease.held, message="successor leads")


def test_rollback_is_detected_and_halts(bus: Bus, redis_url: str, tmp_path: Path) -> None:
    journal = Journal(bus, Durability.EVERYSEC)
    journal.submit(binary_market())
    journal.submit(order(40))
    watermark = tmp_path / "watermark.json"
    with running_leader(redis_url, watermark=watermark):
        wait_until(lambda: committed_inputs(bus) == 2, message="committed")
    wait_until(watermark.exists, message="the watermark file")
    # Redis "restored from an older backup": the whole history is gone, but the leader remembers
    bus.client.flushdb()
    journal.submit(binary_market())
    with pytest.raises(RollbackDetected, match=r"watermark\.json saw 2 inputs committed"):
        run_leader_for(redis_url, 5, watermark=watermark)
    assert bus.client.xlen(bus.keys.events) == 0  # it halted before matching anything


def test_inconsistent_streams_are_detected(bus: Bus, redis_url: str) -> None:
    journal = Journal(bus, Durability.EVERYSEC)
    journal.submit(binary_market())
    with running_leader(redis_url):
        wait_until(lambda: committed_inputs(bus) == 1, message="committed")
    bus.client.delete(bus.keys.events)  # the output stream lost its history
    with pytest.raises(RollbackDetected, match="the output stream ends at 0-0"):
        run_leader_for(redis_url, 5)


def test_valkey_restart_with_aof_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    data = tmp_path / "valkey"
    with EmbeddedValkey(data, fsync="always") as server:
        bus = Bus.connect(server.url)
        journal = Journal(bus, Durability.ALWAYS)
        journal.submit(binary_market())
        for i in range(50):
            journal.submit(order(40 + i % 10, side=Side(i % 2)))
        with running_leader(server.url):
            wait_until(lambda: committed_inputs(bus) == 51, message="committed before the restart")
        before = read_offset(bus)
        port = server.port
        bus.close()
        server.kill()
    with EmbeddedValkey(data, port=port, fsync="always") as server:
        bus = Bus.connect(server.url)
        assert read_offset(bus) == before
        journal = Journal(bus, Durability.ALWAYS)
        with pytest.raises(Uncertified):  # a restarted server takes nothing before a leader checks it
            journal.submit(order(40))
        with running_leader(server.url):
            wait_until(lambda: is_certified(bus), message="a leader certifies the restarted server")
            for i in range(50):
                journal.submit(order(40 + i % 10, side=Side(i % 2)))
            wait_until(lambda: committed_inputs(bus) == 101, message="committed after the restart")
        events = [decode_event(raw) for _, raw in all_events(bus)]
        assert [e.n for e in events] == list(range(1, len(events) + 1))
        inputs = [entry_id.decode() for entry_id, _ in bus.range(bus.keys.input)]
        outcomes = [e.in_id for e in events if isinstance(e.event, (OrderAccepted, MarketCreated, Rejected))]
        assert outcomes == inputs  # one outcome per input entry, in order
        bus.close()


def test_leader_rides_out_a_valkey_restart(tmp_path: Path) -> None:
    data = tmp_path / "valkey"
    server = EmbeddedValkey(data, fsync="always").start()
    port = server.port
    try:
        bus = Bus.connect(server.url)
        journal = Journal(bus, Durability.ALWAYS)
        journal.submit(binary_market())
        with running_leader(server.url) as leader:
            for i in range(20):
                journal.submit(order(40 + i % 10, side=Side(i % 2)))
            wait_until(lambda: committed_inputs(bus) == 21, message="committed before the restart")
            server.kill()
            server = EmbeddedValkey(data, port=port, fsync="always").start()
            wait_until(lambda: is_certified(bus), timeout=20, message="the leader certifies the restarted server")
            for i in range(20):
                journal.submit(order(40 + i % 10, side=Side(i % 2)))
            wait_until(lambda: committed_inputs(bus) == 41, timeout=20, message="committed after the restart")
            assert leader.stats.terms >= 2  # it stepped down on the error and won again
        events = [decode_event(raw) for _, raw in all_events(bus)]
        assert [e.n for e in events] == list(range(1, len(events) + 1))
        inputs = [entry_id.decode() for entry_id, _ in bus.range(bus.keys.input)]
        outcomes = [e.in_id for e in events if isinstance(e.event, (OrderAccepted, MarketCreated, Rejected))]
        assert outcomes == inputs  # one outcome per input entry, none lost, none twice
        bus.close()
    finally:
        server.stop()


def test_async_submission_coalesces_and_reloads_after_script_flush(bus: Bus, redis_url: str) -> None:
    async def scenario() -> list[Submission]:
        async_bus = AsyncBus.connect(redis_url, durability=Durability.ALWAYS)
        try:
            first = await async_bus.submit(Request(order(40)))
            bus.client.script_flush()
            together = await asyncio.gather(*(async_bus.submit(Request(order(41 + i))) for i in range(20)))
            return [first, *together]
        finally:
            await async_bus.close()

    submissions = asyncio.run(scenario())
    assert [s.status for s in submissions] == ["new"] * 21
    ids = [s.order_id for s in submissions]
    assert ids == sorted(set(ids))  # unique and increasing
    assert bus.client.xlen(bus.keys.input) == 21


def test_a_throttled_state_hash_is_brought_up_to_date_when_idle(bus: Bus, redis_url: str) -> None:
    journal = Journal(bus, Durability.EVERYSEC)
    journal.submit(binary_market())
    with running_leader(redis_url, hash_every_seconds=3600.0):
        for i in range(40):
            journal.submit(order(40 + i % 10, side=Side(i % 2), account=f"a{i % 3}"))
        wait_until(lambda: committed_inputs(bus) == 41, message="the hash taken at the offset")
    offset = read_offset(bus)
    assert offset is not None
    engine = Engine()
    for seq, (entry_id, fields) in enumerate(bus.range(bus.keys.input), start=1):
        apply_entry(engine, entry_id.decode(), fields, seq)
    assert (offset.hash_at, offset.hash) == (offset.id, engine.state_hash())
    with running_leader(redis_url) as successor:  # recovery checks the hash where it was taken
        wait_until(lambda: successor.lease.held, message="the successor leads")


def test_a_commit_made_before_any_state_hash_recovers_without_a_false_alarm(bus: Bus) -> None:
    """The first batches commit no hash (hashing is throttled): a successor must not take the
    empty hash for a mismatch and halt a healthy exchange."""
    journal = Journal(bus, Durability.EVERYSEC)
    entry = journal.submit(binary_market()).entry_id
    bus.client.set(bus.keys.epoch, 1)
    certify(bus, 1)
    commit(bus, 1, Batch(follows="", offset=Offset(entry, 1, 1, "", 1, f"{entry.split('-')[0]}-1", "")))
    offset = read_offset(bus)
    assert offset is not None
    assert offset.hash == ""
    engine, replayed = recover(bus, offset, None)
    assert replayed == 1
    assert list(engine.books) == ["m"]  # the market was rebuilt, and nothing was refused


def test_a_free_port_is_taken_below_the_ephemeral_range() -> None:
    """A test's Valkey stopped and started again on its port once found it taken: a client
    retrying the stopped server had been given that port, from the ephemeral range, as its own."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {free_port() for _ in range(20)}
    assert all(10_000 <= port < low for port in ports)
    assert len(ports) > 1  # random, so that two runs at once seldom meet


@pytest.mark.parametrize("transport", ["sync", "asyncio"])
def test_a_submission_whose_answer_is_late_is_never_sent_again(valkey_server: EmbeddedValkey, transport: str) -> None:
    """The server holds a submission longer than the client's socket timeout (here a CLIENT
    PAUSE, as a disk stall would): the submitter is told (an error: the API answers 503), and
    the journal holds the command at most once. A transport that sends it again after a timeout
    or a lost connection (redis-py's own retry does) journals one request twice or more: as many
    orders, and nothing to tell them apart."""
    command = order(50)
    direct = Bus.connect(valkey_server.url)
    Journal(direct, Durability.EVERYSEC).submit(command)  # the script is loaded: the next one runs it
    direct.client.client_pause(1500, all=False)  # writes wait: as a disk stall would hold them
    if transport == "sync":
        bus = Bus.connect(valkey_server.url, socket_timeout=0.3)
        with pytest.raises(redis.TimeoutError):
            Journal(bus, Durability.EVERYSEC).submit(command)
        bus.close()
    else:

        async def submit() -> None:
            bus = AsyncBus.connect(valkey_server.url, durability=Durability.EVERYSEC, socket_timeout=0.3)
            try:
                with pytest.raises(redis.TimeoutError):
                    await bus.submit(Request(command))
            finally:
                await bus.close()

        asyncio.run(submit())
    direct.client.client_unpause()
    assert direct.client.xlen(direct.keys.input) <= 2  # the first, and the late one at most once
    direct.close()


class FlakyCredentials(CredentialProvider):
    """A password from a service that fails the first time it is asked."""

    def __init__(self, password: str) -> None:
        self.password = password
        self.asked = 0

    def get_credentials(self) -> tuple[str]:
        self.asked += 1
        if self.asked == 1:
            raise OSError("the credential service is down")
        return (self.password,)

    async def get_credentials_async(self) -> tuple[str]:
        return self.get_credentials()


def test_a_line_reads_only_its_own_replies_after_a_timeout_a_cancel_or_a_lost_connection(
    valkey_server: EmbeddedValkey,
) -> None:
    """A line (the API's own connection for its submissions and its tail) whose call got no
    reply in time, or whose caller was cancelled while Redis answered, closes its connection: the
    late reply is never read as the next call's. A connection the server closed is opened again by
    the next call; credentials and the database come from the URL, as the pool's connections'. A
    command that cannot be packed, a reply that means a broken connection (NOAUTH), a credential
    provider that fails: each is an error of its own call, and the next call reads its own reply.
    A line is closed with its bus, for good; a URL's ``?protocol=3`` does not change its RESP2."""
    direct = Bus.connect(valkey_server.url)
    direct.client.config_set("requirepass", "secret")
    direct.client.auth("secret")
    url = valkey_server.url.replace("redis://", "redis://:secret@").rsplit("/", 1)[0] + "/3"

    database3 = redis.Redis.from_url(url)

    async def scenario() -> None:
        bus = AsyncBus.connect(url, socket_timeout=0.3)
        line = bus.line()

        async def run(*command: str | int) -> object:
            return await bus.run(calls.command(*command), line)

        try:
            assert await run("SET", "k", "first") is True
            direct.client.client_pause(600, all=False)  # writes wait, as a disk stall holds them
            with pytest.raises(redis.TimeoutError):
                await run("SET", "k", "late")
            assert not line.connected
            wait_until(lambda: database3.get("k") == b"late", message="the paused SET ran")
            assert await run("GET", "k") == b"late"  # its own reply, not the late SET's OK

            direct.client.client_pause(600, all=False)
            cancelled = asyncio.create_task(run("SET", "k2", "v"))
            await asyncio.sleep(0.1)
            cancelled.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cancelled
            assert await run("GET", "k2") in (None, b"v")  # read after the pause: a GET's reply either way

            direct.client.client_kill_filter(_type="normal", skipme=True)
            deadline = asyncio.get_running_loop().time() + 5
            while line.connected:  # the loop sees the server close it
                assert asyncio.get_running_loop().time() < deadline, "the line never saw its connection closed"
                await asyncio.sleep(0.01)
            assert await run("GET", "k") == b"late"  # a new connection: authenticated, on database 3

            with pytest.raises(redis.DataError):  # a command that cannot be sent leaves nothing waiting
                await run("SET", "k", "\ud800")
            assert await run("GET", "k") == b"late"
        finally:
            await bus.close()
        with pytest.raises(redis.ConnectionError):  # closed with its bus, for good
            await run("GET", "k")

        # a reply that means the connection is broken (here NOAUTH) is raised, and the line closed
        stranger = AsyncBus.connect(valkey_server.url.rsplit("/", 1)[0] + "/3?protocol=3", socket_timeout=1)
        line = stranger.line()
        with pytest.raises(redis.AuthenticationError):
            await stranger.run(calls.command("GET", "k"), line)
        assert not line.connected
        await stranger.close()

        # a credential provider that fails once: a ConnectionError, and nothing half-made is kept
        provider = FlakyCredentials("secret")
        flaky = AsyncBus.connect(
            valkey_server.url.rsplit("/", 1)[0] + "/3", socket_timeout=1, credential_provider=provider
        )
        line = flaky.line()
        with pytest.raises(redis.ConnectionError):
            await flaky.run(calls.command("GET", "k"), line)
        assert await flaky.run(calls.command("GET", "k"), line) == b"late"
        await flaky.close()

    asyncio.run(scenario())
    database3.close()
    direct.client.config_set("requirepass", "")
    direct.close()
