"""The promises, checked on what was observed and what every part holds at the end.

Each checker is a plain function of plain data (:mod:`~matchbox.chaos.records`,
:mod:`~matchbox.chaos.state`) and returns a :class:`Check`: figures, and one line per violation
naming what broke, where, with the values that disagree. No checker guesses: what a fault makes
uncertain (a 503, an answer lost with the connection) is left out of what must hold, and said.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from matchbox.bus.connection import id_order
from matchbox.chaos.quiet import Quiet
from matchbox.chaos.records import Ack, Answers, Exit, FeedLog, Probe
from matchbox.chaos.state import ApiView, Book, EngineView, SqlView, StreamEvent, TradeRow
from matchbox.engine.types import (
    Event,
    OrderAccepted,
    Rejected,
    TradeExecuted,
)

Figure = int | float | str


@dataclass(slots=True)
class Check:
    name: str
    figures: dict[str, Figure] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def held(self) -> bool:
        return not self.violations


# --------------------------------------------------------------------------- orders


def new_order_id(event: Event) -> int | None:
    """The order id a new order's outcome carries (its OrderAccepted, or the Rejected of its PlaceOrder)."""
    if type(event) is OrderAccepted:
        return event.order_id
    if type(event) is Rejected and event.command == "PlaceOrder" and event.order_id > 0:
        return event.order_id
    return None


def check_orders(acks: Sequence[Ack], events: Sequence[StreamEvent], undecodable: Sequence[str] = ()) -> Check:
    """``undecodable``: the stream ids of entries that are no event (a reader must skip them)."""
    check = Check("every acknowledged order is in the events once, in journal order")
    if undecodable:
        check.violations.append(f"{len(undecodable)} entries of the output stream are not events: {some(undecodable)}")
    outcomes = _outcomes(events, check.violations)
    acked: dict[int, Ack] = {}
    for ack in acks:
        first = acked.setdefault(ack.order_id, ack)
        if first.body != ack.body:
            check.violations.append(
                f"order id {ack.order_id} was acknowledged for two different orders: {first.account} "
                f"{first.body} and {ack.account} {ack.body}"
            )
        outcome = outcomes.get(ack.order_id)
        if outcome is None:
            check.violations.append(
                f"order {ack.order_id} ({ack.account}, {ack.market_id}) was acknowledged with {ack.status}"
                f"{f' as entry {ack.entry_id}' if ack.entry_id else ''} and is not in the events"
            )
        else:
            check.violations += _disagreements(ack, outcome)
    statuses = Counter(a.status for a in acked.values())
    check.figures = {
        "orders acknowledged": len(acked),
        "of them 201/200": statuses[201] + statuses[200],
        "of them 202 pending": statuses[202],
        "of them 422 rejected": statuses[422],
        "new orders in the events": len(outcomes),
        "accepted in the events": sum(1 for e in outcomes.values() if type(e.event) is OrderAccepted),
        "events": len(events),
    }
    return check


def _outcomes(events: Sequence[StreamEvent], violations: list[str]) -> dict[int, StreamEvent]:
    """Each new order's outcome by order id; what breaks the stream's own order goes to ``violations``
    (event numbers with a gap or a repeat, an order id with two outcomes or going back)."""
    outcomes: dict[int, StreamEvent] = {}
    highest, previous_n = 0, None
    for e in events:
        if previous_n is not None and e.n != previous_n + 1:
            violations.append(f"event numbers go from {previous_n} to {e.n} at {e.stream_id}")
        previous_n = e.n
        order_id = new_order_id(e.event)
        if order_id is None:
            continue
        first = outcomes.get(order_id)
        if first is not None:
            violations.append(
                f"order id {order_id} has two outcomes: {type(first.event).__name__} at {first.stream_id} "
                f"({_who(first.event)}) and {type(e.event).__name__} at {e.stream_id} ({_who(e.event)})"
            )
            continue
        if order_id < highest:
            violations.append(f"order id {order_id} at {e.stream_id} comes after order id {highest}")
        outcomes[order_id] = e
        highest = max(highest, order_id)
    return outcomes


