"""Plot ``mtlschat bench --json`` reports: mtlschat vs the asyncio reference against receivers.

    mtlschat bench --compare -w burst -n 10 -n 50 -n 100 -n 200 --json > bench/results/burst.json
    python bench/plot.py bench/results/burst.json --workload burst --out docs/bench-burst.png

Three panels share the x axis (number of receivers): deliveries/s, latency p99 and the server's
CPU time per delivery (log scale, where the two servers differ by orders of magnitude).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from mtlschat.bench.results import Figure, RunResult, figure, runs_from_report

COLORS = {"mtlschat": "tab:blue", "reference": "tab:orange", "external": "tab:green"}
LABELS = {"mtlschat": "mtlschat (selectors)", "reference": "asyncio reference"}
PANELS = (  # (figure, y scale)
    (figure("deliveries_per_s"), "log"),
    (figure("latency_ms.p99"), "log"),
    (figure("server.cpu_per_delivery_us"), "log"),
)


def human(v: float) -> str:
    """3 significant digits with a k/M suffix: 4466123 -> 4.47M."""
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{suffix}"
    return f"{v:.3g}"


def series(runs: list[RunResult], fig: Figure) -> dict[str, list[tuple[int, float]]]:
    """target -> sorted (receivers, median value over repeated runs)."""
    points: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        v = fig.get(r)
        if v is not None:
            points[r.target][r.receivers].append(v)
    out = {}
    for target, by_n in points.items():
        out[target] = [(n, sorted(vs)[len(vs) // 2]) for n, vs in sorted(by_n.items())]
    return out


def plot(runs: list[RunResult], workload: str, out: Path) -> None:
    """Draw the three panels for ``workload`` into ``out`` (PNG)."""
    runs = [r for r in runs if r.workload == workload]
    if not runs:
        raise SystemExit(f"error: no {workload} runs in the input")
    p = runs[0].params
    what = (
        f"{p.messages:,} messages of {p.size} B, one sender"
        if workload == "burst"
        else f"{p.rate:g} msgs/s for {p.duration:g} s"
        if workload == "paced"
        else workload
    )
    fig, axes = plt.subplots(1, len(PANELS), figsize=(15, 4.6), constrained_layout=True)
    for ax, (panel, scale) in zip(axes, PANELS, strict=True):
        for target, pts in series(runs, panel).items():
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o", color=COLORS.get(target), label=LABELS.get(target, target))
            for x, y in pts:
                ax.annotate(human(y), (x, y), textcoords="offset points", xytext=(0, 6),
                            ha="center", fontsize=8)  # fmt: skip
        ax.set_title(panel.label)
        ax.set_xlabel("receivers")
        ax.set_yscale(scale)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    repeats = max(
        sum(1 for r in runs if r.target == t and r.receivers == n)
        for t, n in {(r.target, r.receivers) for r in runs}
    )
    median = f", median of {repeats} runs" if repeats > 1 else ""
    fig.suptitle(f"{workload}: {what}{median} (2 cores shared by server and load generator)")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def main() -> None:
    """Command line: one or more JSON reports in, one PNG out."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reports", nargs="+", type=Path, help="mtlschat bench --json outputs")
    ap.add_argument("--workload", default="burst")
    ap.add_argument("--out", type=Path, default=Path("docs/bench-burst.png"))
    args = ap.parse_args()
    runs: list[RunResult] = []
    for f in args.reports:
        try:
            runs.extend(runs_from_report(json.loads(f.read_text())))
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"error: {f}: not a bench report ({e})", file=sys.stderr)
            raise SystemExit(2) from None
    plot(runs, args.workload, args.out)
    print(args.out)


if __name__ == "__main__":
    main()
