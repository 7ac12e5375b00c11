"""A builder of benchmark results for the tests that need a report without running one."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mtlschat.bench.results import (
    ConnectStats,
    Delivery,
    Latency,
    LoadCPU,
    RunResult,
    ServerUsage,
)
from mtlschat.bench.workload import Workload

MakeRun = Callable[..., RunResult]


def make_run(
    target: str,
    workload: str = "burst",
    receivers: int = 5,
    *,
    per_s: float = 1000.0,
    p99: float = 5.0,
    cpu_us: float | None = 1.0,
    lost: int = 0,
    errors: tuple[str, ...] = (),
) -> RunResult:
    """A complete run of ``workload`` against ``target`` with the given figures."""
    params = Workload(kind=workload, receivers=receivers, messages=100, size=64)
    server = None
    if cpu_us is not None:
        server = ServerUsage(
            pid=1,
            rss_idle_kb=1000.0,
            rss_connected_kb=1100.0,
            rss_per_conn_kb=20.0,
            cpu_per_handshake_ms=2.0,
            cpu_s=0.5,
            cpu_per_delivery_us=cpu_us,
        )
    delivery = None
    if workload != "connect":
        expected = receivers * params.messages
        delivery = Delivery(
            sent=params.messages,
            expected=expected,
            deliveries=expected - lost,
            lost=lost,
            gaps=0,
            out_of_order=0,
            dropped=0,
            reads=10,
            load_cpu_s=LoadCPU(receivers=0.2, senders=0.1),
            elapsed_s=0.5,
            deliveries_per_s=per_s,
            latency_ms=Latency(p50=p99 / 2, p99=p99, max=p99 * 2, samples=expected - lost),
        )
    return RunResult(
        target=target,
        address="127.0.0.1:7443",
        workload=workload,
        params=params,
        connect=ConnectStats(receivers, 0, 0.25, receivers / 0.25, 1.5),
        server=server,
        delivery=delivery,
        errors=list(errors),
    )


@pytest.fixture(scope="session")
def run_result() -> MakeRun:
    """:func:`make_run`: ``run_result("mtlschat", "burst", 5, per_s=3e4, lost=2)``."""
    return make_run
