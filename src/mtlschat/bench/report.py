"""Human-readable rendering of a benchmark report (rich tables)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mtlschat.bench import COMPARISONS
from mtlschat.bench.results import FIGURES, BenchReport, RunResult


def _fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _groups(runs: list[RunResult]) -> list[list[RunResult]]:
    """Runs of the same workload and parameters, in order (mtlschat next to the reference)."""
    groups: list[list[RunResult]] = []
    for r in runs:
        for g in groups:
            if g[0].same_workload(r):
                g.append(r)
                break
        else:
            groups.append([r])
    return groups


def _title(run: RunResult) -> str:
    p = run.params
    title = f"{run.workload}: {p.receivers} receivers"
    if run.workload in ("burst", "hold"):
        title += f" x {p.messages:,} messages of {p.size} B"
    elif run.workload in ("paced", "storm"):
        title += f", {p.rate:g} msgs/s for {p.duration:g} s"
    return title


def group_table(runs: list[RunResult]) -> Table:
    """Figures as rows, one column per server, plus mtlschat/reference when both ran."""
    t = Table(title=_title(runs[0]), title_justify="left")
    t.add_column("")
    for r in runs:
        t.add_column(r.target, justify="right")
    targets = {r.target: r for r in runs}
    pairs = [(a, b) for a, b in COMPARISONS.values() if a in targets and b in targets]
    for top, bottom in pairs:
        t.add_column("ratio" if bottom == "reference" else f"{top} / {bottom}", justify="right")
    for fig in FIGURES:
        values = [fig.get(r) for r in runs]
        if all(v is None for v in values):
            continue
        cells = [_fmt(v, fig.digits) for v in values]
        if fig.key == "lost":
            cells = [c if c in ("-", "0") else f"[bold red]{c}[/]" for c in cells]
        for top, bottom in pairs:
            a, b = fig.get(targets[top]), fig.get(targets[bottom])
            cells.append(f"{a / b:.3g}x" if a is not None and b else "")
        t.add_row(fig.label, *cells)
    return t


def storm_table(run: RunResult) -> Table | None:
    """The restart of a ``storm`` run: how long until every member was back, and how the
    members already back were served meanwhile."""
    st = run.storm
    if st is None:
        return None
    t = Table(title=f"{run.target} storm: server restarted under {st.back:,}", title_justify="left")
    t.add_column("")
    t.add_column(run.target, justify="right")
    rows = [
        ("restart: SIGTERM to listening again (s)", _fmt(st.restart_s, 2)),
        ("all members back after (s)", _fmt(st.back_s, 2) if st.back_s is not None else
         f"[bold red]not all: stalled for {run.params.stall:g} s[/]"),
        ("members back", f"{st.back:,}"),
        ("reconnect attempts / failed", f"{st.attempts:,} / {st.failed_attempts:,}"),
        ("probe's latency meanwhile p50 / p99 / max (ms)",
         f"{st.latency_ms.p50:,.1f} / {st.latency_ms.p99:,.1f} / {st.latency_ms.max:,.1f}"),
        ("latency samples meanwhile", f"{st.latency_ms.samples:,}"),
        ("the same, seen by all back in (load processes busy)",
         f"{st.latency_load_ms.p50:,.1f} / {st.latency_load_ms.p99:,.1f} / "
         f"{st.latency_load_ms.max:,.1f}"),
        ("restarted server RSS per connection (KB)", _fmt(st.rss_per_conn_kb, 1)),
        ("restarted server CPU until all back (s)", _fmt(st.server_cpu_s, 2)),
    ]  # fmt: skip
    for label, value in rows:
        t.add_row(label, value)
    return t


def print_report(report: BenchReport, console: Console) -> None:
    """One table per workload, and the first errors each run's load processes saw."""
    for group in _groups(report.runs):
        console.print(group_table(group))
        for run in group:
            if (table := storm_table(run)) is not None:
                console.print(table)
    for r in report.runs:
        if len(r.connect.sources) > 1:
            console.print(f"{r.target} {r.workload}: from {', '.join(r.connect.sources)}")
        for err in r.errors[:5]:
            console.print(f"[yellow]{r.target} {r.workload}:[/] {escape(err)}")
