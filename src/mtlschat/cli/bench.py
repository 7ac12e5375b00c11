"""``mtlschat bench``: thin CLI over :mod:`mtlschat.bench`."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from mtlschat.bench import TARGETS, WORKLOADS
from mtlschat.cli.output import fail

if TYPE_CHECKING:  # the load generator and rich are imported by the command itself
    from rich.progress import Progress

    from mtlschat.bench.runner import Workload
    from mtlschat.bench.suite import Plan


class _Bar:
    """The runner's progress reports drawn as one rich progress bar (on stderr)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = progress.add_task("starting", total=1)

    def stage(self, description: str, total: int) -> None:
        self.progress.reset(self.task, description=description, total=max(1, total), completed=0)

    def update(self, completed: int) -> None:
        self.progress.update(self.task, completed=completed)


def bench(
    address: list[str] | None = typer.Argument(
        None,
        metavar="HOST[:PORT]...",
        help="Server to load; several: the nodes of one room, the receivers spread over them "
        "(round robin), the senders on the first. [default: localhost:7443]",
    ),
    workload: list[str] = typer.Option(
        ["burst"], "--workload", "-w", help=f"One of {', '.join(WORKLOADS)}; repeatable."
    ),
    receivers: list[int] = typer.Option(
        [200], "--receivers", "-n", help="Receiving connections; repeatable (a sweep)."
    ),
    messages: int | None = typer.Option(
        None, "--messages", "-m", help="Messages per sender (burst 10000, hold 1)."
    ),
    size: int = typer.Option(64, "--size", help="Message text size, bytes."),
    rate: float = typer.Option(300.0, "--rate", help="paced: total messages/s."),
    duration: float = typer.Option(10.0, "--duration", help="paced: seconds."),
    senders: int = typer.Option(1, "--senders", help="Sending connections."),
    workers: int = typer.Option(
        os.cpu_count() or 1,
        "--workers",
        help="Receiver worker processes (more when the fd limit needs them).",
    ),
    concurrency: int = typer.Option(256, "--concurrency", help="Handshakes in flight at once."),
    names: int = typer.Option(
        0,
        "--names",
        help="Receiver certificates, used in turn (the server's --sessions-per-name must allow "
        "the sessions per name); 0 = one per receiver.",
    ),
    sources: int = typer.Option(
        0,
        "--sources",
        help="Connect from this many loopback addresses (127.0.0.2, ...), one ephemeral port "
        "range each; 0 = as many as -n needs.",
    ),
    write_size: int = typer.Option(
        0,
        "--write-size",
        help="burst: bytes per sender write (one TLS record each, whole lines); 0 = 256 lines.",
    ),
    verify: str = typer.Option(
        "fast", "--verify", help="fast (strided checks) or full (parse every line)."
    ),
    stall: float = typer.Option(20.0, "--stall", help="Give up after this long without progress."),
    pki: Path | None = typer.Option(
        None, "--pki", help="PKI directory to use and keep (CA, server.pem, bench/*.pem)."
    ),
    server_name: str | None = typer.Option(
        None, "--server-name", help="TLS name to verify. [default: localhost for loopback]"
    ),
    server_pid: list[int] = typer.Option(
        [],
        "--server-pid",
        help="PID of the server (on this machine) for CPU and memory; repeatable: all summed "
        "(the nodes, their workers, redis-server).",
    ),
    spawn: bool = typer.Option(False, "--spawn", help="Start the server itself (see --target)."),
    target: str = typer.Option(
        "mtlschat", "--target", help=f"Server --spawn starts: {' or '.join(TARGETS)}."
    ),
    compare: bool = typer.Option(
        False, "--compare", help="Run each workload against mtlschat and the reference."
    ),
    compare_history: bool = typer.Option(
        False,
        "--compare-history",
        help="Run each workload against mtlschat with history off and on (a new file each run).",
    ),
    compare_floor: bool = typer.Option(
        False,
        "--compare-floor",
        help="Run each workload against mtlschat and bench/floor_server.py, a bare selectors "
        "loop relaying the same lines (floor) and the lines without a prefix (floor-raw).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
) -> None:
    """Load-test a server: deliveries/s, latency, losses, server CPU and memory.

    --spawn starts a server (with throw-away certificates) on this machine; otherwise give the
    server's HOST[:PORT] and the --pki directory of its CA.

    Examples:
      mtlschat bench --spawn -w burst -n 200 -m 10000
      mtlschat bench --compare -w paced -n 200
      mtlschat bench localhost:7443 --pki pki -w connect -n 1000
      mtlschat bench node1:7443 node2:7443 --pki pki -w paced -n 400
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from mtlschat.bench.report import print_report
    from mtlschat.bench.results import RunResult
    from mtlschat.bench.runner import BenchError, Workload
    from mtlschat.bench.spawn import SpawnError
    from mtlschat.bench.suite import run_plan, workloads_for
    from mtlschat.ca.errors import CAError

    err = Console(stderr=True)
    try:
        base = Workload(
            size=size,
            rate=rate,
            duration=duration,
            senders=senders,
            workers=workers,
            concurrency=concurrency,
            write_size=write_size,
            verify=verify,
            stall=stall,
            sources=sources,
            names=names,
        )
        plan = _plan(
            address,
            workloads_for(base, workload, receivers, messages),
            spawn,
            target,
            compare,
            compare_history,
            compare_floor,
            server_pid,
            server_name,
            pki,
        )
        for wl in plan.workloads:
            wl.check()
    except (BenchError, ValueError) as e:
        fail(str(e), 2)
    console = Console()

    def show(run: RunResult) -> None:
        if not as_json:
            lost = "" if run.delivery is None else f", lost {run.delivery.lost}"
            progress.console.print(
                f"{run.target} {run.workload} x{run.receivers}: done{lost}", highlight=False
            )

    # SIGTERM (a service manager, `kill`) ends a run like Ctrl-C: its bench certificates in a live
    # room's PKI are revoked and their keys deleted on the way out.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as progress:
            report = run_plan(plan, _Bar(progress), show)
    except (BenchError, SpawnError, CAError, OSError) as e:
        fail(str(e))
    except KeyboardInterrupt:
        fail("interrupted", 130)
    if as_json:
        json.dump(report.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_report(report, console)
    if any(r.delivery is not None and r.delivery.lost for r in report.runs):
        raise typer.Exit(3)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _plan(
    address: list[str] | None,
    workloads: list[Workload],
    spawn: bool,
    target: str,
    compare: bool,
    compare_history: bool,
    compare_floor: bool,
    server_pid: list[int],
    server_name: str | None,
    pki: Path | None,
) -> Plan:
    from mtlschat.address import parse_addresses
    from mtlschat.bench.runner import BenchError
    from mtlschat.bench.suite import Plan
    from mtlschat.ca.paths import PKIPaths

    if compare_history or compare_floor:
        compare = True  # (starts its own servers too)
    if (spawn or compare) and (address or server_pid):
        raise BenchError("--spawn/--compare start their own servers: drop HOST:PORT/--server-pid")
    if target not in TARGETS:
        raise BenchError(f"--target must be one of {', '.join(TARGETS)}")
    if not (spawn or compare) and any(w.kind == "storm" for w in workloads):
        raise BenchError("-w storm restarts the server: use --spawn or --compare")
    if compare_history:
        targets = ["mtlschat", "mtlschat-history"]
    elif compare_floor:
        targets = ["mtlschat", "floor", "floor-raw"]
    elif compare:
        targets = ["mtlschat", "reference"]
    elif spawn:
        targets = [target]
    else:
        targets = ["external"]
        if pki is None or not PKIPaths(pki).ca_cert.exists():
            raise BenchError(
                "a running server only trusts its own CA: give its PKI directory with --pki DIR "
                "(bench certificates are issued into DIR/bench/), or use --spawn / --compare"
            )
    return Plan(
        workloads=workloads,
        targets=targets,
        addresses=() if spawn or compare else tuple(parse_addresses(address or ())),
        server_pid=server_pid[0] if server_pid else None,
        more_pids=tuple(server_pid[1:]),
        server_name=server_name,
        pki_dir=pki,
    )
