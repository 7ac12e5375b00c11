"""Typed benchmark results: the JSON report's layout, ratios, and the printed report."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING

from rich.console import Console

from mtlschat.bench.report import print_report
from mtlschat.bench.results import (
    FIGURES,
    RATIO_FIGURES,
    BenchReport,
    Latency,
    RunResult,
    StormStats,
    figure,
    ratios,
    runs_from_report,
)

if TYPE_CHECKING:
    from .conftest import MakeRun

PAIR = [("mtlschat", "reference")]


def _report(*runs: RunResult) -> BenchReport:
    return BenchReport(
        mtlschat="0.1.0",
        python="3.11",
        time="2026-01-01T00:00:00Z",
        machine={"cpus": 2},
        runs=list(runs),
        ratios=ratios(list(runs), PAIR),
    )


def test_a_run_round_trips_through_the_report_layout(run_result: MakeRun) -> None:
    burst, connect = run_result("mtlschat", lost=3), run_result("reference", "connect")
    data = json.loads(json.dumps(_report(burst, connect).to_json()))
    assert (data["tool"], data["version"]) == ("mtlschat bench", 1)
    first, second = data["runs"]
    # Version 1's layout: delivery figures at the top of a run, nested groups by dotted path.
    assert (first["lost"], first["deliveries"], first["latency_ms"]["p99"]) == (3, 497, 5.0)
    assert first["server"]["cpu_per_delivery_us"] == 1.0
    assert first["params"]["receivers"] == 5
    assert "deliveries" not in second and second["connect"]["connections"] == 5
    assert runs_from_report(data) == [burst, connect]


def test_a_storm_round_trips_and_is_printed(run_result: MakeRun) -> None:
    lat = Latency(p50=3.0, p99=9.0, max=12.0, samples=40)
    storm = StormStats(
        restart_s=2.5, back_s=7.25, back=5, attempts=9, failed_attempts=4, samples=[3, -1],
        latency_ms=lat, latency_load_ms=lat, rss_per_conn_kb=30.0, server_cpu_s=1.5,
    )  # fmt: skip
    run = replace(run_result("mtlschat", "storm"), storm=storm)
    data = json.loads(json.dumps(_report(run).to_json()))
    assert data["runs"][0]["storm"]["back_s"] == 7.25
    assert runs_from_report(data) == [run]
    console = Console(record=True, width=120)
    print_report(_report(run), console)
    text = console.export_text()
    assert "server restarted under 5" in text and "7.25" in text and "9 / 4" in text


def test_a_report_from_a_newer_version_still_reads(run_result: MakeRun) -> None:
    data = run_result("mtlschat").to_json()
    data["connect"]["something_new"] = 1
    data["params"]["knob"] = "x"
    assert RunResult.from_json(data) == run_result("mtlschat")


def test_every_figure_reads_its_key_from_the_json(run_result: MakeRun) -> None:
    run = run_result("mtlschat", lost=1)
    data = run.to_json()
    for fig in FIGURES:
        value: object = data
        for part in fig.key.split("."):
            assert isinstance(value, dict)
            value = value[part]
        assert fig.get(run) == value, fig.key
    assert figure("lost").get(run_result("mtlschat", "connect")) is None


def test_ratios_pair_runs_of_the_same_workload(run_result: MakeRun) -> None:
    runs = [
        run_result("mtlschat", per_s=30.0, cpu_us=0.5),
        run_result("reference", per_s=10.0, cpu_us=20.0),
        run_result("mtlschat", "connect", cpu_us=None),  # no reference run: no ratio
        run_result("reference", receivers=50),  # other parameters: not a pair
    ]
    (ratio,) = ratios(runs, PAIR)
    assert (ratio.workload, ratio.receivers, ratio.name) == ("burst", 5, "mtlschat_over_reference")
    assert ratio.values["deliveries_per_s"] == 3.0
    assert ratio.values["server.cpu_per_delivery_us"] == 0.025
    assert set(ratio.values) == {f.key for f in RATIO_FIGURES}
    assert ratio.to_json()["mtlschat_over_reference"] is ratio.values


def _printed(report: BenchReport) -> str:
    console = Console(record=True, width=160, color_system=None)
    print_report(report, console)
    return console.export_text()


def test_printed_report_has_a_table_per_workload_with_ratios(run_result: MakeRun) -> None:
    text = _printed(
        _report(
            run_result("mtlschat", per_s=30_000.0, p99=2.0),
            run_result("reference", per_s=10_000.0, p99=8.0),
            run_result("mtlschat", "connect", receivers=7),
        )
    )
    assert "burst: 5 receivers x 100 messages of 64 B" in text
    assert "connect: 7 receivers" in text
    burst_table = text[: text.index("connect: 7 receivers")]
    rows = {line.split("│")[1].strip(): line for line in burst_table.splitlines() if "│" in line}
    assert "mtlschat" in burst_table and "reference" in burst_table and "ratio" in burst_table
    assert "30,000" in rows["deliveries/s"] and "3x" in rows["deliveries/s"]
    assert "0.25x" in rows["latency p99 (ms)"]
    assert "2.00" in rows["server CPU per handshake (ms)"]
    connect_table = text[text.index("connect: 7 receivers") :]
    assert "connections" in connect_table and "deliveries/s" not in connect_table


def test_printed_report_shows_loss_and_the_first_errors(run_result: MakeRun) -> None:
    errors = tuple(f"receiver {i} dropped: [bold]reset[/]" for i in range(7))
    text = _printed(_report(run_result("mtlschat", lost=12, errors=errors, cpu_us=None)))
    (lost_row,) = [line for line in text.splitlines() if line.startswith("│ lost")]
    assert "12" in lost_row
    assert "server CPU" not in text  # no server figures: no rows for them
    shown = [line for line in text.splitlines() if line.startswith("mtlschat burst:")]
    assert len(shown) == 5  # the first five of seven
    assert shown[0] == "mtlschat burst: receiver 0 dropped: [bold]reset[/]"  # markup escaped
