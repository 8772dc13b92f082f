"""The ``matchbox`` command."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Matchbox: an exchange core for prediction markets and betting exchanges.",
    no_args_is_help=True,
    add_completion=False,
)
bench_app = typer.Typer(help="Benchmarks that print figures (ratios against a baseline in the same run).")
app.add_typer(bench_app, name="bench")


@bench_app.command("engine")
def bench_engine(
    ops: int = typer.Option(200_000, min=1_000, help="Commands in the generated flow."),
    seed: int = typer.Option(7, help="Seed of the generated flow (same seed, same flow)."),
    repeat: int = typer.Option(3, min=1, help="Timed runs of each side; the best is reported."),
    json_output: bool = typer.Option(False, "--json", help="Also print the figures as one JSON object, last line."),
) -> None:
    """Run a seeded flow through the engine and a bare baseline book; print ops/s, ratio, latency, memory."""
    from matchbox.bench.engine import run

    raise typer.Exit(run(ops=ops, seed=seed, repeat=repeat, json_output=json_output))


def main() -> None:
    app()
