"""``matchbox bench recovery`` and ``bench failover --resting``: their figures are consistent and their books right.

These check the benchmarks' correctness, never their speed: speed is printed, not asserted.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from matchbox.bench import failover
from matchbox.bench.recovery import _rebuild, generate, measure
from matchbox.cli import app

pytestmark = pytest.mark.e2e  # the recovery benchmark: snapshots restored against a rebuild


def test_the_book_rests_whole_and_the_tail_mixes_what_recovery_replays() -> None:
    book = generate(3000, 400, seed=3)
    engine = _rebuild(book.commands)
    assert len(engine.orders) == book.orders == 3000  # nothing traded: every order rests
    assert len(engine.books) == 10
    kinds = [json.loads(fields[b"c"])["type"] for _, fields in book.tail]
    assert set(kinds) == {"PlaceOrder", "CancelOrder"}
    assert generate(3000, 400, seed=3).commands == book.commands  # seeded


def test_measure_restores_the_same_state_and_reports_the_ratio() -> None:
    figures = measure(4000, 500, repeat=1)
    assert (figures.orders, figures.commands, figures.replay_entries) == (4000, 4010, 500)
    assert figures.ratio == pytest.approx(figures.rebuild_s / figures.restore_s, rel=0.05)
    assert figures.snapshot_bytes > 4000 * 10


def test_cli_prints_json_on_its_last_line() -> None:
    result = CliRunner().invoke(
        app, ["bench", "recovery", "--orders", "3000", "--tail", "300", "--repeat", "1", "--json"]
    )
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert result.exit_code == (0 if figures["ratio"] >= figures["required_ratio"] else 1), result.output
    assert figures["orders"] == 3000
    assert figures["gc_thresholds"] == [50_000, 50, 100]  # as the engine runs


def test_failover_with_a_resting_book_waits_for_warm_standbys(capsys: pytest.CaptureFixture[str]) -> None:
    assert failover.run(kills=1, lock_ttl_ms=500, resting=3000, json_output=True) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["resting"] == 3000
    assert len(figures["failover_ms"]) == 1
