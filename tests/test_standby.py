"""A large book still gets a leader: recovery keeps the lease, and standby candidates stay warm.

Real Valkey, real leaders (in threads, or ``python -m matchbox engine`` processes that are
SIGKILLed); assertions on counters (``replayed``, ``restores``, terms), never on time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import in_thread, running_leader, wait_until
from matchbox.bus.codec import decode_event
from matchbox.bus.commit import Offset, read_offset
from matchbox.bus.connection import Bus
from matchbox.bus.durability import Durability
from matchbox.bus.journal import Journal, Request
from matchbox.engine.types import CreateMarket, PlaceOrder, Side, TickScheme, TradeExecuted
from matchbox.leader.election import Lease
from matchbox.leader.runner import EngineLeader, LeaderConfig
from matchbox.leader.standby import Standby
from test_failover import Candidates

pytestmark = pytest.mark.e2e  # warm standby: candidates racing for the lease for seconds

MARKET = "m"
NEVER = 10**9  # snapshot_every: no snapshot, so that a cold recovery replays the whole journal


def resting(count: int, start: int = 0) -> list[Request]:
    """Orders that rest without trading: bids at 1..49, asks at 51..99."""
    requests = []
    for i in range(start, start + count):
        buy = i % 2 == 0
        price = 1 + i % 49 if buy else 51 + i % 49
        order = PlaceOrder(
            seq=0,
            ts=0,
            market_id=MARKET,
            order_id=0,
            account=f"a{i % 97}",
            side=Side.BUY if buy else Side.SELL,
            price=price,
            qty=1 + i % 9,
        )
        requests.append(Request(order))
    return requests


def submit(bus: Bus, requests: list[Request]) -> str:
    """Append ``requests`` to the journal; the last entry's id."""
    journal = Journal(bus, Durability.EVERYSEC)
    last = ""
    for start in range(0, len(requests), 500):
        last = journal.submit_many(requests[start : start + 500])[-1].entry_id
    return last


def open_market(bus: Bus) -> str:
    return (
        Journal(bus, Durability.EVERYSEC)
        .submit(CreateMarket(seq=0, ts=0, market_id=MARKET, scheme=TickScheme.BINARY))
        .entry_id
    )


def committed(bus: Bus, entry_id: str, timeout: float = 60.0) -> Offset:
    """Wait until the offset reaches ``entry_id`` with its state hash taken there; that offset."""

    def done() -> bool:
        offset = read_offset(bus)
        return offset is not None and offset.id == entry_id and offset.hash_at == entry_id

    wait_until(done, timeout, f"the committed offset to reach {entry_id} with its hash")
    offset = read_offset(bus)
    assert offset is not None
    return offset


@contextmanager
def leader(url: str, **config: object) -> Iterator[EngineLeader]:
    """A leader candidate in a thread with its own TTL (``running_leader`` fixes it at 1 s)."""
    stop = threading.Event()
    own = Bus.connect(url)
    candidate = EngineLeader(own, LeaderConfig(**config), stop)  # type: ignore[arg-type]
    try:
        with in_thread(candidate.run, stop):
            yield candidate
    finally:
        own.close()


def trades_of(bus: Bus, entry_id: str) -> list[TradeExecuted]:
    """The trades the input entry ``entry_id`` caused (its events' ids share its milliseconds)."""
    ms = entry_id.partition("-")[0]
    events = [decode_event(fields[b"event"]) for _, fields in bus.range(bus.keys.events, ms, ms)]
    return [e.event for e in events if e.in_id == entry_id and isinstance(e.event, TradeExecuted)]


# --------------------------------------------------------------------------- (1) the lease


def test_a_book_that_takes_longer_than_the_ttl_to_recover_still_gets_a_leader(redis_url: str, bus: Bus) -> None:
    open_market(bus)
    last = submit(bus, resting(300_000))
    with running_leader(redis_url, snapshot_every=NEVER):
        committed(bus, last)

    # 300,001 committed entries and no snapshot: recovery replays them all, several TTLs long. (A
    # TTL of 600 ms, not less: a renewing thread can wait a few hundred ms for the GIL on a busy
    # machine, which is why the default is 3 s.)
    ttl_ms = 600
    with leader(redis_url, lock_ttl_ms=ttl_ms, snapshot_every=NEVER) as successor:
        taker = PlaceOrder(seq=0, ts=0, market_id=MARKET, order_id=0, account="t", side=Side.SELL, price=49, qty=1)
        cross = submit(bus, [Request(taker)])  # meets the bids resting at 49
        committed(bus, cross)
        assert trades_of(bus, cross), "the successor does not match"
        assert successor.stats.terms == 1, "the lock lapsed while the successor recovered"
        assert successor.stats.replayed == 300_001
        assert successor.stats.recovery_seconds > ttl_ms / 1000, "recovery was quicker than the TTL: nothing tested"


