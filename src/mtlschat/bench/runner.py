"""Run one workload against one server: start the load processes, measure, merge the results."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from array import array
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, Protocol

from mtlschat.bench import WORKLOADS
from mtlschat.bench.payload import DEFAULT_SIZE, HEADER_SIZE, MAX_SENDERS, now_us
from mtlschat.bench.pki import BenchPKI
from mtlschat.bench.procstat import cpu_seconds, rss_bytes, settle_cpu
from mtlschat.bench.worker import Endpoint, ReceiverJob, SenderJob, run_receivers, run_sender


class BenchError(RuntimeError):
    """The benchmark could not run (bad parameters, or the load processes failed)."""


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


@dataclass(frozen=True)
class Workload:
    """What to run. ``messages`` is per sender (burst, hold); paced sends ``rate * duration``."""

    kind: str = "burst"
    receivers: int = 200
    messages: int = 10_000
    size: int = DEFAULT_SIZE
    rate: float = 300.0  # paced: total messages/s over all senders
    duration: float = 10.0  # paced: seconds
    senders: int = 1
    workers: int = 2
    concurrency: int = 256  # handshakes in flight at once, over all workers
    verify: str = "fast"  # "fast" (strided checks, one sender) or "full" (parse every line)
    stall: float = 20.0  # give up after this many seconds without progress

    def check(self) -> None:
        """Raise :class:`BenchError` for parameters that cannot work."""
        if self.kind not in WORKLOADS:
            raise BenchError(f"unknown workload {self.kind!r}: choose from {', '.join(WORKLOADS)}")
        if self.receivers < 1 or self.workers < 1 or self.concurrency < 1:
            raise BenchError("receivers, workers and concurrency must be at least 1")
        if not 1 <= self.senders < MAX_SENDERS:
            raise BenchError(f"senders must be between 1 and {MAX_SENDERS - 1}")
        if self.size < HEADER_SIZE:
            raise BenchError(f"the message size must be at least {HEADER_SIZE} bytes")
        if self.kind == "paced" and (self.rate <= 0 or self.duration <= 0):
            raise BenchError("paced needs a positive --rate and --duration")
        if self.kind in ("burst", "hold") and self.messages < 1:
            raise BenchError("send at least one message")
        if self.verify not in ("fast", "full"):
            raise BenchError("verify must be 'fast' or 'full'")

    @property
    def per_sender(self) -> int:
        """How many messages each sender sends."""
        if self.kind == "connect":
            return 0
        if self.kind == "paced":
            return max(1, round(self.rate * self.duration / self.senders))
        return self.messages


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
) -> dict[str, Any]:
    """Run ``wl`` against the server at ``endpoint``; return the result as a JSON-able dict."""
    wl.check()
    rep = reporter or _Silent()
    if len(pki.receivers) < wl.receivers or len(pki.senders) < wl.senders:
        raise BenchError("the bench PKI has fewer certificates than the workload needs")
    procs = _Procs()
    try:
        return _run(wl, endpoint, pki, server_pid, rep, procs)
    finally:
        procs.close()


def _run(
    wl: Workload,
    ep: Endpoint,
    pki: BenchPKI,
    pid: int | None,
    rep: Reporter,
    procs: _Procs,
) -> dict[str, Any]:
    certs = [str(p) for p in pki.receivers[: wl.receivers]]
    nworkers = min(wl.workers, wl.receivers)
    per_worker_conc = max(1, wl.concurrency // nworkers)
    workers = [
        procs.start(
            run_receivers,
            ReceiverJob(
                endpoint=ep,
                certs=certs[w::nworkers],
                senders=0 if wl.kind == "connect" else wl.senders,
                per_sender=wl.per_sender,
                concurrency=per_worker_conc,
                fast_verify=wl.verify == "fast",
            ),
        )
        for w in range(nworkers)
    ]
    # Every worker builds its TLS contexts first; the clock starts when all are ready.
    rep.stage("preparing clients", nworkers)
    for i, conn in enumerate(workers):
        _recv(conn, "prepared", 120 + wl.receivers / 100)
        rep.update(i + 1)
    server: dict[str, Any] = {}
    if pid is not None:
        cpu0 = settle_cpu(pid)
        rss0 = rss_bytes(pid)
        server.update(pid=pid, rss_idle_kb=rss0 / 1024)
    rep.stage(f"connecting {wl.receivers} receivers", wl.receivers)
    t0 = now_us()
    for conn in workers:
        conn.send(("start",))
    connected = _gather(workers, "connected", rep, wl.stall)
    ok = sum(c["connected"] for c in connected)
    failed = sum(c["failed"] for c in connected)
    errors = [e for c in connected for e in c["errors"]]
    t_conn = max((c["t_connected_us"] for c in connected), default=t0)
    connect_s = max(1e-6, (t_conn - t0) / 1e6)
    connect = {
        "connections": ok,
        "failed": failed,
        "seconds": connect_s,
        "handshakes_per_s": ok / connect_s,
        # The receivers' own CPU while connecting: client handshakes cost about what the
        # server's do, so on a small machine the load generator can be what limits handshakes/s.
        "load_cpu_per_handshake_ms": sum(c["cpu_s"] for c in connected) * 1000 / max(1, ok),
    }
    if pid is not None:
        cpu1 = settle_cpu(pid)
        rss1 = rss_bytes(pid)
        server.update(
            rss_connected_kb=rss1 / 1024,
            rss_per_conn_kb=(rss1 - rss0) / 1024 / max(1, ok),
            cpu_per_handshake_ms=(cpu1 - cpu0) * 1000 / max(1, ok),
        )
    result: dict[str, Any] = {
        "workload": wl.kind,
        "params": asdict(wl),
        "connect": connect,
        "server": server or None,
    }
    if ok == 0:
        raise BenchError(f"no receiver could connect: {errors[0] if errors else 'no answer'}")
    if wl.kind == "connect":
        result["errors"] = errors
        return result

    senders = [
        procs.start(
            run_sender,
            SenderJob(
                endpoint=ep,
                cert=str(pki.senders[i]),
                index=i,
                messages=wl.per_sender,
                size=wl.size,
                rate=wl.rate / wl.senders if wl.kind == "paced" else 0.0,
            ),
        )
        for i in range(wl.senders)
    ]
    for conn in senders:
        _recv(conn, "ready", 60)
    if pid is not None:
        cpu2 = settle_cpu(pid)  # the senders' join notices are not part of the measurement
    expected = ok * wl.senders * wl.per_sender
    rep.stage(f"{wl.kind}: delivering {expected:,} messages", expected)
    for conn in senders:
        conn.send(("go",))
    _gather(workers, "done", rep, wl.stall)
    if pid is not None:
        cpu3 = cpu_seconds(pid)
    sent = [_recv(conn, "sent", 60)[1] for conn in senders]
    for conn in workers:
        conn.send(("report",))
    parts = [_recv(conn, "result", 60)[1] for conn in workers]

    lat: array[int] = array("q")
    for part in parts:
        lat.frombytes(part["latencies"])
    lat_ms = sorted(v / 1000 for v in lat)
    received = sum(p["received"] for p in parts)
    t_first = min(s["t_first_us"] for s in sent)
    t_last = max(p["last_us"] for p in parts)
    elapsed = max(1e-6, (t_last - t_first) / 1e6)
    result.update(
        sent=sum(s["sent"] for s in sent),
        expected=expected,
        deliveries=received,
        lost=expected - received,
        gaps=sum(p["gaps"] for p in parts),
        out_of_order=sum(p["out_of_order"] for p in parts),
        dropped=sum(p["dropped"] for p in parts),
        reads=sum(p["reads"] for p in parts),
        # CPU seconds of the load processes (whole run, handshakes included): is it the bottleneck?
        load_cpu_s={
            "receivers": sum(p["cpu_s"] for p in parts),
            "senders": sum(s["cpu_s"] for s in sent),
        },
        elapsed_s=elapsed,
        deliveries_per_s=received / elapsed,
        latency_ms={
            "p50": percentile(lat_ms, 0.50),
            "p99": percentile(lat_ms, 0.99),
            "max": lat_ms[-1] if lat_ms else 0.0,
            "samples": len(lat_ms),
        },
        errors=errors
        + [e for p in parts for e in p["errors"]]
        + [s["error"] for s in sent if s["error"]],
    )
    if pid is not None:
        cpu = cpu3 - cpu2
        server.update(cpu_s=cpu, cpu_per_delivery_us=cpu * 1e6 / max(1, received))
    return result


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
