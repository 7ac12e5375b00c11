"""Run one workload against one server: start the load processes, measure, merge the results."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from array import array
from collections.abc import Sequence
from dataclasses import replace
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, Protocol

from mtlschat.bench.payload import now_us
from mtlschat.bench.pki import BenchPKI
from mtlschat.bench.procstat import cpu_seconds, rss_bytes, settle_cpu
from mtlschat.bench.results import (
    ConnectStats,
    Delivery,
    Latency,
    LoadCPU,
    RunResult,
    ServerUsage,
)
from mtlschat.bench.spread import choose_sources, worker_count
from mtlschat.bench.worker import (
    BATCH,
    ConnectedReport,
    Endpoint,
    ReceiverJob,
    ReceiverReport,
    SenderJob,
    SenderReport,
    run_receivers,
    run_sender,
)
from mtlschat.bench.workload import BenchError, Workload
from mtlschat.fdlimit import raise_fd_limit

__all__ = ["BenchError", "Reporter", "Workload", "percentile", "run_workload"]


class Reporter(Protocol):
    """Where the runner reports progress (the CLI draws a progress bar)."""

    def stage(self, description: str, total: int) -> None:
        """A new phase with ``total`` steps begins."""

    def update(self, completed: int) -> None:
        """``completed`` steps of the current phase are done."""


class _Silent:
    def stage(self, description: str, total: int) -> None:
        pass

    def update(self, completed: int) -> None:
        pass


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of an already sorted sequence (nearest rank)."""
    if not sorted_values:
        return 0.0
    return float(sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))])


