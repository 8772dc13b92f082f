"""What a run shows: a live view while it runs, then the report (what was injected, each check
held or violated with its figures) as a table, and with ``--json`` as one JSON object."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from matchbox.chaos.checks import Check
from matchbox.chaos.records import Records

SHOWN = 20  # violations listed per check on the terminal
IN_JSON = 100  # and in the JSON


@dataclass(slots=True)
class LiveView:
    """The progress of a run, drawn by rich.live from the records as they grow."""

    records: Records
    seed: int
    seconds: float
    phase: str = "starting the exchange"
    started: float = field(default_factory=time.monotonic)
    traffic_started: float = 0.0

    def __rich__(self) -> RenderableType:
        r = self.records
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        elapsed = time.monotonic() - (self.traffic_started or self.started)
        clock = f"{min(elapsed, self.seconds):.0f} / {self.seconds:.0f} s" if self.traffic_started else ""
        table.add_row("phase", f"{self.phase}  {clock}")
        table.add_row("requests", _statuses(r.answers.by_status))
        table.add_row("orders acknowledged", f"{len({a.order_id for a in r.acks}):,}")
        faults = ", ".join(f"{k} {v}" for k, v in r.fault_counts().items()) or "none yet"
        last = r.faults[-1] if r.faults else None
        table.add_row("faults", faults + (f"   (last: {last.kind} {last.target})" if last else ""))
        feeds = r.feeds
        table.add_row(
            "feeds",
            f"{len(feeds)} subscribers, {sum(f.connections for f in feeds)} connections, "
            f"{sum(f.resumes for f in feeds)} resumes, {sum(len(f.received) for f in feeds):,} trades seen",
        )
        refused = sum(1 for p in r.probes if not p.held)
        table.add_row("hostile probes", f"{len(r.probes)} done, {refused} not refused as required")
        table.add_row("exits on their own", str(len(r.exits)))
        return Panel(table, title=f"matchbox chaos, seed {self.seed}", expand=False)


def _statuses(by_status: Counter[str]) -> str:
    groups: Counter[str] = Counter()
    for status, count in by_status.items():
        groups[status if not status.isdigit() or status.startswith("5") else status[0] + "xx"] += count
    return f"{sum(by_status.values()):,}  (" + ", ".join(f"{k}: {v:,}" for k, v in sorted(groups.items())) + ")"


# --------------------------------------------------------------------------- the report


@dataclass(slots=True)
class Report:
    seed: int
    seconds: float
    records: Records
    checks: list[Check]
    data_dir: str | None  # kept for a look (--keep), else None

    @property
    def violations(self) -> int:
        return sum(len(c.violations) for c in self.checks)

    def figures(self) -> dict[str, Any]:
        r = self.records
        return {
            "seed": self.seed,
            "seconds": self.seconds,
            "faults_injected": len(r.faults),
            "faults": r.fault_counts(),
            "faults_skipped": dict(r.skipped_faults),
            "requests": r.answers.total,
            "by_status": dict(sorted(r.answers.by_status.items())),
            "orders_acknowledged": len({a.order_id for a in r.acks}),
            "probes": [{"name": p.name, "held": p.held, "observed": p.observed} for p in r.probes],
            "checks": [
                {
                    "name": c.name,
                    "held": c.held,
                    "figures": c.figures,
                    "violations": c.violations[:IN_JSON],
                    "violation_count": len(c.violations),
                    "notes": c.notes,
                }
                for c in self.checks
            ],
            "violations": self.violations,
            "data_dir": self.data_dir,
        }

    def render(self) -> RenderableType:
        r = self.records
        injected = Table(title=f"injected in {self.seconds:g} s (seed {self.seed})")
        injected.add_column("fault")
        injected.add_column("times", justify="right")
        for kind, count in r.fault_counts().items():
            skipped = r.skipped_faults.get(kind, 0)
            injected.add_row(kind, f"{count}" + (f" (+{skipped} skipped)" if skipped else ""))
        injected.add_row("hostile probes", str(len(r.probes)))
        injected.add_row("requests", _statuses(r.answers.by_status))
        checks = Table(title="checks")
        checks.add_column("check")
        checks.add_column("result")
        checks.add_column("figures")
        for c in self.checks:
            result = Text("held", "green") if c.held else Text(f"VIOLATED ({len(c.violations)})", "bold red")
            checks.add_row(c.name, result, ", ".join(f"{k}: {_figure(v)}" for k, v in c.figures.items()))
        details: list[RenderableType] = []
        for c in self.checks:
            details += [Text(f"{c.name}: {note}", "yellow") for note in c.notes]
            for line in c.violations[:SHOWN]:
                details.append(Text(f"✗ {line}", "red"))
            if len(c.violations) > SHOWN:
                details.append(Text(f"✗ … and {len(c.violations) - SHOWN} more of: {c.name}", "red"))
        verdict = (
            Text(f"{self.violations} violation(s)", "bold red")
            if self.violations
            else Text("every check held", "bold green")
        )
        return Group(injected, checks, *details, verdict)


def _figure(value: object) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)
