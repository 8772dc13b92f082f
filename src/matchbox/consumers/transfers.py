"""The transfer relay: the second half of every transfer of cash between shards, exactly once.

A transfer is a saga through two journals. ``TransferOut`` on the shard the cash leaves takes it
from the account there (``TransferredOut``); this relay, a consumer group on that shard's output
stream, sends ``TransferIn`` with the same transfer id to the shard it goes to, which pays it in
(``TransferredIn``). The target refuses a transfer id it has seen (DUPLICATE_TRANSFER), so the
relay may send one as often as it likes: after a crash between its submission and its XACK, on
a reclaim, or replaying its group from the start. Any other refusal there (``TransferRefused``)
is read by that shard's relay, which pays the cash back where it came from (the transfer id with
``:return``).

What it promises if it dies at any line: an entry is acknowledged only after its ``TransferIn``
is in the target's journal (durable as the exchange is configured), so nothing is skipped; what
is sent twice is refused once paid. A target that cannot take it (down, failing over, no
replica) is waited for, inside the batch, until the relay is stopped: a transfer is never
dead-lettered for the target's outage.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from matchbox.bus.codec import CodecError, decode_event
from matchbox.bus.commit import Uncertified
from matchbox.bus.connection import Bus, Entry
from matchbox.bus.durability import Durability, DurabilityError
from matchbox.bus.journal import Journal, Request
from matchbox.bus.outage import REDIS_DOWN, Backoff
from matchbox.consumers.runner import Poison
from matchbox.engine.ids import RETURN_SUFFIX
from matchbox.engine.types import RejectReason, TransferIn, TransferredOut, TransferRefused

log = logging.getLogger(__name__)

TARGET_DOWN = (*REDIS_DOWN, DurabilityError, Uncertified)


class TransferRelay:
    """A :class:`~matchbox.consumers.runner.Sink` that sends each transfer taken out on ``shard`` to
    its target's journal (``journal_of(target)``), and each refused one back."""

    def __init__(
        self, shard: int, journal_of: Callable[[int], Journal], stop: threading.Event, group: str = "transfers"
    ) -> None:
        self.shard = shard
        self.group = group
        self.journal_of = journal_of
        self.stop = stop
        self.sent = 0  # TransferIn commands submitted (repeats included)

    def position(self) -> str | None:
        return None  # nothing tracked but the group: a group made again starts over (repeats are refused)

    def apply(self, entries: Sequence[Entry], floor: str | None = None) -> None:
        outgoing: dict[int, list[Request]] = {}
        for entry_id, fields in entries:
            try:
                event = decode_event(fields.get(b"event", b"")).event
            except CodecError as exc:
                raise Poison(f"entry {entry_id.decode(errors='replace')}: {exc}") from None
            match event:
                case TransferredOut():
                    pay_in = TransferIn(
                        seq=0,
                        ts=0,
                        account=event.account,
                        amount=event.amount,
                        transfer_id=event.transfer_id,
                        from_shard=self.shard,
                    )
                    outgoing.setdefault(event.to_shard, []).append(Request(pay_in))
                case TransferRefused() if event.reason is not RejectReason.DUPLICATE_TRANSFER:
                    if event.transfer_id.endswith(RETURN_SUFFIX):  # a return refused where it came from
                        log.error("a transfer's return was refused: an operator must move it", extra=_fields(event))
                        continue
                    back = TransferIn(
                        seq=0,
                        ts=0,
                        account=event.account,
                        amount=event.amount,
                        transfer_id=event.transfer_id + RETURN_SUFFIX,
                        from_shard=self.shard,
                    )
                    outgoing.setdefault(event.from_shard, []).append(Request(back))
                    log.warning("a transfer was refused; paying it back", extra=_fields(event))
        for target, requests in outgoing.items():
            self._submit(target, requests)

    def _submit(self, target: int, requests: list[Request]) -> None:
        """Into the target's journal, waiting out its outage (until stopped: then the batch stays pending)."""
        backoff = Backoff()
        while True:
            try:
                self.journal_of(target).submit_many(requests)
                self.sent += len(requests)
                return
            except TARGET_DOWN as exc:
                if self.stop.is_set():
                    raise
                delay = backoff.next()
                log.warning("shard %d cannot take transfers (%s); retrying in %.1f s", target, exc, delay)
                self.stop.wait(delay)


def journal_cache(connect: Callable[[int], Bus], durability: Durability) -> Callable[[int], Journal]:
    """Each shard's journal, its bus made by ``connect`` on first use: a relay's targets."""
    journals: dict[int, Journal] = {}

    def journal_of(shard: int) -> Journal:
        if shard not in journals:
            journals[shard] = Journal(connect(shard), durability)
        return journals[shard]

    return journal_of


def _fields(event: TransferRefused) -> dict[str, object]:
    return {
        "account": event.account,
        "amount": event.amount,
        "transfer_id": event.transfer_id,
        "reason": event.reason.name,
    }
