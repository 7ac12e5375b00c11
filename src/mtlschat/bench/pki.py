"""Throwaway (or cached) certificates for a benchmark, issued by :mod:`mtlschat.ca`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from mtlschat.ca import benchrun
from mtlschat.ca.authority import CertificateAuthority
from mtlschat.ca.paths import PKIPaths

SERVER_HOSTS = ("localhost", "127.0.0.1", "::1")
OWN_CA = ".bench-ca"  # in PKI/bench/: this CA was created by the bench (a throw-away PKI)
BENCH_VALIDITY = timedelta(days=1)  # bench certificates in a live room's PKI


def receiver_name(i: int) -> str:
    """Receiver ``i``'s certificate CN (fixed width, so every line of a run has the same length)."""
    return f"r{i:05d}"


def sender_name(i: int) -> str:
    """Sender ``i``'s certificate CN."""
    return f"s{i:03d}"


@dataclass(frozen=True)
class BenchPKI:
    """A PKI directory a server can run from, plus the bench users' bundles."""

    dir: Path
    ca_cert: Path
    server_bundle: Path
    receivers: list[Path]
    senders: list[Path]


def prepare_pki(
    pki_dir: Path,
    receivers: int,
    senders: int,
    progress: Callable[[int], None] | None = None,
) -> BenchPKI:
    """Make sure ``pki_dir`` has a CA, a server bundle and enough bench user bundles.

    A CA is created if the directory has none (and marked as the bench's own). Bundles already
    in ``pki_dir/bench/`` are reused, so keeping the directory (``mtlschat bench --pki DIR``)
    saves re-issuing thousands of certificates on every run. ``progress`` is called once per
    bundle ready (issued or reused). For a PKI the bench did not create, see :func:`bench_pki`.
    """
    paths = PKIPaths(pki_dir)
    if paths.ca_cert.exists():
        ca = CertificateAuthority.open(pki_dir)
    else:
        ca = CertificateAuthority.init(pki_dir)
        paths.bench.mkdir(mode=0o700, exist_ok=True)
        (paths.bench / OWN_CA).write_text("this CA was created by mtlschat bench\n")
    if not paths.server_bundle.exists():
        ca.issue_server(list(SERVER_HOSTS))
    paths.bench.mkdir(mode=0o700, exist_ok=True)

    def reuse_or_issue(name: str, bundle: Path) -> None:
        if not bundle.exists():
            ca.issue_user(name, out=bundle)

    return _bundles(pki_dir, paths, receivers, senders, reuse_or_issue, progress)


def _bundles(
    pki_dir: Path,
    paths: PKIPaths,
    receivers: int,
    senders: int,
    issue: Callable[[str, Path], None],
    progress: Callable[[int], None] | None,
) -> BenchPKI:
    """The run's bundles in ``paths.bench``, each made ready by ``issue(name, bundle_path)``."""

    def bundles(names: list[str]) -> list[Path]:
        files = []
        for name in names:
            f = paths.bench / f"{name}.pem"
            issue(name, f)
            if progress is not None:
                progress(1)
            files.append(f)
        return files

    return BenchPKI(
        dir=pki_dir,
        ca_cert=paths.ca_cert,
        server_bundle=paths.server_bundle,
        receivers=bundles([receiver_name(i) for i in range(receivers)]),
        senders=bundles([sender_name(i) for i in range(senders)]),
    )


def is_own_pki(pki_dir: Path) -> bool:
    """Whether ``pki_dir`` has no CA yet, or one the bench created (its throw-away PKI)."""
    paths = PKIPaths(pki_dir)
    return not paths.ca_cert.exists() or (paths.bench / OWN_CA).exists()


@contextmanager
def bench_pki(
    pki_dir: Path,
    receivers: int,
    senders: int,
    progress: Callable[[int], None] | None = None,
    *,
    server: bool = True,
) -> Iterator[BenchPKI]:
    """The bench's certificates for the ``with`` block.

    In the bench's own PKI, :func:`prepare_pki` (kept and reused). In any other (a live room's
    CA): certificates marked as bench certificates in ``ca.db``, valid for
    :data:`BENCH_VALIDITY`, issued for this run alone, and revoked (one CRL) with their bundles
    deleted when the block ends, however it ends; a run killed with ``-9`` is cleaned up by the
    next ``ca`` command or bench (:mod:`mtlschat.ca.benchrun`). ``server``: a server bundle is
    needed (to start a server); one missing is issued the same way.
    """
    if is_own_pki(pki_dir):
        yield prepare_pki(pki_dir, receivers, senders, progress)
        return
    ca = CertificateAuthority.open(pki_dir)  # (also cleans up after runs that were killed)
    paths = ca.paths
    with benchrun.run_lock(paths) as run:
        try:
            if server and not paths.server_bundle.exists():
                ca.issue_server(list(SERVER_HOSTS), valid=BENCH_VALIDITY, bench_run=run)

            def issue_for_this_run(name: str, bundle: Path) -> None:
                ca.issue_user(name, valid=BENCH_VALIDITY, out=bundle, force=True, bench_run=run)

            yield _bundles(pki_dir, paths, receivers, senders, issue_for_this_run, progress)
        finally:
            ca.end_bench_run(run)
