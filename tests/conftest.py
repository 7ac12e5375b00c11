"""Shared fixtures: a throw-away PKI (CA, server bundle, CRL, user bundles) and the real CLI.

Every PKI lives in a temporary directory; no key ever touches the repository. ECDSA P-256 keys
make a session PKI with a handful of users cost a few milliseconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mtlschat.ca import CertificateAuthority

SERVER_HOSTS = ("localhost", "127.0.0.1", "::1")


class TestPKI:
    """A CA in ``dir`` with a server bundle for localhost and an (empty) CRL already written."""

    __test__ = False  # a helper, not a test class

    def __init__(self, root: Path) -> None:
        self.dir = root / "pki"
        self.ca = CertificateAuthority.init(self.dir)
        self.ca_cert = self.ca.paths.ca_cert
        self.crl = self.ca.paths.crl
        self.server_bundle = self.ca.issue_server(SERVER_HOSTS).path
        self._users = root / "users"
        self._users.mkdir()
        self._cache: dict[str, Path] = {}
        self._other_ca: CertificateAuthority | None = None
        self._root = root

    def user(self, name: str) -> Path:
        """The bundle of a valid user ``name`` (issued on first call, then cached)."""
        key = f"user:{name}"
        if key not in self._cache:
            self._cache[key] = self.ca.issue_user(name, out=self._users / f"{name}.pem").path
        return self._cache[key]

    def expired_user(self, name: str) -> Path:
        """A bundle for ``name`` signed by this CA whose validity lies entirely in the past."""
        key = f"expired:{name}"
        if key not in self._cache:
            start = datetime.now(UTC) - timedelta(days=30)
            self._cache[key] = self.ca.issue_user(
                name, days=1, not_before=start, out=self._users / f"{name}.expired.pem"
            ).path
        return self._cache[key]

    def other_ca_user(self, name: str) -> Path:
        """A bundle for ``name`` from an unrelated CA (same CA name, different key)."""
        key = f"other:{name}"
        if key not in self._cache:
            if self._other_ca is None:
                self._other_ca = CertificateAuthority.init(self._root / "other-pki")
            out = self._users / f"{name}.other.pem"
            self._cache[key] = self._other_ca.issue_user(name, out=out).path
        return self._cache[key]

    def revoke(self, name: str) -> None:
        """Revoke ``name``'s certificate(s) and rewrite the CRL."""
        self.ca.revoke(name)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    """One PKI for the whole session: do not revoke in it (use ``fresh_pki``)."""
    return TestPKI(tmp_path_factory.mktemp("session-pki"))


@pytest.fixture
def fresh_pki(tmp_path: Path) -> TestPKI:
    """A PKI of this test's own, for tests that revoke or otherwise change it."""
    return TestPKI(tmp_path)


CLIRunner = Callable[..., "subprocess.CompletedProcess[str]"]


def run_cli(
    *args: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    input: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m mtlschat ARGS`` as a real process; never raises on a non-zero exit.

    ``env`` is added to (not substituted for) the current environment, minus any MTLSCHAT_*
    variables of the caller's shell so tests are not influenced by them.
    """
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MTLSCHAT_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "mtlschat", *map(str, args)],
        env=full_env,
        cwd=cwd,
        input=input if input is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def mtlschat_cli() -> CLIRunner:
    """The :func:`run_cli` helper: ``mtlschat_cli("ca", "list", "--pki", d)``."""
    return run_cli
