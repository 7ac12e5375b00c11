"""Bench runs in a PKI that ``mtlschat bench`` did not create (a live room's).

A run takes a lock file, ``PKI/bench/.run-ID.lock`` (flock), before it issues anything and holds
it until it has cleaned up. Its certificates are recorded as bench certificates of ``ID`` in the
transaction that records them (``bench_certs`` in ``ca.db``), so whatever a ``kill -9`` leaves
behind is known: a run whose lock nobody holds is over, and the next ``ca`` command or bench
revokes its certificates and deletes their bundles
(:meth:`~mtlschat.ca.authority.CertificateAuthority.clean_stale_bench_runs`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from mtlschat.ca.paths import PKIPaths


def _lock_path(paths: PKIPaths, run: str) -> Path:
    return paths.bench / f".run-{run}.lock"


@contextlib.contextmanager
def run_lock(paths: PKIPaths) -> Iterator[str]:
    """A new run: its id, its lock held for the ``with`` block (and removed after)."""
    paths.bench.mkdir(mode=0o700, exist_ok=True)
    run = secrets.token_hex(6)
    path = _lock_path(paths, run)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield run
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)


@contextlib.contextmanager
def claim_if_over(paths: PKIPaths, run: str) -> Iterator[bool]:
    """Whether ``run`` is over (nobody holds its lock); if so, held for the ``with`` block so
    that two cleaners do not race, and the lock file removed after."""
    path = _lock_path(paths, run)
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    except FileNotFoundError:
        yield True  # (the run ended between its cleanup and marking it done, or was lost)
        return
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False  # the run is alive
            return
        yield True
        with contextlib.suppress(OSError):
            path.unlink()
    finally:
        os.close(fd)
