"""A benchmark session: certificates, servers to start (or an address), workloads, ratios."""

from __future__ import annotations

import ipaddress
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from mtlschat import __version__
from mtlschat.bench import COMPARISONS
from mtlschat.bench.pki import BenchPKI, bench_pki
from mtlschat.bench.results import BenchReport, RunResult, ratios
from mtlschat.bench.runner import BenchError, Reporter, Workload, machine, run_workload
from mtlschat.bench.spawn import spawn_server
from mtlschat.bench.worker import Endpoint
from mtlschat.fdlimit import raise_fd_limit


def default_server_name(host: str) -> str:
    """The name to verify the server certificate against: loopback addresses -> ``localhost``."""
    try:
        return "localhost" if ipaddress.ip_address(host).is_loopback else host
    except ValueError:
        return host


@dataclass(frozen=True)
class Plan:
    """Everything one ``mtlschat bench`` invocation runs."""

    workloads: list[Workload]
    targets: list[str]  # servers to start ("mtlschat", "reference"), or ["external"]
    # For "external": the server, or the nodes of one room (receivers round robin over them,
    # senders on the first).
    addresses: tuple[tuple[str, int], ...] = ()
    server_pid: int | None = None  # for "external", when it runs on this machine
    more_pids: tuple[int, ...] = ()  # more pids counted with it: other nodes, redis-server
    server_name: str | None = None
    pki_dir: Path | None = None


@contextmanager
def _pki_dir(given: Path | None) -> Iterator[Path]:
    if given is not None:
        given.mkdir(mode=0o700, parents=True, exist_ok=True)
        yield given
        return
    with tempfile.TemporaryDirectory(prefix="mtlschat-bench-") as tmp:
        yield Path(tmp)


def run_plan(
    plan: Plan,
    reporter: Reporter,
    on_run: Callable[[RunResult], None] | None = None,
) -> BenchReport:
    """Run every workload against every target, in order; return the whole report."""
    raise_fd_limit()
    receivers = max(w.certificates for w in plan.workloads)
    senders = max(w.senders + (w.kind == "storm") for w in plan.workloads)  # + a storm's probe
    runs: list[RunResult] = []
    issued = 0

    def tick(n: int) -> None:
        nonlocal issued
        issued += n
        reporter.update(issued)

    server = plan.targets != ["external"]
    reporter.stage("issuing certificates", receivers + senders)
    with (
        _pki_dir(plan.pki_dir) as pki_dir,
        bench_pki(pki_dir, receivers, senders, tick, server=server) as pki,
    ):
        for wl in plan.workloads:
            for target in plan.targets:
                run = _one(plan, target, wl, pki, reporter)
                runs.append(run)
                if on_run is not None:
                    on_run(run)
    return BenchReport(
        mtlschat=__version__,
        python=platform.python_version(),
        time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        machine=machine(),
        runs=runs,
        ratios=ratios(runs, list(COMPARISONS.values())),
    )


def _one(plan: Plan, target: str, wl: Workload, pki: BenchPKI, reporter: Reporter) -> RunResult:
    if target == "external":
        if not plan.addresses:
            raise BenchError("no server address")
        nodes = [
            Endpoint(host, port, str(pki.ca_cert), plan.server_name or default_server_name(host))
            for host, port in plan.addresses
        ]
        return run_workload(
            wl,
            nodes[0],
            pki,
            plan.server_pid,
            reporter,
            target=target,
            receivers_at=nodes,
            more_pids=plan.more_pids,
        )
    reporter.stage(f"starting the {target} server", 1)
    capacity = wl.receivers + wl.senders + 64
    servers = [spawn_server(target, pki, max_connections=capacity)]
    first = servers[0]

    def restart() -> int:
        # storm: SIGTERM (the members are told bye), then a new server on the same address.
        servers[-1].stop()
        servers.append(spawn_server(target, pki, first.host, capacity, port=first.port))
        return servers[-1].pid

    try:
        ep = Endpoint(first.host, first.port, str(pki.ca_cert), "localhost")
        return run_workload(wl, ep, pki, first.pid, reporter, target=target, restart=restart)
    finally:
        servers[-1].stop()


HOLD_MESSAGES = 1  # hold: one broadcast that every idle connection must receive


def workloads_for(
    base: Workload, kinds: list[str], receivers: list[int], messages: int | None = None
) -> list[Workload]:
    """One workload per (kind, receiver count), in that order.

    ``messages`` (per sender) defaults to ``base.messages`` for bursts and to one broadcast for
    ``hold``.
    """
    out: list[Workload] = []
    for k in kinds:
        m = messages if messages is not None else HOLD_MESSAGES if k == "hold" else base.messages
        out.extend(replace(base, kind=k, receivers=n, messages=m) for n in receivers)
    return out
