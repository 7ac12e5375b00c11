"""The open-file limit: every peer is a descriptor, raised by the server and the bench."""

from __future__ import annotations

import contextlib
import resource


def raise_fd_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (children inherit it).

    Returns the soft limit now in force (unchanged if the kernel refused to raise it).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft
