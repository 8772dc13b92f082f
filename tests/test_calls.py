"""The bus's calls without a server: what each sends, and what its replies mean (bus/calls.py).

The transports (tests/test_bus.py, against a real Valkey) only send these; here the replies are
the values and error objects redis-py hands back, written out.
"""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from redis.exceptions import NoScriptError, ResponseError

from matchbox.bus import calls
from matchbox.bus.aio import AsyncBus
from matchbox.bus.calls import CONNECT_OPTIONS, Call
from matchbox.bus.commit import (
    Batch,
    CommitRefused,
    EngineTooOld,
    Offset,
    RollbackAlarm,
    Uncertified,
    commit_call,
    offset_call,
)
from matchbox.bus.connection import Bus
from matchbox.bus.durability import Durability, DurabilityError
from matchbox.bus.journal import Request, Submission, submit_call
from matchbox.bus.keys import Keys
from matchbox.engine.types import IDS_PER_MS, CancelOrder, PlaceOrder, Side

KEYS = Keys()
SUBMIT = calls.script("submit")


def order() -> PlaceOrder:
    return PlaceOrder(seq=0, ts=0, market_id="m", order_id=0, account="a", side=Side.BUY, price=40, qty=1)


def new(order_id: int = 7, entry: bytes = b"1-0") -> list[object]:
    return [b"new", order_id, entry]


# --------------------------------------------------------------------------- submission


def test_a_submission_is_one_evalsha_and_in_always_durability_a_waitaof_after_it() -> None:
    requests = [Request(order(), "c-1"), Request(CancelOrder(seq=0, ts=0, order_id=3))]
    everysec = submit_call(KEYS, requests, Durability.EVERYSEC, seen_events=12)
    always = submit_call(KEYS, requests, Durability.ALWAYS)
    (evalsha,) = everysec.commands
    assert evalsha[:3] == ("EVALSHA", hashlib.sha1(SUBMIT.source.encode()).hexdigest(), 7)
    assert evalsha[3:10] == (
        KEYS.input,
        KEYS.order_id,
        KEYS.alarm,
        KEYS.certified,
        KEYS.offset,
        KEYS.journal_version,
        KEYS.client_order("a", "c-1"),
    )
    assert evalsha[10:15] == (2, 24 * 3600 * 1000, 12, IDS_PER_MS, 1)  # count, TTL, seen events, version needed
    assert always.commands[1:] == (("WAITAOF", 1, 0, 5000),)
    assert everysec.script == always.script == SUBMIT


def test_submission_replies_read_as_submissions() -> None:
    call = submit_call(KEYS, [Request(order()), Request(order(), "c")], Durability.ALWAYS)
    replies = [[new(), [b"dup", 5, b"0-1"]], [1, 0]]
    assert call.read(replies) == [Submission("new", 7, "1-0"), Submission("dup", 5, "0-1")]


def test_an_unconfirmed_fsync_fails_a_new_command_and_a_repeat_but_not_a_conflict() -> None:
    """A repeat's first submission may never have been confirmed: its answer acknowledges it, so
    it waits as a new one does. A conflict acknowledges nothing."""
    call = submit_call(KEYS, [Request(order())], Durability.ALWAYS)
    for reply in ([new()], [[b"dup", 5, b"0-1"]]):
        with pytest.raises(DurabilityError, match="did not confirm the AOF fsync"):
            call.read([reply, [0, 0]])
    assert call.read([[[b"conflict", 5, b"0-1"]], [0, 0]]) == [Submission("conflict", 5, "0-1")]


def test_waitaof_refused_on_a_server_without_aof_says_how_to_fix_it() -> None:
    call = submit_call(KEYS, [Request(order())], Durability.ALWAYS)
    with pytest.raises(DurabilityError, match="MATCHBOX_DURABILITY=everysec"):
        call.read([[new()], ResponseError("WAITAOF cannot be used when numlocal is set but appendonly is disabled.")])


@pytest.mark.parametrize(
    ("error", "meaning"),
    [
        ("ALARM Redis went back in time", RollbackAlarm),
        ("UNCERTIFIED this Redis restarted", Uncertified),
        ("OLDENGINE these commands need journal version 2", EngineTooOld),
        ("FENCED epoch is 3, committer has 2", CommitRefused),
        ("something else", ResponseError),
    ],
)
def test_a_script_refusal_is_raised_as_what_it_means(error: str, meaning: type[Exception]) -> None:
    for call in (submit_call(KEYS, [Request(order())], Durability.ALWAYS), commit_call(KEYS, 1, Batch("", Offset()))):
        with pytest.raises(meaning):
            call.read([ResponseError(error), [1, 0]][: len(call.commands)])


