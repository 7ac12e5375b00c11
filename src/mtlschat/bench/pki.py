"""Throwaway (or cached) certificates for a benchmark, issued by :mod:`mtlschat.ca`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mtlschat.ca.authority import CertificateAuthority
from mtlschat.ca.paths import PKIPaths

SERVER_HOSTS = ("localhost", "127.0.0.1", "::1")
BENCH_SUBDIR = "bench"


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

    A CA is created if the directory has none. Bundles already in ``pki_dir/bench/`` are reused,
    so keeping the directory (``mtlschat bench --pki DIR``) saves re-issuing thousands of
    certificates on every run. ``progress`` is called once per bundle ready (issued or reused).
    """
    paths = PKIPaths(pki_dir)
    ca = (
        CertificateAuthority.open(pki_dir)
        if paths.ca_cert.exists()
        else CertificateAuthority.init(pki_dir)
    )
    if not paths.server_bundle.exists():
        ca.issue_server(list(SERVER_HOSTS))
    out = pki_dir / BENCH_SUBDIR
    out.mkdir(mode=0o700, exist_ok=True)

    def bundles(names: list[str]) -> list[Path]:
        files = []
        for name in names:
            f = out / f"{name}.pem"
            if not f.exists():
                ca.issue_user(name, out=f)
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
