"""Smoke test: the room micro-benchmark still runs (tiny sizes; no timing is asserted)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "room_micro.py"


def test_room_micro_runs(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("room_micro", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being defined
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    result = module.run(sessions=5, messages=40, per_round=3, json_share=0.4, label="smoke")
    assert result.messages == 40
    assert result.deliveries == 40 * 4  # every line reaches every peer but its sender
    for nodes in (0, 2):  # one sender, 7 lines a read (the last read shorter)
        burst = module.run(5, 40, 7, 0.0, "burst", nodes, True)
        assert (burst.messages, burst.deliveries) == (40, 40 * 4)
    module.main(["--sessions", "4", "--messages", "20", "--repeat", "1"])
    assert "us/delivery" in capsys.readouterr().out