# --------------------------------------------------------------------------- the NOSCRIPT rule


def test_noscript_loads_the_script_in_the_same_round_trip_once() -> None:
    call = submit_call(KEYS, [Request(order())], Durability.ALWAYS)
    forgotten = [NoScriptError("No matching script"), [0, 0]]
    assert call.missing_script(forgotten)
    assert not call.missing_script([[new()], [1, 0]])
    again = call.reloading()
    assert again.commands == (("SCRIPT LOAD", SUBMIT.source), *call.commands)
    assert again.read([SUBMIT.sha.encode(), [new()], [1, 0]]) == [Submission("new", 7, "1-0")]
    assert not again.missing_script([SUBMIT.sha.encode(), *forgotten])  # no third try: the error is raised
    with pytest.raises(NoScriptError):
        again.read([SUBMIT.sha.encode(), *forgotten])


def test_a_call_that_runs_no_script_never_reloads_one() -> None:
    call: calls.Call[object] = calls.command("GET", "k")
    assert not call.missing_script([NoScriptError("No matching script")])


# --------------------------------------------------------------------------- commits and reads


def test_a_commit_sends_its_events_as_lines_and_touches_only_the_shard_keys() -> None:
    events = [("5-2", b'{"a":1}'), ("5-3", b'{"b":2}')]
    batch = Batch("4-0", Offset("5-0", 2, 3, "h", 9, "5-3", "5-0"), events, stages="7,8")
    (evalsha,) = commit_call(KEYS, 9, batch).commands
    assert evalsha[1:8] == (
        calls.script("commit").sha,
        5,
        KEYS.epoch,
        KEYS.offset,
        KEYS.events,
        KEYS.alarm,
        KEYS.certified,
    )
    assert evalsha[8:] == (9, "4-0", "5-0", 2, 3, "h", "5-0", b'5-2 {"a":1}\n5-3 {"b":2}\n', "7,8")


def test_the_offset_is_read_from_its_hash() -> None:
    call = offset_call(KEYS)
    assert call.commands == (("HGETALL", KEYS.offset),)
    assert call.read([{}]) is None
    raw = {b"id": b"5-0", b"inputs": b"2", b"events": b"3", b"hash": b"h", b"epoch": b"9", b"last_event": b"5-3"}
    assert call.read([raw]) == Offset("5-0", 2, 3, "h", 9, "5-3", "5-0")  # hash_at defaults to the id


@pytest.mark.parametrize(
    ("stored", "strict", "expected"),
    [
        (b"abc", True, True),
        (b"abc", False, True),
        (b"old", True, False),
        (b"old", False, False),
        (None, True, False),
        (None, False, True),
    ],
)
def test_certified_as_guard_lua_judges_it(stored: bytes | None, strict: bool, expected: bool) -> None:
    call = calls.certified(KEYS, strict=strict)
    assert call.read([stored, {"run_id": "abc"}]) is expected


def test_stream_reads() -> None:
    assert calls.read("s", "1-0", count=5).commands == (("XREAD", "COUNT", 5, "STREAMS", "s", "1-0"),)
    blocking = calls.read("s", "1-0", count=5, block_ms=100)
    assert blocking.commands == (("XREAD", "COUNT", 5, "BLOCK", 100, "STREAMS", "s", "1-0"),)
    assert blocking.read([None]) == []
    assert blocking.read([[[b"s", [(b"1-1", {b"f": b"v"})]]]]) == [(b"1-1", {b"f": b"v"})]
    assert calls.last_generated_id("s").read([ResponseError("no such key")]) == "0-0"
    assert calls.last_generated_id("s").read([{"last-generated-id": b"7-1"}]) == "7-1"
    with pytest.raises(ResponseError):
        calls.entries("s").read([ResponseError("WRONGTYPE")])


def test_a_call_is_plain_data() -> None:
    call: Call[str | None] = calls.alarm(KEYS)
    assert call.commands == (("GET", KEYS.alarm),)
    assert (call.read([None]), call.read([b"why"])) == (None, "why")


# --------------------------------------------------------------------------- connecting


def test_both_transports_connect_with_the_same_options() -> None:
    """Timeouts and the idle health check are one setting: the asyncio bus had no health check."""
    sync = Bus.connect("redis://127.0.0.1:1").client.connection_pool.connection_kwargs
    aio = AsyncBus.connect("redis://127.0.0.1:1")
    try:
        for options in (sync, aio.client.connection_pool.connection_kwargs):
            assert {name: options[name] for name in CONNECT_OPTIONS} == CONNECT_OPTIONS
    finally:
        asyncio.run(aio.close())
