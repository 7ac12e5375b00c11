"""bench/plot.py turns --json reports into a PNG (matplotlib, from the bench extra)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PLOT = Path(__file__).resolve().parents[2] / "bench" / "plot.py"


def _run(target: str, n: int, per_s: float, p99: float, cpu: float) -> dict[str, object]:
    return {
        "target": target,
        "workload": "burst",
        "params": {"receivers": n, "messages": 1000, "size": 64, "rate": 300.0, "duration": 10.0},
        "deliveries_per_s": per_s,
        "latency_ms": {"p50": p99 / 2, "p99": p99, "max": p99 * 2, "samples": 10},
        "server": {"cpu_per_delivery_us": cpu},
    }


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    runs = [
        _run(t, n, per_s * n, p99, cpu)
        for n in (10, 50)
        for t, per_s, p99, cpu in (("mtlschat", 1e4, 5.0, 0.2), ("reference", 1e2, 900.0, 20.0))
    ]
    report = tmp_path / "r.json"
    report.write_text(json.dumps({"runs": runs}))
    out = tmp_path / "docs" / "plot.png"
    done = subprocess.run(
        [sys.executable, str(PLOT), str(report), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_refuses_a_file_that_is_not_a_report(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    done = subprocess.run(
        [sys.executable, str(PLOT), str(bad), "--out", str(tmp_path / "x.png")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error:")
