"""Pieces of a benchmark session that need no network: /proc, workloads."""

from __future__ import annotations

import os

import pytest

from mtlschat.bench.procstat import cpu_seconds, rss_bytes
from mtlschat.bench.runner import BenchError, Workload, percentile
from mtlschat.bench.suite import default_server_name, workloads_for


def test_server_name_for_loopback_is_localhost() -> None:
    assert default_server_name("127.0.0.1") == "localhost"
    assert default_server_name("::1") == "localhost"
    assert default_server_name("chat.example.org") == "chat.example.org"


def test_proc_readings_of_this_process() -> None:
    assert cpu_seconds(os.getpid()) > 0
    assert rss_bytes(os.getpid()) > 1024 * 1024


def test_percentile() -> None:
    values = sorted(float(i) for i in range(1, 101))
    assert percentile(values, 0.5) == 51.0
    assert percentile(values, 0.99) == 100.0
    assert percentile([], 0.5) == 0.0


@pytest.mark.parametrize(
    "wl",
    [
        Workload(kind="nope"),
        Workload(receivers=0),
        Workload(size=10),
        Workload(kind="paced", rate=0),
        Workload(verify="some"),
        Workload(senders=1000),
    ],
)
def test_bad_workloads_are_refused(wl: Workload) -> None:
    with pytest.raises(BenchError):
        wl.check()


def test_workloads_for_a_sweep() -> None:
    wls = workloads_for(Workload(), ["burst", "hold"], [5, 10])
    assert [(w.kind, w.receivers, w.messages) for w in wls] == [
        ("burst", 5, 10_000),
        ("burst", 10, 10_000),
        ("hold", 5, 1),
        ("hold", 10, 1),
    ]
    assert Workload(kind="paced", rate=300, duration=2, senders=2).per_sender == 300
    assert Workload(kind="connect").per_sender == 0
