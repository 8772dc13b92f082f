"""Money: conserved, never negative, and the same in every copy.

The events tell the whole story (:func:`fold_money`): each account's last ``BalanceChanged``, the
deposits and withdrawals as the totals they moved, and each collateral market's pot from the last
``PositionChanged`` of every account in it (a binary market holds 100 a YES contract, an odds
market what its backs would be paid). Deposits - withdrawals must equal balances + pots, as the
ledger's invariant says (:mod:`matchbox.engine.ledger`); the engine rebuilt from the journal, each
API instance, the database and the admin API's answers must agree with the events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from matchbox.chaos.checks import Check
from matchbox.chaos.records import Cash
from matchbox.chaos.state import ApiView, EngineView, Money, SqlView, StreamEvent
from matchbox.engine.ledger import CONTRACT
from matchbox.engine.types import BalanceChanged, BalanceReason, MarketCreated, PositionChanged, TickScheme


@dataclass(slots=True)
class Ledger:
    """The money as the events tell it: each account's last balance, deposits and withdrawals,
    and each collateral market's pot from the last position of every account in it."""

    balances: dict[str, Money] = field(default_factory=dict)
    net_deposits: int = 0
    net_by_account: dict[str, int] = field(default_factory=dict)
    pots: dict[str, int] = field(default_factory=dict)
    negative: list[str] = field(default_factory=list)


def fold_money(events: Sequence[StreamEvent]) -> Ledger:
    ledger = Ledger()
    schemes: dict[str, TickScheme] = {}
    positions: dict[tuple[str, str], int] = {}  # (market, account) -> YES held (binary) or paid on a win (odds)
    for e in events:
        event = e.event
        if type(event) is MarketCreated and event.collateral:
            schemes[event.market_id] = event.scheme
        elif type(event) is BalanceChanged:
            total_before = ledger.balances.get(event.account, (0, 0))[0]
            if event.reason in (BalanceReason.DEPOSIT, BalanceReason.WITHDRAW):
                moved = event.total - total_before
                ledger.net_deposits += moved
                ledger.net_by_account[event.account] = ledger.net_by_account.get(event.account, 0) + moved
            ledger.balances[event.account] = (event.total, event.reserved)
            if event.total < 0 or event.reserved < 0 or event.reserved > event.total:
                ledger.negative.append(
                    f"{event.account} at {e.stream_id}: total {event.total}, reserved {event.reserved}"
                )
        elif type(event) is PositionChanged:
            positions[(event.market_id, event.account)] = event.yes
    for (market_id, _), yes in positions.items():
        per_unit = CONTRACT if schemes.get(market_id) is TickScheme.BINARY else 1
        ledger.pots[market_id] = ledger.pots.get(market_id, 0) + yes * per_unit
    return ledger


def check_money(
    events: Sequence[StreamEvent],
    engine: EngineView,
    apis: Sequence[ApiView],
    sql: SqlView,
    cash: Mapping[str, Cash],
) -> Check:
    check = Check("money is conserved, never negative, and every copy agrees")
    ledger = fold_money(events)
    held = sum(total for total, _ in ledger.balances.values())
    pots = sum(ledger.pots.values())
    check.figures = {
        "deposits - withdrawals": ledger.net_deposits,
        "balances": held,
        "held by markets": pots,
        "accounts": len(ledger.balances),
    }
    if ledger.net_deposits != held + pots:
        check.violations.append(
            f"the events: deposits - withdrawals = {ledger.net_deposits}, but balances {held} + markets {pots} "
            f"= {held + pots}"
        )
    check.violations += [f"a balance went negative (or reserved above total): {n}" for n in ledger.negative]
    check.violations += _engine_money(ledger, engine)
    for api in apis:
        check.violations += _compare(f"{api.name} GET /account", api.balances, ledger.balances, missing_ok=True)
    if sql.error:
        check.violations.append(f"the database could not be read: {sql.error}")
    else:
        check.violations += _compare("the database's balances", sql.balances, ledger.balances)
    check.violations += _cash_answers(ledger, cash)
    return check


def _engine_money(ledger: Ledger, engine: EngineView) -> list[str]:
    if engine.error:
        return [f"the engine's state could not be rebuilt from the journal: {engine.error}"]
    found = []
    held = sum(total for total, _ in engine.balances.values()) + sum(engine.pots.values())
    if engine.net_deposits != held:
        found.append(f"the engine: deposits - withdrawals = {engine.net_deposits}, balances + markets = {held}")
    if engine.net_deposits != ledger.net_deposits:
        found.append(f"deposits - withdrawals: the engine has {engine.net_deposits}, the events {ledger.net_deposits}")
    found += _compare("the engine's balances", engine.balances, ledger.balances)
    for market_id in sorted(engine.pots.keys() | ledger.pots.keys()):
        mine, theirs = engine.pots.get(market_id, 0), ledger.pots.get(market_id, 0)
        if mine != theirs:
            found.append(f"market {market_id} holds {mine} in the engine, {theirs} by the events' positions")
    return found


def _compare(
    what: str, seen: Mapping[str, Money], truth: Mapping[str, Money], *, missing_ok: bool = False
) -> list[str]:
    """Where ``seen`` differs from the events' balances (an account the events never funded is 0, 0)."""
    found = []
    for account in sorted(seen.keys() | ({} if missing_ok else truth).keys()):
        mine, expected = seen.get(account), truth.get(account, (0, 0))
        if mine != expected:
            found.append(f"{what}: {account!r} has {_money(mine)}, the events say {_money(expected)}")
    return found


def _money(value: Money | None) -> str:
    return "nothing" if value is None else f"total {value[0]}, reserved {value[1]}"


def _cash_answers(ledger: Ledger, cash: Mapping[str, Cash]) -> list[str]:
    """Each account's deposits - withdrawals in the events lie within what the API answered."""
    found = []
    for account, c in sorted(cash.items()):
        net = ledger.net_by_account.get(account, 0)
        low = c.deposited - c.withdrawn - c.withdraw_unknown
        high = c.deposited + c.deposit_unknown - c.withdrawn
        if not low <= net <= high:
            found.append(
                f"{account!r}: deposits - withdrawals in the events are {net}; the API acknowledged "
                f"{c.deposited} - {c.withdrawn} (unanswered: +{c.deposit_unknown}, -{c.withdraw_unknown})"
            )
    return found
