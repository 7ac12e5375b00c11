"""Human-readable rendering of a benchmark report (rich tables)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mtlschat.bench import COMPARISONS
from mtlschat.bench.suite import metric

# (dotted path, label, decimals): the rows of a summary table.
ROWS: tuple[tuple[str, str, int], ...] = (
    ("deliveries", "deliveries", 0),
    ("lost", "lost", 0),
    ("deliveries_per_s", "deliveries/s", 0),
    ("latency_ms.p50", "latency p50 (ms)", 2),
    ("latency_ms.p99", "latency p99 (ms)", 2),
    ("latency_ms.max", "latency max (ms)", 2),
    ("connect.connections", "connections", 0),
    ("connect.seconds", "time to connect all (s)", 3),
    ("connect.handshakes_per_s", "handshakes/s", 0),
    ("server.cpu_per_delivery_us", "server CPU per delivery (us)", 3),
    ("server.cpu_per_handshake_ms", "server CPU per handshake (ms)", 2),
    ("server.rss_per_conn_kb", "server RSS per connection (KB)", 1),
)


def _fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _groups(runs: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Runs of the same workload and parameters, in order (mtlschat next to the reference)."""
    groups: list[list[dict[str, Any]]] = []
    for r in runs:
        for g in groups:
            if g[0]["workload"] == r["workload"] and g[0]["params"] == r["params"]:
                g.append(r)
                break
        else:
            groups.append([r])
    return groups


def group_table(runs: list[dict[str, Any]]) -> Table:
    """Metrics as rows, one column per server, plus mtlschat/reference when both ran."""
    p = runs[0]["params"]
    title = f"{runs[0]['workload']}: {p['receivers']} receivers"
    if runs[0]["workload"] in ("burst", "hold"):
        title += f" x {p['messages']:,} messages of {p['size']} B"
    elif runs[0]["workload"] == "paced":
        title += f", {p['rate']:g} msgs/s for {p['duration']:g} s"
    t = Table(title=title, title_justify="left")
    t.add_column("")
    for r in runs:
        t.add_column(r["target"], justify="right")
    targets = {r["target"]: r for r in runs}
    pairs = [(a, b) for a, b in COMPARISONS.values() if a in targets and b in targets]
    for top, bottom in pairs:
        t.add_column("ratio" if bottom == "reference" else f"{top} / {bottom}", justify="right")
    for path, label, digits in ROWS:
        values = [metric(r, path) for r in runs]
        if all(v is None for v in values):
            continue
        cells = [_fmt(v, digits) for v in values]
        if path == "lost":
            cells = [c if c in ("-", "0") else f"[bold red]{c}[/]" for c in cells]
        for top, bottom in pairs:
            a, b = metric(targets[top], path), metric(targets[bottom], path)
            cells.append(f"{a / b:.3g}x" if a is not None and b else "")
        t.add_row(label, *cells)
    return t


def print_report(report: dict[str, Any], console: Console) -> None:
    """One table per workload, and every error the load processes saw."""
    for group in _groups(report["runs"]):
        console.print(group_table(group))
    for r in report["runs"]:
        for err in r.get("errors", [])[:5]:
            console.print(f"[yellow]{r['target']} {r['workload']}:[/] {escape(err)}")
