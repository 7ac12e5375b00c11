"""What a benchmark reads about a server process from /proc (Linux only)."""

from __future__ import annotations

import os
import time

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far (/proc/PID/stat utime + stime)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    # The command name may contain spaces and parentheses: fields start after the last ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def rss_bytes(pid: int) -> int:
    """Resident set size of the process (/proc/PID/status VmRSS)."""
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def settle_cpu(pid: int, quiet: float = 0.3, timeout: float = 15.0) -> float:
    """Wait until the process has used no CPU for ``quiet`` seconds (or ``timeout``); return it.

    After the clients finish their TLS 1.3 handshakes the server still verifies certificates and
    sends tickets/welcomes; its counters are read once it has gone idle.
    """
    deadline = time.monotonic() + timeout
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = cpu_seconds(pid)
        if now - last <= 1.0 / _TICK:
            return now
        last = now
    return last
