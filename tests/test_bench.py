"""The engine benchmark: its baseline is a correct book, its flow is the one described, its CLI works.

These check the benchmark's correctness, never its speed: speed is printed, not asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from matchbox.bench.engine import BaselineBook, baseline_fills, engine_fills, generate, measure
from matchbox.cli import app
from matchbox.engine.types import CancelOrder, PlaceOrder


def test_baseline_sweeps_the_seed_ladder() -> None:
    book = BaselineBook()
    for order_id, price in enumerate((490, 500, 510), start=1):
        book.place(order_id, False, price, 10)
    book.place(4, True, 510, 25)
    assert book.fills == [(1, 4, 490, 10), (2, 4, 500, 10), (3, 4, 510, 5)]
    assert book.best() == (None, 510)


def test_baseline_lazy_cancel_skips_husks() -> None:
    book = BaselineBook()
    book.place(1, False, 50, 5)
    book.place(2, False, 50, 5)
    assert book.cancel(1)
    assert not book.cancel(1)
    book.place(3, True, 50, 7)
    assert book.fills == [(2, 3, 50, 5)]
    assert book.best() == (50, None)  # the buy's remainder of 2 rests


def test_flow_has_the_described_mix_and_only_live_cancels() -> None:
    flow = generate(20_000, seed=3)
    assert len(flow.commands) == len(flow.ops) == 20_000
    assert 0.22 < flow.cancels / 20_000 < 0.28
    assert 0.17 < flow.aggressive / 20_000 < 0.23
    assert sum(isinstance(c, PlaceOrder) for c in flow.commands) == flow.places
    assert sum(isinstance(c, CancelOrder) for c in flow.commands) == flow.cancels
    assert [c.seq for c in flow.commands] == list(range(1, 20_001))
    assert generate(2_000, seed=3).commands == flow.commands[:2_000]  # seeded: the same flow again


def test_engine_and_baseline_make_the_same_fills() -> None:
    flow = generate(20_000, seed=11)
    fills, events = engine_fills(flow.commands)
    assert fills, "the flow should trade"
    assert fills == baseline_fills(flow.ops)
    assert events > len(flow.commands)


def test_measure_reports_consistent_figures() -> None:
    figures = measure(5_000, seed=5, repeat=1)
    assert figures.fills_match
    assert figures.ops == 5_000
    assert figures.engine_ops_per_s > 0
    assert abs(figures.ratio - figures.engine_ops_per_s / figures.baseline_ops_per_s) < 0.01
    assert 0 < figures.engine_p50_ns <= figures.engine_p99_ns
    assert figures.engine_peak_bytes > 0


def test_cli_prints_json_on_its_last_line() -> None:
    result = CliRunner().invoke(app, ["bench", "engine", "--ops", "3000", "--repeat", "1", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["ops"] == 3000
    assert figures["fills_match"] is True
    assert {"engine_ops_per_s", "baseline_ops_per_s", "ratio", "engine_p99_ns", "engine_peak_bytes", "fills"} <= set(
        figures
    )


@pytest.mark.e2e  # starts a Valkey, an engine, an API and the baseline gateway as processes
def test_bench_latency_runs_both_and_breaks_matchbox_down_by_stage() -> None:
    """The benchmark works end to end: every target (the trivial server that measures the load
    generator's own cost, the baseline, Matchbox) took the flow, the ratios are theirs, and every
    stage of an order was counted. (Its figures are printed, never asserted.)"""
    done = subprocess.run(
        [sys.executable, "-m", "matchbox", "bench", "latency", "--seconds", "1", "--rate", "50", "--json"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    for run in ("closed_trivial", "closed_baseline", "closed_matchbox", "open_baseline", "open_matchbox"):
        assert figures[run]["orders_per_s"] > 0, figures
        assert figures[run]["errors"] == 0, figures
    ratio = figures["closed_matchbox"]["orders_per_s"] / figures["closed_baseline"]["orders_per_s"]
    assert abs(figures["closed_ratio"] - ratio) < 1e-9
    assert all(p50 is not None for p50, _ in figures["stages"].values()), figures["stages"]
