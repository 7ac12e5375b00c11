"""bench/plot.py turns --json reports into a PNG (matplotlib, from the bench extra)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .conftest import MakeRun

PLOT = Path(__file__).resolve().parents[2] / "bench" / "plot.py"


def test_plot_writes_a_png(tmp_path: Path, run_result: MakeRun) -> None:
    pytest.importorskip("matplotlib")
    runs = [
        run_result(t, "burst", n, per_s=per_s * n, p99=p99, cpu_us=cpu).to_json()
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
