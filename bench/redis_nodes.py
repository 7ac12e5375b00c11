"""Issue 13's benchmark: one room on one node alone vs on 1, 2 and 4 nodes sharing a Redis, in
the same invocation, with the same load (``mtlschat bench``'s workers and measurements).

For each configuration and workload: server CPU per delivery summed over every node AND the
redis-server, latency p50/p99, deliveries verified (none lost, no gap, in order), redis-server's
own CPU per message. ``cross`` is 2 nodes with every receiver on the node the sender is NOT on:
its latency is the cross-node latency. Runs alternate configurations and repeat; one JSON line
per run on stdout; a median summary on stderr at the end.

    python bench/redis_nodes.py --receivers 200 --repeat 3 --configs alone,redis2,cross
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mtlschat.bench.pki import prepare_pki
from mtlschat.bench.procstat import cpu_seconds, settle_cpu
from mtlschat.bench.runner import run_workload
from mtlschat.bench.spawn import SpawnedServer, spawn_server
from mtlschat.bench.worker import Endpoint
from mtlschat.bench.workload import Workload

# alone: one node, no Redis, history off; sqlite: the same with its default SQLite history (what a
# single node runs by default: a relayed node always keeps history, in Redis and its mirror).
CONFIGS = {"alone": 0, "sqlite": 0, "redis1": 1, "redis2": 2, "redis4": 4, "cross": 2}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(root: Path) -> tuple[subprocess.Popen[bytes], int]:
    exe = shutil.which("redis-server")
    if exe is None:
        sys.exit("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(root)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc, port
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            sys.exit("redis-server did not start")
        time.sleep(0.05)


def run_config(name: str, wl: Workload, pki: Any, root: Path) -> dict[str, Any]:
    nodes = CONFIGS[name]
    with ExitStack() as stack:
        redis_pid: int | None = None
        servers: list[SpawnedServer] = []
        if nodes == 0:
            target = "mtlschat-history" if name == "sqlite" else "mtlschat"
            servers.append(spawn_server(target, pki))
        else:
            proc, port = start_redis(root)
            stack.callback(proc.wait)
            stack.callback(proc.kill)
            redis_pid = proc.pid
            url = f"redis://127.0.0.1:{port}/0"
            for _ in range(nodes):
                servers.append(spawn_server("mtlschat", pki, extra=("--redis", url)))
        for s in servers:
            stack.callback(s.stop)
        time.sleep(0.5)  # (the nodes' first hello; the meter waits for idle CPU anyway)
        eps = [Endpoint(s.host, s.port, str(pki.ca_cert), "localhost") for s in servers]
        receivers_at = eps[1:] if name == "cross" else eps
        more = [s.pid for s in servers[1:]] + ([redis_pid] if redis_pid else [])
        redis_cpu = settle_cpu(redis_pid) if redis_pid else 0.0
        result = run_workload(
            wl, eps[0], pki, servers[0].pid, target=name, receivers_at=receivers_at,
            more_pids=more,
        )  # fmt: skip
        redis_cpu = (cpu_seconds(redis_pid) - redis_cpu) if redis_pid else 0.0
    d, u = result.delivery, result.server
    assert d is not None and u is not None
    return {
        "config": name,
        "nodes": max(1, nodes),
        "workload": wl.kind,
        "receivers": wl.receivers,
        "sent": d.sent,
        "deliveries": d.deliveries,
        "lost": d.lost,
        "gaps": d.gaps,
        "out_of_order": d.out_of_order,
        "cpu_per_delivery_us": u.cpu_per_delivery_us,
        "p50_ms": d.latency_ms.p50,
        "p99_ms": d.latency_ms.p99,
        "deliveries_per_s": d.deliveries_per_s,
        "redis_cpu_per_message_us": redis_cpu * 1e6 / max(1, d.sent),
        "errors": result.errors[:3],
        "params": asdict(wl),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--receivers", type=int, default=200)
    ap.add_argument("--messages", type=int, default=2000, help="burst: messages")
    ap.add_argument("--rate", type=float, default=300.0, help="paced: messages/s")
    ap.add_argument("--duration", type=float, default=10.0, help="paced: seconds")
    ap.add_argument("--workloads", default="burst,paced")
    ap.add_argument("--configs", default="alone,redis1,redis2,redis4,cross")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="receiver worker processes")
    args = ap.parse_args()
    configs = args.configs.split(",")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mtlschat-redis-bench-") as tmp:
        root = Path(tmp)
        pki = prepare_pki(root / "pki", args.receivers, 1)
        for _ in range(args.repeat):
            for kind in args.workloads.split(","):
                wl = Workload(
                    kind=kind, receivers=args.receivers, messages=args.messages, rate=args.rate,
                    duration=args.duration, workers=args.workers,
                )  # fmt: skip
                for name in configs:
                    row = run_config(name, wl, pki, root)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    print("\nmedians (config, workload: cpu us/delivery, x alone, p50 ms, p99 ms, redis us/msg, "
          "lost)", file=sys.stderr)  # fmt: skip
    for kind in args.workloads.split(","):
        for name in configs:
            runs = [r for r in rows if r["config"] == name and r["workload"] == kind]
            if not runs:
                continue

            def med(key: str, runs: list[dict[str, Any]] = runs) -> float:
                return statistics.median(r[key] or 0.0 for r in runs)

            base = [r for r in rows if r["config"] == "alone" and r["workload"] == kind]
            ratio = med("cpu_per_delivery_us") / med("cpu_per_delivery_us", base) if base else 0
            print(
                f"{name:7} {kind:6} {med('cpu_per_delivery_us'):7.3f} {ratio:5.2f}x "
                f"{med('p50_ms'):7.2f} "
                f"{med('p99_ms'):7.2f} {med('redis_cpu_per_message_us'):7.1f} "
                f"{sum(r['lost'] + r['gaps'] + r['out_of_order'] for r in runs)}",
                file=sys.stderr,
            )


if __name__ == "__main__":
    main()
