"""What the run observed from the outside, as plain data: acknowledgements, answers, deposits,
feeds, faults and hostile probes. The checks read these; nothing here talks to the exchange."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True, slots=True)
class Ack:
    """An order the API acknowledged with an id (a 201/200/202 with an order, or a 422 rejection)."""

    order_id: int
    account: str
    market_id: str
    status: int  # the HTTP status (a batch item's own)
    entry_id: str | None  # the journal entry, when the answer named it
    body: str  # the order as sent (canonical JSON): two acks of one id must be one order

    @property
    def accepted(self) -> bool | None:
        """True: the answer said the engine accepted it; False: rejected; None: pending (202)."""
        if self.status in (200, 201):
            return True
        return False if self.status == 422 else None


@dataclass(frozen=True, slots=True)
class ServerError:
    """A 5xx answer: when (monotonic), from which instance, to what."""

    at: float
    instance: str
    method: str
    path: str
    status: int
    body: str


@dataclass(slots=True)
class Answers:
    """Every HTTP answer by status (or the exception's name when none came), and the 5xx ones."""

    by_status: Counter[str] = field(default_factory=Counter)
    server_errors: list[ServerError] = field(default_factory=list)
    unanswered: dict[str, str] = field(default_factory=dict)  # an exception's name -> its first message

    def add(self, instance: str, method: str, path: str, status: int | None, error: str, body: str) -> None:
        self.by_status[str(status) if status is not None else error] += 1
        if status is None:
            self.unanswered.setdefault(error, f"{instance} {method} {path}: {body}"[:200])
        if status is not None and status >= 500:
            self.server_errors.append(ServerError(time.monotonic(), instance, method, path, status, body[:200]))

    @property
    def total(self) -> int:
        return sum(self.by_status.values())


@dataclass(slots=True)
class Cash:
    """One account's deposits and withdrawals as the admin API answered them, in cents."""

    deposited: int = 0  # answered 200
    withdrawn: int = 0
    deposit_unknown: int = 0  # no clear answer (503, timeout, broken connection): may or may not be in
    withdraw_unknown: int = 0

    def answered(self, what: Literal["deposit", "withdraw"], amount: int, status: int | None) -> None:
        """Count a deposit or withdrawal by its answer: a 200 went in; a 5xx or no answer may have."""
        sure = amount if status == 200 else 0
        unsure = amount if status is None or status >= 500 else 0
        if what == "deposit":
            self.deposited += sure
            self.deposit_unknown += unsure
        else:
            self.withdrawn += sure
            self.withdraw_unknown += unsure


@dataclass(slots=True)
class FeedLog:
    """One WebSocket subscriber of a market's trades channel, over all its connections."""

    name: str
    market_id: str
    start_after: str = ""  # the stream id it first asked to resume after: it must see every trade past it
    received: list[str] = field(default_factory=list)  # the trade messages' stream ids, in arrival order
    connections: int = 0
    resumes: int = 0  # connections that asked for ?last_id=
    errors: list[str] = field(default_factory=list)  # error messages and abnormal closes, as seen

    @property
    def cursor(self) -> str:
        return self.received[-1] if self.received else self.start_after


@dataclass(slots=True)
class Fault:
    """One injected fault; ``window`` is when 503s and refused connections are its doing."""

    kind: str
    target: str
    started: float  # monotonic
    ended: float = 0.0  # when the process was back (or continued)
    detail: str = ""

    def window(self, grace_s: float) -> tuple[float, float]:
        return self.started, (self.ended or self.started) + grace_s


@dataclass(frozen=True, slots=True)
class Probe:
    """A hostile client's attempt and how the exchange answered it."""

    name: str
    instance: str
    held: bool  # answered as the hardening rules require
    observed: str  # what came back
    expected: str


@dataclass(slots=True)
class Exit:
    """A process that exited on its own (not by an injected fault)."""

    name: str
    code: int | None
    at: float
    log_tail: str  # the last lines of its log
    log: str = ""  # the log's path


@dataclass(slots=True)
class Records:
    """Everything observed during one run."""

    answers: Answers = field(default_factory=Answers)  # of the traffic and the hostile clients
    check_answers: Answers = field(default_factory=Answers)  # of the run's own reads at the end
    acks: list[Ack] = field(default_factory=list)
    cash: dict[str, Cash] = field(default_factory=dict)
    feeds: list[FeedLog] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    skipped_faults: Counter[str] = field(default_factory=Counter)  # not possible at their time
    probes: list[Probe] = field(default_factory=list)
    exits: list[Exit] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)  # account -> a working API key

    def cash_of(self, account: str) -> Cash:
        return self.cash.setdefault(account, Cash())

    def fault_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(f.kind for f in self.faults).items()))
