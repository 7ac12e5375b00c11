"""``mtlschat bench`` end to end: real server processes, real TLS, real worker processes.

Only correctness is asserted (every message arrived, the report has its shape), never timings.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from mtlschat.bench.pki import prepare_pki
from mtlschat.bench.runner import Workload
from mtlschat.bench.spawn import spawn_server
from mtlschat.bench.suite import Plan, run_plan

if TYPE_CHECKING:  # conftest modules are not importable at run time (--import-mode=importlib)
    from conftest import CLIRunner

SMALL = ("-n", "5", "-m", "200", "--workers", "2")


class _Quiet:
    def stage(self, description: str, total: int) -> None:
        pass

    def update(self, completed: int) -> None:
        pass


def _check_delivery_run(run: dict[str, Any], receivers: int, messages: int) -> None:
    assert run["lost"] == 0, run["errors"]
    assert run["deliveries"] == run["expected"] == receivers * messages
    assert run["gaps"] == run["out_of_order"] == run["dropped"] == 0
    assert run["connect"]["connections"] == receivers
    assert run["connect"]["failed"] == 0
    lat = run["latency_ms"]
    assert set(lat) == {"p50", "p99", "max", "samples"}
    assert 0 <= lat["p50"] <= lat["p99"] <= lat["max"]
    assert run["deliveries_per_s"] > 0


def test_compare_burst_against_both_servers(mtlschat_cli: CLIRunner, tmp_path: Path) -> None:
    out = mtlschat_cli(
        "bench", "--compare", "-w", "burst", *SMALL, "--json", "--pki", tmp_path / "pki",
        timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["tool"] == "mtlschat bench"
    assert [(r["target"], r["workload"]) for r in report["runs"]] == [
        ("mtlschat", "burst"),
        ("reference", "burst"),
    ]
    for run in report["runs"]:
        _check_delivery_run(run, 5, 200)
        server = run["server"]
        assert server["pid"] > 0
        for key in ("cpu_s", "cpu_per_delivery_us", "rss_per_conn_kb", "cpu_per_handshake_ms"):
            assert key in server
    (ratio,) = report["ratios"]
    assert ratio["workload"] == "burst"
    assert ratio["receivers"] == 5
    assert "deliveries_per_s" in ratio["mtlschat_over_reference"]
    # The kept PKI is reused: a second run issues nothing new and still verifies.
    assert sorted(p.name for p in (tmp_path / "pki" / "bench").glob("*.pem"))[:2] == [
        "r00000.pem",
        "r00001.pem",
    ]


def test_compare_floor_runs_both_bare_loops(mtlschat_cli: CLIRunner, tmp_path: Path) -> None:
    # bench/floor_server.py, with and without the chat prefix: every line checked as for
    # mtlschat, and the ratios against each reported.
    out = mtlschat_cli(
        "bench", "--compare-floor", "-w", "burst", *SMALL, "--write-size", "1024", "--json",
        "--pki", tmp_path / "pki", timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert [r["target"] for r in report["runs"]] == ["mtlschat", "floor", "floor-raw"]
    for run in report["runs"]:
        _check_delivery_run(run, 5, 200)
    names = {k for ratio in report["ratios"] for k in ratio if k.startswith("mtlschat_over_")}
    assert names == {"mtlschat_over_floor", "mtlschat_over_floor_raw"}


def test_every_workload_against_a_running_server(tmp_path: Path) -> None:
    pki = prepare_pki(tmp_path / "pki", 6, 2)
    server = spawn_server("mtlschat", pki)
    try:
        base = Workload(receivers=6, workers=2, stall=10.0)
        plan = Plan(
            workloads=[
                replace(base, kind="connect"),
                replace(base, kind="hold", messages=1),
                replace(base, kind="paced", rate=100, duration=0.5, senders=2, verify="full"),
            ],
            targets=["external"],
            addresses=((server.host, server.port),),
            server_pid=server.pid,
            pki_dir=tmp_path / "pki",
        )  # fmt: skip
        report = run_plan(plan, _Quiet())
    finally:
        server.stop()
    data = json.loads(json.dumps(report.to_json()))  # the whole report is JSON
    connect, hold, paced = data["runs"]
    assert connect["connect"]["connections"] == 6
    assert "deliveries" not in connect
    assert connect["server"]["rss_per_conn_kb"] is not None
    _check_delivery_run(hold, 6, 1)  # hold: one broadcast
    _check_delivery_run(paced, 6, 2 * 25)  # 100 msgs/s for 0.5 s, over two senders
    assert data["ratios"] == [] and report.ratios == []


def test_receivers_spread_over_the_nodes_of_a_room(tmp_path: Path) -> None:
    # Two servers stand for two nodes (one Redis would make them one room; connecting is the
    # same): each gets half the receivers.
    pki = prepare_pki(tmp_path / "pki", 4, 1)
    nodes = [spawn_server("mtlschat", pki) for _ in range(2)]
    try:
        plan = Plan(
            workloads=[Workload(kind="connect", receivers=4, workers=1, stall=10.0)],
            targets=["external"],
            addresses=tuple((node.host, node.port) for node in nodes),
            server_pid=nodes[0].pid,
            more_pids=(nodes[1].pid,),  # both nodes' CPU and memory, summed
            pki_dir=tmp_path / "pki",
        )
        (run,) = run_plan(plan, _Quiet()).runs
        assert run.connect.connections == 4
        assert run.address == ",".join(f"{node.host}:{node.port}" for node in nodes)
        for node in nodes:
            _wait_until(lambda node=node: len(_receivers_in(node.log)) == 2, list(node.log))
    finally:
        for node in nodes:
            node.stop()


def _receivers_in(log: Iterable[str]) -> set[str]:
    return {m.group(1) for line in log if (m := re.search(r"connect (r\d+) from", line))}


def _wait_until(condition: Callable[[], bool], about: object) -> None:
    deadline = time.monotonic() + 15.0
    while not condition():
        assert time.monotonic() < deadline, about
        time.sleep(0.05)


def test_a_running_server_needs_its_pki(mtlschat_cli: CLIRunner, tmp_path: Path) -> None:
    out = mtlschat_cli("bench", "localhost:1", "--pki", tmp_path / "empty")
    assert out.returncode == 2
    assert "--pki" in out.stderr
    assert "Traceback" not in out.stderr


def test_bad_flags_are_one_line_errors(mtlschat_cli: CLIRunner) -> None:
    for args in (["--spawn", "--target", "nginx"], ["--spawn", "-w", "fly"], ["--compare", ":7"]):
        out = mtlschat_cli("bench", *args)
        assert out.returncode == 2, args
        assert out.stderr.count("\n") == 1, out.stderr
        assert out.stderr.startswith("mtlschat: error: ")


def test_no_server_is_a_one_line_error(mtlschat_cli: CLIRunner, tmp_path: Path) -> None:
    prepare_pki(tmp_path / "pki", 2, 1)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mtlschat_cli("bench", f"127.0.0.1:{port}", "--pki", tmp_path / "pki", "-n", "2")
    assert out.returncode == 1
    assert "no receiver could connect" in out.stderr
    assert "Traceback" not in out.stderr


def test_hold_spreads_idle_members_over_source_addresses_and_processes(
    mtlschat_cli: CLIRunner, tmp_path: Path
) -> None:
    # The big runs (19,000 and 50,000 idle members, docs/performance.md) scaled down: the
    # receivers come from 127.0.0.2 and 127.0.0.3, in two load processes, on 150 certificates
    # (two sessions each), and all get the broadcast.
    out = mtlschat_cli(
        "bench", "--spawn", "-w", "hold", "-n", "300", "--sources", "2", "--workers", "2",
        "--names", "150", "--json", "--pki", tmp_path / "pki", timeout=180,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    (run,) = json.loads(out.stdout)["runs"]
    _check_delivery_run(run, 300, 1)
    assert run["connect"]["sources"] == ["127.0.0.2", "127.0.0.3"]
    assert run["connect"]["workers"] == 2
    assert run["server"]["rss_per_conn_kb"] > 0
    assert len(list((tmp_path / "pki" / "bench").glob("r*.pem"))) == 150


@pytest.mark.slow
def test_storm_restarts_the_server_and_everyone_comes_back(
    mtlschat_cli: CLIRunner, tmp_path: Path
) -> None:
    # The join storm scaled down: the server restarts under 40 members, who all reconnect with
    # the client's backoff while a sender (back first) paces lines that each must get from
    # its return on, and a probe measures the latency of a member already back in.
    out = mtlschat_cli(
        "bench", "--spawn", "-w", "storm", "-n", "40", "--sources", "2", "--workers", "2",
        "--rate", "5", "--duration", "20", "--json", "--pki", tmp_path / "pki", timeout=240,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    (run,) = json.loads(out.stdout)["runs"]
    assert run["connect"]["connections"] == 40
    assert run["lost"] == 0 and run["gaps"] == 0 and run["out_of_order"] == 0, run["errors"]
    assert 0 < run["deliveries"] <= run["expected"] <= 40 * 100
    storm = run["storm"]
    assert storm["back"] == 40
    assert storm["attempts"] >= 40
    assert storm["restart_s"] > 0 and storm["back_s"] >= 0
    assert storm["latency_ms"]["samples"] > 0
    assert storm["server_cpu_s"] is not None
    assert storm["rss_per_conn_kb"] is not None
    assert run["server"]["pid"] != 0


def test_storm_needs_a_server_it_may_restart(mtlschat_cli: CLIRunner, tmp_path: Path) -> None:
    prepare_pki(tmp_path / "pki", 2, 1)
    out = mtlschat_cli("bench", "127.0.0.1:1", "--pki", tmp_path / "pki", "-w", "storm")
    assert out.returncode == 2
    assert "--spawn" in out.stderr and out.stderr.count("\n") == 1