def _who(event: Event) -> str:
    return f"{getattr(event, 'account', '?')} in {getattr(event, 'market_id', '?')}"


def _disagreements(ack: Ack, outcome: StreamEvent) -> list[str]:
    event = outcome.event
    found: list[str] = []
    where = f"order {ack.order_id}: the answer ({ack.status})"
    if ack.entry_id and outcome.in_id != ack.entry_id:
        found.append(f"{where} named entry {ack.entry_id}; its outcome at {outcome.stream_id} is of {outcome.in_id}")
    account, market_id = getattr(event, "account", ""), getattr(event, "market_id", "")
    if (account, market_id) != (ack.account, ack.market_id):
        found.append(f"{where} was for {ack.account} in {ack.market_id}; the events say {account} in {market_id}")
    accepted = type(event) is OrderAccepted
    if ack.accepted is not None and ack.accepted != accepted:
        said = "accepted" if ack.accepted else "rejected"
        found.append(f"{where} said {said}; the events say {type(event).__name__} at {outcome.stream_id}")
    return found


# --------------------------------------------------------------------------- trades


def stream_trades(events: Sequence[StreamEvent]) -> tuple[dict[int, TradeRow], list[str]]:
    """The trades in the stream by id, and what is wrong with their ids (a repeat, one going back)."""
    found: dict[int, TradeRow] = {}
    problems: list[str] = []
    previous = None
    for e in events:
        t = e.event
        if type(t) is not TradeExecuted:
            continue
        if t.trade_id in found:
            problems.append(f"trade id {t.trade_id} appears twice in the stream (again at {e.stream_id})")
            continue
        if previous is not None and t.trade_id < previous:  # ids only grow (not always by one: see the engine)
            problems.append(f"trade id {t.trade_id} at {e.stream_id} comes after trade id {previous}")
        previous = t.trade_id
        found[t.trade_id] = (t.market_id, t.price, t.qty, t.maker_order_id, t.taker_order_id, e.n)
    return found, problems


def check_trades(events: Sequence[StreamEvent], sql: SqlView, dead_letters: Mapping[str, int]) -> Check:
    check = Check("the database's trades are the stream's, none twice")
    stream, problems = stream_trades(events)
    check.violations += problems
    check.figures = {"trades in the stream": len(stream)}
    check.figures |= {f"dead-lettered ({group})": count for group, count in dead_letters.items()}
    if sql.error:
        check.violations.append(f"the database could not be read: {sql.error}")
        return check
    check.figures |= {"trades in the database": len(sql.trades), "trades analytics counted": len(sql.analytics_trades)}
    for trade_id in sorted(stream.keys() - sql.trades.keys()):
        market, *_, n = stream[trade_id]
        check.violations.append(f"trade {trade_id} ({market}, event {n}) is in the stream, not in the database")
    for trade_id in sorted(sql.trades.keys() - stream.keys()):
        check.violations.append(f"trade {trade_id} is in the database, not in the stream: {sql.trades[trade_id]}")
    for trade_id in sorted(stream.keys() & sql.trades.keys()):
        if stream[trade_id] != sql.trades[trade_id]:
            check.violations.append(
                f"trade {trade_id}: the stream has {stream[trade_id]}, the database {sql.trades[trade_id]} "
                "(market, price, qty, maker order, taker order, n)"
            )
    missing = sorted(stream.keys() - sql.analytics_trades)
    extra = sorted(sql.analytics_trades - stream.keys())
    if missing:
        check.violations.append(f"analytics did not count {len(missing)} trade(s) of the stream: {some(missing)}")
    if extra:
        check.violations.append(f"analytics counted {len(extra)} trade(s) the stream does not have: {some(extra)}")
    return check


def some(values: Sequence[object], shown: int = 8) -> str:
    more = f" … ({len(values) - shown} more)" if len(values) > shown else ""
    return ", ".join(str(v) for v in values[:shown]) + more


# --------------------------------------------------------------------------- instances


