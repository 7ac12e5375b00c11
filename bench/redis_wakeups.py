"""What a relayed line costs Redis is wake-ups, not commands: redis-server's CPU per round trip
when each write holds 1 command and when it holds 10 (the same commands, fewer wake-ups).

On the 2-core VM this project is measured on (2026-11-30), a PING that wakes Redis costs 16-18
us of its CPU and one that arrives with nine others ~2 us: that is why the engine has a node's
publish, its replies and every log entry on one connection, pushed, rather than a blocking read
per node sent again per line (see docs/performance.md, issue 13).

    .venv/bin/python bench/redis_wakeups.py [--repeat 5] [--commands 20000]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import tempfile
import time

import hiredis

from mtlschat.bench.procstat import cpu_seconds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _round_trips(sock: socket.socket, per_write: int, total: int) -> None:
    """``total`` PINGs, ``per_write`` to a write, each write's replies read before the next."""
    reader = hiredis.Reader()
    batch = b"*1\r\n$4\r\nPING\r\n" * per_write
    for _ in range(total // per_write):
        sock.sendall(batch)
        got = 0
        while got < per_write:
            reply = reader.gets()
            if reply is False:
                reader.feed(sock.recv(65536))
            else:
                got += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--commands", type=int, default=20_000)
    args = ap.parse_args()
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", tmp]
        redis = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    sock = socket.create_connection(("127.0.0.1", port))
                    break
                except ConnectionRefusedError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            per_wakeup: dict[int, list[float]] = {1: [], 10: []}
            for _ in range(args.repeat):
                for per_write in per_wakeup:
                    before = cpu_seconds(redis.pid)
                    _round_trips(sock, per_write, args.commands)
                    used = cpu_seconds(redis.pid) - before
                    per_wakeup[per_write].append(used / (args.commands // per_write) * 1e6)
            for per_write, samples in per_wakeup.items():
                us = statistics.median(samples)
                print(
                    f"{per_write:2d} PING(s) a write: redis CPU {us:6.1f} us a wake-up, "
                    f"{us / per_write:5.1f} us a command (median of {args.repeat}; "
                    f"{', '.join(f'{x:.0f}' for x in samples)})"
                )
        finally:
            redis.terminate()
            redis.wait()


if __name__ == "__main__":
    main()
