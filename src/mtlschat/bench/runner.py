"""Run one workload against one server: start the load processes, measure, merge the results."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from array import array
from collections.abc import Callable, Sequence
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
    StormStats,
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
    StormReport,
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
    restart: Callable[[], int] | None = None,
    receivers_at: Sequence[Endpoint] = (),
    more_pids: Sequence[int] = (),
) -> RunResult:
    """Run ``wl`` against the server ``target`` at ``endpoint``; what it measured.

    One room on several nodes (``--redis``): ``receivers_at`` spreads the receiver workers over
    these endpoints (round robin; senders use ``endpoint``), and the server's CPU and memory are
    summed with ``more_pids`` (the other nodes and the redis-server).

    ``restart`` (the ``storm`` workload) stops the server and starts it again on the same
    address, returning once it listens, with its new pid.
    """
    wl.check()
    rep = reporter or _Silent()
    if len(pki.receivers) < wl.certificates or len(pki.senders) < wl.senders + _probes(wl):
        raise BenchError("the bench PKI has fewer certificates than the workload needs")
    if wl.kind == "storm" and restart is None:
        raise BenchError("storm restarts the server: run it with --spawn")
    procs = _Procs()
    try:
        meter = _ServerMeter(server_pid, more_pids)
        at = tuple(receivers_at) or (endpoint,)
        return _run(wl, endpoint, pki, meter, rep, procs, target, restart, at)
    finally:
        procs.close()


class _ServerMeter:
    """The server's CPU and RSS at each step of a run, when it runs on this machine (summed with
    ``more`` processes: the other nodes of a room on Redis, and the redis-server)."""

    def __init__(self, pid: int | None, more: Sequence[int] = ()) -> None:
        self.pid = pid
        self.more = list(more)
        self.usage: ServerUsage | None = None
        self._cpu = 0.0
        self._rss = 0

    def _settle(self, pid: int) -> float:
        return settle_cpu(pid) + sum(settle_cpu(p) for p in self.more)

    def _rss_of(self, pid: int) -> int:
        return rss_bytes(pid) + sum(rss_bytes(p) for p in self.more)

    def _cpu_of(self, pid: int) -> float:
        return cpu_seconds(pid) + sum(cpu_seconds(p) for p in self.more)

    def idle(self) -> None:
        """Before connecting: the baseline."""
        if self.pid is not None:
            self._cpu, self._rss = self._settle(self.pid), self._rss_of(self.pid)
            self.usage = ServerUsage(pid=self.pid, rss_idle_kb=self._rss / 1024)

    def connected(self, connections: int) -> None:
        """Every receiver is in: memory and CPU per connection."""
        if self.pid is None or self.usage is None:
            return
        cpu, rss = self._settle(self.pid), self._rss_of(self.pid)
        self.usage = replace(
            self.usage,
            rss_connected_kb=rss / 1024,
            rss_per_conn_kb=(rss - self._rss) / 1024 / max(1, connections),
            cpu_per_handshake_ms=(cpu - self._cpu) * 1000 / max(1, connections),
        )

    def restarted(self, pid: int) -> None:
        """The server runs again as ``pid`` (storm): measure that one from now on (its CPU
        clock starts at zero; its memory is judged against the first one's idle RSS)."""
        if self.pid is not None:
            self.pid = pid
            self._cpu = 0.0
            self.usage = replace(self.usage, pid=pid) if self.usage else None

    def rss_per_conn_kb(self, connections: int) -> float | None:
        """RSS per connection now, over the idle baseline (storm: of the restarted server)."""
        if self.pid is None or not connections:
            return None
        return (self._rss_of(self.pid) - self._rss) / 1024 / connections

    def cpu_now(self) -> float | None:
        """CPU seconds the server has used (storm: since it was restarted)."""
        return None if self.pid is None else self._cpu_of(self.pid)

    def sending(self) -> None:
        """The senders have joined (their join notices are not part of the measurement)."""
        if self.pid is not None:
            self._cpu = self._settle(self.pid)

    def done(self) -> None:
        """Every message arrived (or the run stalled): stop the CPU clock."""
        if self.pid is not None:
            self._cpu = self._cpu_of(self.pid) - self._cpu

    def delivered(self, deliveries: int) -> None:
        """CPU per delivery, from the CPU time between :meth:`sending` and :meth:`done`."""
        if self.pid is None or self.usage is None:
            return
        cpu = self._cpu
        self.usage = replace(
            self.usage, cpu_s=cpu, cpu_per_delivery_us=cpu * 1e6 / max(1, deliveries)
        )


def _start_receivers(
    wl: Workload, eps: Sequence[Endpoint], pki: BenchPKI, procs: _Procs
) -> list[Connection]:
    names = [str(p) for p in pki.receivers[: wl.certificates]]
    certs = [names[i % len(names)] for i in range(wl.receivers)]
    # Each worker holds its receivers' sockets: enough workers that none passes the fd limit
    # (the workers inherit this process's limit, raised to the hard one); with several nodes,
    # a multiple of their number, so that each gets an equal share.
    nworkers = worker_count(wl.receivers, wl.workers, raise_fd_limit())
    nworkers = min(wl.receivers, -(-nworkers // len(eps)) * len(eps))
    sources = choose_sources(wl.receivers, wl.sources, eps[0].host)
    return [
        procs.start(
            run_receivers,
            ReceiverJob(
                endpoint=eps[w % len(eps)],
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


def _probes(wl: Workload) -> int:
    """Members besides the receivers and senders: a storm's probe."""
    return 1 if wl.kind == "storm" else 0


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
                rate=wl.rate / wl.senders if wl.kind in ("paced", "storm") else 0.0,
                batch=max(1, wl.write_size // (wl.size + 1)) if wl.write_size else BATCH,
                retry_for=wl.stall if wl.kind == "storm" else 0.0,
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


def _delivery(parts: list[ReceiverReport], sent: list[SenderReport]) -> Delivery:
    lat: array[int] = array("q")
    for part in parts:
        lat.frombytes(part.latencies)
    lat_ms = sorted(v / 1000 for v in lat)
    received = sum(p.received for p in parts)
    expected = sum(p.expected for p in parts)
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
    restart: Callable[[], int] | None = None,
    receivers_at: Sequence[Endpoint] = (),
) -> RunResult:
    workers = _start_receivers(wl, receivers_at or (ep,), pki, procs)
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
        address=",".join(f"{node.host}:{node.port}" for node in receivers_at or (ep,)),
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
    storm: StormStats | None = None
    if restart is not None and wl.kind == "storm":
        probe = procs.start(
            run_receivers,
            ReceiverJob(
                endpoint=ep, certs=[str(pki.senders[wl.senders])], senders=wl.senders,
                per_sender=wl.per_sender, concurrency=1, fast_verify=False, storm=True,
            ),
        )  # fmt: skip
        storm = _storm(wl, workers, senders, probe, meter, rep, restart)
    else:
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
    delivery = _delivery(parts, sent)
    if storm is None:  # (a storm's server CPU is mostly handshakes: reported apart)
        meter.delivered(delivery.deliveries)
    errors += [e for p in parts for e in p.errors] + [s.error for s in sent if s.error]
    if storm is not None:
        storm = replace(storm, latency_load_ms=_storm_latency(parts, storm.samples))
    return replace(run, server=meter.usage, delivery=delivery, errors=errors, storm=storm)


def _storm(
    wl: Workload,
    workers: list[Connection],
    senders: list[Connection],
    probe: Connection,
    meter: _ServerMeter,
    rep: Reporter,
    restart: Callable[[], int],
) -> StormStats:
    """Restart the server under every receiver. The sender and a probe (a member in a process
    of its own, so its latency is the server's, not that of load processes busy with their
    handshakes) reconnect at once; the sender paces lines while the others come back."""
    for conn in senders:
        _recv(conn, "started", 60)
    _recv(probe, "prepared", 60)
    for conn in workers:
        conn.send(("storm",))
    for conn in workers:
        _recv(conn, "storming", 60)
    t_stop = now_us()
    meter.restarted(restart())
    t_listen = now_us()
    for conn in workers:
        conn.send(("restarted",))
    probe.send(("start",))
    for conn in senders:
        conn.send(("connect",))
    for conn in senders:  # (no waiting for an idle server: the storm is what is measured)
        _recv(conn, "ready", wl.stall + 60)
    for conn in senders:
        conn.send(("go",))
    rep.stage(f"storm: {wl.receivers} members reconnecting", wl.receivers)
    up: list[int] = []
    back: list[StormReport | None] = _gather(workers, "back", rep, wl.stall, up)
    got = [b for b in back if b is not None]
    t_back = max((b.t_back_us for b in got), default=t_listen) if len(got) == len(back) else 0
    # (a stalled storm: how many were back when it stopped moving, from the workers' progress)
    members = sum(b.back if b is not None else n for b, n in zip(back, up, strict=True))
    probe.send(("report",))  # what the probe saw while the others reconnected
    seen: ReceiverReport = _recv(probe, "result", 60)[1]
    rep.stage(f"storm: delivering to {wl.receivers}", wl.receivers)
    return StormStats(
        restart_s=(t_listen - t_stop) / 1e6,
        back_s=max(0.0, (t_back - t_listen) / 1e6) if t_back else None,
        back=members,
        attempts=sum(b.attempts for b in got),
        failed_attempts=sum(b.failed_attempts for b in got),
        samples=[b.samples_during if b is not None else -1 for b in back],
        latency_ms=_storm_latency([seen], [-1]),
        latency_load_ms=Latency(0.0, 0.0, 0.0, 0),
        rss_per_conn_kb=meter.rss_per_conn_kb(members),
        server_cpu_s=meter.cpu_now(),
    )


def _storm_latency(parts: list[ReceiverReport], samples: list[int]) -> Latency:
    """Latency of the lines that reached members already back while others still reconnected
    (the first ``samples[i]`` of each part's; -1: all of them)."""
    lat: array[int] = array("q")
    for part, n in zip(parts, samples, strict=True):
        mine: array[int] = array("q")
        mine.frombytes(part.latencies)
        lat.extend(mine if n < 0 else mine[:n])
    ms = sorted(v / 1000 for v in lat)
    return Latency(
        p50=percentile(ms, 0.50), p99=percentile(ms, 0.99), max=ms[-1] if ms else 0.0,
        samples=len(ms),
    )  # fmt: skip


def _gather(
    workers: list[Connection],
    want: str,
    rep: Reporter,
    stall: float,
    progress_out: list[int] | None = None,
) -> list[Any]:
    """Wait for ``want`` from every worker, showing progress; stop after ``stall`` idle seconds.

    ``progress_out`` receives each worker's last progress figure (for a run that stalled).
    """
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
                value = msg[1] if want in ("connected", "back") else msg[2]
                if value != progress[i]:
                    progress[i] = value
                    last_change = time.monotonic()
                    rep.update(sum(progress))
            elif msg[0] == want:
                got[i] = msg[1]
                last_change = time.monotonic()
        if time.monotonic() - last_change > stall:
            break  # lost messages: the results will say how many
    if progress_out is not None:
        progress_out[:] = progress
    if want == "connected" and len(got) < len(workers):
        raise BenchError(f"receivers stopped connecting for {stall:.0f} s")
    return [got.get(i) for i in range(len(workers))]


def machine() -> dict[str, Any]:
    """A little context for the JSON report."""
    return {"cpus": os.cpu_count(), "load_avg": os.getloadavg()}