def check_instances(
    apis: Sequence[ApiView],
    stream_end: str,
    engine: EngineView,
    answers: Answers,
    own: Answers,
    windows: Sequence[tuple[float, float]],
    quiet: Quiet,
) -> Check:
    """``answers``: the traffic's and hostile clients'; ``own``: the run's reads at the end (their
    503s are the waiting for quiet, so only their other 5xx count)."""
    check = Check("every API instance is ready, at the end, with the engine's books; no 5xx")
    if not quiet.reached:
        check.violations.append(f"no quiet within {quiet.seconds:g} s; still behind: {'; '.join(quiet.behind)}")
    for api in apis:
        if api.ready:
            check.violations.append(f"{api.name} GET /ready: {api.ready}")
        if api.tail_position != stream_end:
            said = "" if api.ready else " (while GET /ready answers 200)"
            check.violations.append(
                f"{api.name}'s tail is at {api.tail_position}; the stream ends at {stream_end}{said}"
            )
        if not engine.error:
            check.violations += _books(api.name, api.books, engine.books)
    _tally(check, answers, own, windows)
    return check


def _tally(check: Check, answers: Answers, own: Answers, windows: Sequence[tuple[float, float]]) -> None:
    """The 5xx answers into ``check``: a 503 within a fault's window is allowed, any other 5xx is not."""
    check.violations += _server_errors((answers, own))
    unavailable = [e for e in answers.server_errors if e.status == 503]
    in_faults = sum(1 for e in unavailable if any(start <= e.at <= end for start, end in windows))
    unanswered = sum(n for status, n in answers.by_status.items() if not status.isdigit())
    check.figures = {
        "requests": answers.total,
        "5xx other than 503": sum(1 for a in (answers, own) for e in a.server_errors if e.status != 503),
        "503": len(unavailable),
        "503 during faults": in_faults,
        "no answer (instance down)": unanswered,
    }
    check.notes += [f"no answer, {name}: e.g. {sample}" for name, sample in sorted(answers.unanswered.items())]
    if unavailable:
        rest = len(unavailable) - in_faults
        check.notes.append(
            f"{len(unavailable)} answers were 503, {in_faults} of them while Redis was down or a leader failing "
            "over (expected and allowed)"
            + (f"; {rest} outside those windows (the engine slow to answer)" if rest else "")
        )


def _books(who: str, books: Mapping[str, Book], truth: Mapping[str, Book]) -> list[str]:
    found = []
    for market_id, (bids, asks) in sorted(truth.items()):
        seen = books.get(market_id)
        if seen is None:
            found.append(f"{who} has no book of {market_id}")
            continue
        for side, mine, expected in (("bids", seen[0], bids), ("asks", seen[1], asks)):
            if mine != expected:
                found.append(
                    f"{who}'s {market_id} {side} differ from the engine's: {_levels(mine)} vs {_levels(expected)}"
                )
    return found


def _levels(levels: Sequence[tuple[float | int, int, int]]) -> str:
    return some([f"{p}x{q}({o})" for p, q, o in levels], 5) or "empty"


def _server_errors(answers: Sequence[Answers]) -> list[str]:
    grouped: dict[tuple[str, str, str, int], list[str]] = defaultdict(list)
    for a in answers:
        for e in a.server_errors:
            if e.status != 503:
                grouped[(e.instance, e.method, e.path, e.status)].append(e.body)
    return [
        f"{instance} {method} {path} answered {status} x{len(bodies)} (e.g. {bodies[0]!r})"
        for (instance, method, path, status), bodies in sorted(grouped.items())
    ]


# --------------------------------------------------------------------------- feeds


def check_feeds(feeds: Sequence[FeedLog], events: Sequence[StreamEvent]) -> Check:
    check = Check("every WebSocket client that resumed saw each trade of its channel once, in order")
    by_market: dict[str, list[str]] = defaultdict(list)
    for e in events:
        if type(e.event) is TradeExecuted:
            by_market[e.event.market_id].append(e.stream_id)
    judged = [f for f in feeds if f.connections]
    for feed in judged:
        check.violations += _feed(feed, by_market[feed.market_id])
    check.figures = {
        "subscribers": len(judged),
        "connections": sum(f.connections for f in judged),
        "resumes": sum(f.resumes for f in judged),
        "trade messages": sum(len(f.received) for f in judged),
        "errors and abnormal closes seen": sum(len(f.errors) for f in judged),
    }
    seen = Counter(error.partition(": ")[2] for f in judged for error in f.errors)
    check.notes += [f"seen {count}x: {error}" for error, count in seen.most_common(5)]
    return check