def test_a_lost_lease_says_whether_the_lock_lapsed_or_was_taken(bus: Bus) -> None:
    lease = Lease(bus, 1000, "me")
    assert lease.acquire()
    bus.client.delete(bus.keys.leader)  # as if it lapsed
    assert not lease.renew()
    assert lease.why_lost().startswith("the lock lapsed: last renewed")
    bus.client.set(bus.keys.leader, "other:1234")
    assert not lease.renew()
    assert lease.why_lost() == "the lock is held by another candidate (other)"


def test_a_lease_whose_release_was_lost_is_won_again_at_once_by_its_holder_only(bus: Bus) -> None:
    lease, other = Lease(bus, 60_000, "me"), Lease(bus, 60_000, "other")
    assert lease.acquire()
    lease.expires = 0.0  # it stepped down, and its release never reached Redis (a restart)
    assert not other.acquire()  # the lock still holds for everyone else
    assert lease.acquire()  # its own token: no need to wait out the TTL
    assert lease.held


# --------------------------------------------------------------------------- (2) takeover


def test_a_warm_standby_replays_only_what_was_committed_after_it_last_followed(
    redis_url: str, bus: Bus, tmp_path: Path
) -> None:
    fleet = Candidates(redis_url, tmp_path)
    fleet.env["MATCHBOX_SNAPSHOT_EVERY"] = str(NEVER)  # a cold takeover would replay everything
    try:
        fleet.spawn()
        first = fleet.wait_for_leader()
        open_market(bus)
        with leader(redis_url, lock_ttl_ms=1000, snapshot_every=NEVER) as standby:
            last = submit(bus, resting(3000))
            at_kill = committed(bus, last)
            wait_until(lambda: standby.standby.position.id == last, 10, "the standby to follow the journal")
            fleet.kill(first)  # SIGKILL: no release, no last commit; the lock lapses after its TTL

            after = submit(bus, resting(500, start=3000))  # not committed until the standby leads
            committed(bus, after, timeout=20)
            assert standby.stats.terms == 1
            assert standby.stats.replayed == 0, "the takeover replayed what the standby had followed"
            assert standby.stats.inputs >= 500  # the uncommitted tail, matched live
            assert standby.standby.restores == 1  # once, at start: nothing to restore at the takeover
            assert standby.standby.followed == at_kill.inputs
    finally:
        fleet.close()
        print(fleet.report())


# --------------------------------------------------------------------------- (3) following


def follow(standby: Standby, offset: Offset) -> None:
    """Let ``standby`` catch up with ``offset``, then check its engine against the committed hash."""
    wait_until(lambda: standby.follow(time.monotonic() + 1) and standby.position.id == offset.id, 10, "catch-up")
    assert standby.engine is not None
    assert offset.hash_at == offset.id
    assert standby.engine.state_hash() == offset.hash


def test_the_standby_restores_only_when_the_journal_was_trimmed_past_it(redis_url: str, bus: Bus) -> None:
    open_market(bus)
    standby = Standby(Bus.connect(redis_url))
    with running_leader(redis_url, snapshot_every=500, snapshots_kept=2, trim_input=True):
        follow(standby, committed(bus, submit(bus, resting(300))))
        assert (standby.restores, standby.followed) == (1, 301)  # no snapshot yet: an empty engine

        # three snapshots pass it; the journal is trimmed behind the older of the two kept
        follow(standby, committed(bus, submit(bus, resting(1500, start=300))))
        assert standby.restores == 2, "the standby should restore the newest snapshot"
        trimmed_at = standby.followed

        # a newer snapshot alone: the journal still holds the standby's position, it replays
        follow(standby, committed(bus, submit(bus, resting(600, start=1800))))
        assert standby.restores == 2
        assert standby.followed == trimmed_at + 600
    standby.bus.close()
