"""Pause points for the crash tests: make the instant between two steps reachable.

A test runs ``mtlschat ca ...`` with ``MTLSCHAT_TEST_PAUSE_AT=<point>``; at that point the
process says ``paused at <point>`` on stderr and waits, and the test kills it with SIGKILL and
checks what the next run finds. Unset (always, outside tests), a pause point costs one
environment lookup.
"""

from __future__ import annotations

import os
import signal
import sys

PAUSE_ENV = "MTLSCHAT_TEST_PAUSE_AT"


def pause_point(name: str) -> None:
    """Wait here forever (to be killed) if ``$MTLSCHAT_TEST_PAUSE_AT`` is ``name``."""
    if os.environ.get(PAUSE_ENV) != name:
        return
    sys.stderr.write(f"paused at {name}\n")
    sys.stderr.flush()
    while True:
        signal.pause()