def _owed(feed: FeedLog, trades: Sequence[str]) -> list[str]:
    """The trades a subscriber must have seen: every one after its first cursor (or, if it never
    had one, from the first it received)."""
    if feed.start_after:
        after = id_order(feed.start_after)
        return [t for t in trades if id_order(t) > after]
    first = feed.received[0] if feed.received else None
    return list(trades[trades.index(first) :]) if first in trades else []


def _out_of_order(received: Sequence[str]) -> int | None:
    """The first position whose id is below the one before it."""
    return next((i for i in range(1, len(received)) if id_order(received[i]) < id_order(received[i - 1])), None)


def _feed(feed: FeedLog, trades: Sequence[str]) -> list[str]:
    expected = _owed(feed, trades)
    if feed.received == expected:
        return []
    who = f"{feed.name} (trades:{feed.market_id}, {feed.connections} connections, {feed.resumes} resumes)"
    counts = Counter(feed.received)
    known = set(trades)
    missing = [t for t in expected if t not in counts]
    twice = [t for t, n in counts.items() if n > 1]
    foreign = [t for t in counts if t not in known]
    late = _out_of_order(feed.received)
    found = []
    if missing:
        found.append(f"{who} missed {len(missing)} of {len(expected)} trades: {some(missing)}")
    if twice:
        found.append(f"{who} got {len(twice)} trades more than once: {some(twice)}")
    if foreign:
        found.append(f"{who} got {len(foreign)} ids that are no trade of its market: {some(foreign)}")
    if late is not None:
        found.append(f"{who} got {feed.received[late]} after {feed.received[late - 1]}: out of order")
    if not found:
        found.append(f"{who} got {len(feed.received)} trades, {len(expected)} expected")
    if feed.errors:
        found[-1] += f"; it saw: {some(feed.errors, 3)}"
    return found


# --------------------------------------------------------------------------- hostile clients, processes


def check_hostile(probes: Sequence[Probe]) -> Check:
    check = Check("hostile clients are refused")
    failed = [p for p in probes if not p.held]
    check.violations = [f"{p.name} on {p.instance}: {p.observed} (required: {p.expected})" for p in failed]
    check.figures = {"probes": len(probes), "as required": len(probes) - len(failed)}
    check.notes = [f"{p.name}: {p.observed}" for p in probes if p.held and p.observed.startswith("not judged")]
    return check


def check_processes(exits: Sequence[Exit]) -> Check:
    check = Check("no process died on its own")
    check.figures = {"exits on their own": len(exits)}
    check.violations = [f"{e.name} exited with code {e.code}: {last_words(e.log_tail)} (log: {e.log})" for e in exits]
    return check


_ERROR = re.compile(r"((?:\w+\.)*\w+(?:Error|Exception|Detected)\b.*?)\s*[│|]?\s*$")
_WHERE = re.compile(r"(\S+\.py):(\d+) in (\w+)|File \"(\S+\.py)\", line (\d+), in (\w+)")


def last_words(log_tail: str) -> str:
    """What a dead process's log says killed it: the exception and where (the innermost frame
    of its traceback), else its last lines."""
    lines = [line.strip(" │|") for line in log_tail.splitlines() if line.strip(" │|╰─")]
    error = next((m[1] for line in reversed(lines) if (m := _ERROR.match(line))), None)
    places = [m for line in lines for m in _WHERE.finditer(line)]
    if error is None:
        return " | ".join(lines[-4:])[-400:] or "(nothing in its log)"
    if not places:
        return error
    place = places[-1]
    path, line, function = (place[1], place[2], place[3]) if place[1] else (place[4], place[5], place[6])
    return f"{error} (in {function}, {path.split('/src/')[-1]}:{line})"
