"""Reproduce docs/performance.md: the issue's workloads, mtlschat vs the reference, repeated.

    python bench/compare.py                 # everything, 3 repeats (about 20 minutes here)
    python bench/compare.py --quick         # small sizes, one repeat (a smoke test)
    python bench/compare.py --only burst --repeat 5

Each suite is one ``mtlschat bench --compare ... --json`` process (both servers back to back in the
same invocation, so their ratio is meaningful on a drifting shared machine); reports go to
``bench/results/SUITE-N.json``. The summary prints the median of each figure over the repeats, and
``bench/plot.py`` draws the burst sweep into ``docs/bench-burst.png``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from mtlschat.bench.results import RATIO_FIGURES, RunResult, runs_from_report

HERE = Path(__file__).resolve().parent
PKI = HERE / "results" / "pki"  # kept between runs: 10,000 certificates take a while to issue

SUITES: dict[str, list[str]] = {
    "burst": ["--compare", "-w", "burst", "-n", "10", "-n", "50", "-n", "100", "-n", "200"],
    "paced": ["--compare", "-w", "paced", "-n", "200", "--rate", "300", "--duration", "10"],
    "connect": ["--compare", "-w", "connect", "-n", "1000"],
    "hold": ["--compare", "-w", "hold", "-n", "10000", "--stall", "60"],
}  # fmt: skip
QUICK: dict[str, list[str]] = {
    "burst": ["--compare", "-w", "burst", "-n", "5", "-n", "20", "-m", "500"],
    "paced": ["--compare", "-w", "paced", "-n", "20", "--rate", "100", "--duration", "2"],
    "connect": ["--compare", "-w", "connect", "-n", "100"],
    "hold": ["--compare", "-w", "hold", "-n", "200"],
}


def summarize(reports: list[dict[str, Any]]) -> None:
    """Median of each figure per (workload, receivers, server), and the median ratio."""
    groups: dict[tuple[str, int], dict[str, list[RunResult]]] = {}
    for rep in reports:
        for run in runs_from_report(rep):
            key = (run.workload, run.receivers)
            groups.setdefault(key, {}).setdefault(run.target, []).append(run)
    for (workload, n), by_target in groups.items():
        print(f"\n{workload}, {n} receivers ({len(next(iter(by_target.values())))} runs)")
        for fig in RATIO_FIGURES:
            cells = []
            medians = {}
            for target, runs in by_target.items():
                vals = [v for r in runs if (v := fig.get(r)) is not None]
                if vals:
                    medians[target] = statistics.median(vals)
                    cells.append(f"{target} {medians[target]:,.4g}")
            if not cells:
                continue
            ratio = ""
            if medians.get("reference"):
                ratio = f"  ratio {medians.get('mtlschat', 0) / medians['reference']:.3g}x"
            print(f"  {fig.label:30} " + "  ".join(cells) + ratio)
        lost = sum(r.delivery.lost for runs in by_target.values() for r in runs if r.delivery)
        print(f"  {'lost':30} {lost}")


def main() -> None:
    """Run the suites, save the reports, print the medians, draw the plot."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", action="append", choices=sorted(SUITES), help="repeatable")
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    suites = QUICK if args.quick else SUITES
    args.out.mkdir(parents=True, exist_ok=True)
    reports: list[dict[str, Any]] = []
    for name in args.only or list(suites):
        for i in range(1, (1 if args.quick else args.repeat) + 1):
            cmd = [sys.executable, "-m", "mtlschat", "bench", *suites[name], "--json",
                   "--pki", str(PKI)]  # fmt: skip
            print(f"[{name} {i}] {' '.join(cmd[3:])}", file=sys.stderr, flush=True)
            done = subprocess.run(cmd, stdout=subprocess.PIPE, check=False)
            if done.returncode not in (0, 3):  # 3: messages were lost (the report says which)
                raise SystemExit(f"error: {name} failed (exit {done.returncode})")
            report = json.loads(done.stdout)
            (args.out / f"{name}-{i}.json").write_bytes(done.stdout)
            reports.append(report)
    summarize(reports)
    bursts = sorted(args.out.glob("burst-*.json"))
    if bursts and not args.quick:
        subprocess.run(
            [sys.executable, str(HERE / "plot.py"), *map(str, bursts), "--workload", "burst",
             "--out", str(HERE.parent / "docs" / "bench-burst.png")],
            check=True,
        )  # fmt: skip


if __name__ == "__main__":
    main()
