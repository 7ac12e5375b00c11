"""Smoke test: the TLS micro-benchmark still runs every way (tiny sizes; no timing is asserted)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "tls_micro.py"
WAYS = "sslsocket,bio,records,tcp,tcp16"


def test_tls_micro_runs(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("tls_micro", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tiny = ["--conns", "1", "--rounds", "4", "--repeat", "1", "--size", "40000"]
    module.main(["write", "--ways", WAYS, *tiny])
    module.main(["read", "--ways", "sslsocket,bio", *tiny])
    out = capsys.readouterr().out
    for way in WAYS.split(","):
        assert f"  {way} " in out, out
    assert out.count("x1.000 sslsocket") == 2, out