class _Procs:
    """Child processes and their pipes; everything is torn down by :meth:`close`."""

    def __init__(self) -> None:
        self.ctx = multiprocessing.get_context("spawn")
        self.items: list[tuple[BaseProcess, Connection]] = []

    def start(self, target: Any, job: Any) -> Connection:
        ours, theirs = self.ctx.Pipe()
        p = self.ctx.Process(target=target, args=(job, theirs), daemon=True)
        p.start()
        theirs.close()
        self.items.append((p, ours))
        return ours

    def close(self) -> None:
        for _, conn in self.items:
            with contextlib.suppress(OSError):
                conn.send(("close",))
        deadline = time.monotonic() + 10
        for p, conn in self.items:
            p.join(max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join()
            conn.close()


def _recv(conn: Connection, want: str, timeout: float) -> tuple[Any, ...]:
    """The next message of kind ``want`` from a child (skipping progress), or BenchError."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not conn.poll(left):
            raise BenchError(f"a load process did not answer ({want}) in {timeout:.0f} s")
        try:
            msg: tuple[Any, ...] = conn.recv()
        except EOFError:
            raise BenchError("a load process died (see its traceback above)") from None
        if msg[0] == want:
            return msg
        if msg[0] == "failed":
            raise BenchError(f"a sender could not connect: {msg[1]}")


def run_workload(
    wl: Workload,
    endpoint: Endpoint,
    pki: BenchPKI,
    server_pid: int | None = None,
    reporter: Reporter | None = None,
    *,
    target: str = "external",
) -> RunResult:
    """Run ``wl`` against the server ``target`` at ``endpoint``; what it measured."""
    wl.check()
    rep = reporter or _Silent()
    if len(pki.receivers) < wl.receivers or len(pki.senders) < wl.senders:
        raise BenchError("the bench PKI has fewer certificates than the workload needs")
    procs = _Procs()
    try:
        return _run(wl, endpoint, pki, _ServerMeter(server_pid), rep, procs, target)
    finally:
        procs.close()


class _ServerMeter:
    """The server's CPU and RSS at each step of a run, when it runs on this machine."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.usage: ServerUsage | None = None
        self._cpu = 0.0
        self._rss = 0

    def idle(self) -> None:
        """Before connecting: the baseline."""
        if self.pid is not None:
            self._cpu, self._rss = settle_cpu(self.pid), rss_bytes(self.pid)
            self.usage = ServerUsage(pid=self.pid, rss_idle_kb=self._rss / 1024)

    def connected(self, connections: int) -> None:
        """Every receiver is in: memory and CPU per connection."""
        if self.pid is None or self.usage is None:
            return
        cpu, rss = settle_cpu(self.pid), rss_bytes(self.pid)
        self.usage = replace(
            self.usage,
            rss_connected_kb=rss / 1024,
            rss_per_conn_kb=(rss - self._rss) / 1024 / max(1, connections),
            cpu_per_handshake_ms=(cpu - self._cpu) * 1000 / max(1, connections),
        )

    def sending(self) -> None:
        """The senders have joined (their join notices are not part of the measurement)."""
        if self.pid is not None:
            self._cpu = settle_cpu(self.pid)

    def done(self) -> None:
        """Every message arrived (or the run stalled): stop the CPU clock."""
        if self.pid is not None:
            self._cpu = cpu_seconds(self.pid) - self._cpu

    def delivered(self, deliveries: int) -> None:
        """CPU per delivery, from the CPU time between :meth:`sending` and :meth:`done`."""
        if self.pid is None or self.usage is None:
            return
        cpu = self._cpu
        self.usage = replace(
            self.usage, cpu_s=cpu, cpu_per_delivery_us=cpu * 1e6 / max(1, deliveries)
        )


def _start_receivers(wl: Workload, ep: Endpoint, pki: BenchPKI, procs: _Procs) -> list[Connection]:
    certs = [str(p) for p in pki.receivers[: wl.receivers]]
    # Each worker holds its receivers' sockets: enough workers that none passes the fd limit
    # (the workers inherit this process's limit, raised to the hard one).
    nworkers = worker_count(wl.receivers, wl.workers, raise_fd_limit())
    sources = choose_sources(wl.receivers, wl.sources, ep.host)
    return [
        procs.start(
            run_receivers,
            ReceiverJob(
                endpoint=ep,
                certs=certs[w::nworkers],
                senders=0 if wl.kind == "connect" else wl.senders,
                per_sender=wl.per_sender,
                concurrency=max(1, wl.concurrency // nworkers),
                fast_verify=wl.verify == "fast",
                sources=sources,
            ),
        )
        for w in range(nworkers)
    ]


def _start_senders(wl: Workload, ep: Endpoint, pki: BenchPKI, procs: _Procs) -> list[Connection]:
    return [
        procs.start(
            run_sender,
            SenderJob(
                endpoint=ep,
                cert=str(pki.senders[i]),
                index=i,
                messages=wl.per_sender,
                size=wl.size,
                rate=wl.rate / wl.senders if wl.kind == "paced" else 0.0,
                batch=max(1, wl.write_size // (wl.size + 1)) if wl.write_size else BATCH,
            ),
        )
        for i in range(wl.senders)
    ]


def _connect_stats(reports: list[ConnectedReport], t0: int) -> ConnectStats:
    ok = sum(c.connected for c in reports)
    t_conn = max((c.t_connected_us for c in reports), default=t0)
    seconds = max(1e-6, (t_conn - t0) / 1e6)
    return ConnectStats(
        connections=ok,
        failed=sum(c.failed for c in reports),
        seconds=seconds,
        handshakes_per_s=ok / seconds,
        load_cpu_per_handshake_ms=sum(c.cpu_s for c in reports) * 1000 / max(1, ok),
        workers=len(reports),
        sources=sorted({a for c in reports for a in c.sources}),
    )


def _delivery(expected: int, parts: list[ReceiverReport], sent: list[SenderReport]) -> Delivery:
    lat: array[int] = array("q")
    for part in parts:
        lat.frombytes(part.latencies)
    lat_ms = sorted(v / 1000 for v in lat)
    received = sum(p.received for p in parts)
    t_first = min(s.t_first_us for s in sent)
    t_last = max(p.last_us for p in parts)
    elapsed = max(1e-6, (t_last - t_first) / 1e6)
    return Delivery(
        sent=sum(s.sent for s in sent),
        expected=expected,
        deliveries=received,
        lost=expected - received,
        gaps=sum(p.gaps for p in parts),
        out_of_order=sum(p.out_of_order for p in parts),
        dropped=sum(p.dropped for p in parts),
        reads=sum(p.reads for p in parts),
        load_cpu_s=LoadCPU(
            receivers=sum(p.cpu_s for p in parts), senders=sum(s.cpu_s for s in sent)
        ),
        elapsed_s=elapsed,
        deliveries_per_s=received / elapsed,
        latency_ms=Latency(
            p50=percentile(lat_ms, 0.50),
            p99=percentile(lat_ms, 0.99),
            max=lat_ms[-1] if lat_ms else 0.0,
            samples=len(lat_ms),
        ),
    )


def _run(
    wl: Workload,
    ep: Endpoint,
    pki: BenchPKI,
    meter: _ServerMeter,
    rep: Reporter,
    procs: _Procs,
    target: str,
) -> RunResult:
    workers = _start_receivers(wl, ep, pki, procs)
    # Every worker builds its TLS contexts first; the clock starts when all are ready.
    rep.stage("preparing clients", len(workers))
    for i, conn in enumerate(workers):
        _recv(conn, "prepared", 120 + wl.receivers / 100)
        rep.update(i + 1)
    meter.idle()
    rep.stage(f"connecting {wl.receivers} receivers", wl.receivers)
    t0 = now_us()
    for conn in workers:
        conn.send(("start",))
    connected: list[ConnectedReport] = _gather(workers, "connected", rep, wl.stall)
    connect = _connect_stats(connected, t0)
    errors = [e for c in connected for e in c.errors]
    meter.connected(connect.connections)
    if connect.connections == 0:
        raise BenchError(f"no receiver could connect: {errors[0] if errors else 'no answer'}")
    run = RunResult(
        target=target,
        address=f"{ep.host}:{ep.port}",
        workload=wl.kind,
        params=wl,
        connect=connect,
        server=meter.usage,
        delivery=None,
        errors=errors,
    )
    if wl.kind == "connect":
        return run

    senders = _start_senders(wl, ep, pki, procs)
    for conn in senders:
        _recv(conn, "ready", 60)
    meter.sending()
    expected = connect.connections * wl.senders * wl.per_sender
    rep.stage(f"{wl.kind}: delivering {expected:,} messages", expected)
    for conn in senders:
        conn.send(("go",))
    _gather(workers, "done", rep, wl.stall)
    meter.done()
    sent: list[SenderReport] = [_recv(conn, "sent", 60)[1] for conn in senders]
    for conn in workers:
        conn.send(("report",))
    parts: list[ReceiverReport] = [_recv(conn, "result", 60)[1] for conn in workers]
    delivery = _delivery(expected, parts, sent)
    meter.delivered(delivery.deliveries)
    errors += [e for p in parts for e in p.errors] + [s.error for s in sent if s.error]
    return replace(run, server=meter.usage, delivery=delivery, errors=errors)


def _gather(
    workers: list[Connection],
    want: str,
    rep: Reporter,
    stall: float,
) -> list[Any]:
    """Wait for ``want`` from every worker, showing progress; stop after ``stall`` idle seconds."""
    got: dict[int, Any] = {}
    progress = [0] * len(workers)
    last_change = time.monotonic()
    while len(got) < len(workers):
        ready = wait([c for i, c in enumerate(workers) if i not in got], timeout=0.5)
        for i, conn in enumerate(workers):
            if conn not in ready:
                continue
            try:
                msg = conn.recv()
            except EOFError:
                raise BenchError("a load process died (see its traceback above)") from None
            if msg[0] == "progress":
                value = msg[1] if want == "connected" else msg[2]
                if value != progress[i]:
                    progress[i] = value
                    last_change = time.monotonic()
                    rep.update(sum(progress))
            elif msg[0] == want:
                got[i] = msg[1]
                last_change = time.monotonic()
        if time.monotonic() - last_change > stall:
            break  # lost messages: the results will say how many
    if want == "connected" and len(got) < len(workers):
        raise BenchError(f"receivers stopped connecting for {stall:.0f} s")
    return [got.get(i) for i in range(len(workers))]


def machine() -> dict[str, Any]:
    """A little context for the JSON report."""
    return {"cpus": os.cpu_count(), "load_avg": os.getloadavg()}
