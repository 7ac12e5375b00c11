"""What a benchmark reads about a server process from /proc (Linux only)."""

from __future__ import annotations

import os
import time

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU seconds the process (all its threads) has used so far.

    Read from the process's CPU-time clock (nanoseconds: what the scheduler counted), so a
    0.1 s burst is measured to better than 1%; /proc/PID/stat's utime + stime, the fallback,
    count in ticks of 10 ms.
    """
    try:
        return time.clock_gettime(_process_clock(pid))
    except OSError:
        pass
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    # The command name may contain spaces and parentheses: fields start after the last ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _process_clock(pid: int) -> int:
    # Linux's clockid for another process's CPU time: MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)
    # (what clock_getcpuclockid(3) returns; Python exposes only the thread variant).
    return ((~pid) << 3) | 2


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
