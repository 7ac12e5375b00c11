"""Where everything lives inside a PKI directory (see ``pki/README.md``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PKI_ENV = "MTLSCHAT_PKI"
DEFAULT_PKI_DIR = Path("pki")


@dataclass(frozen=True)
class PKIPaths:
    """The files of one PKI directory."""

    dir: Path

    @property
    def ca_cert(self) -> Path:
        """The root CA certificate (public; the trust anchor)."""
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        """The CA private key, PKCS#8 PEM, mode 0600, optionally encrypted."""
        return self.dir / "ca.key"

    @property
    def db(self) -> Path:
        """The SQLite record of issued certificates."""
        return self.dir / "ca.db"

    @property
    def crl(self) -> Path:
        """The certificate revocation list (PEM)."""
        return self.dir / "crl.pem"

    @property
    def server_bundle(self) -> Path:
        """Server key + certificate + CA certificate: where ``mtlschat server`` looks."""
        return self.dir / "server.pem"

    @property
    def bench(self) -> Path:
        """``mtlschat bench``'s bundles (``NAME.pem``) and run locks (``.run-ID.lock``)."""
        return self.dir / "bench"

    @property
    def init_marker(self) -> Path:
        """Present while ``ca init`` moves a new CA into place (see ``authority.init``)."""
        return self.dir / ".init-pending"

    @property
    def lock(self) -> Path:
        """Taken (flock) by ``ca init`` and by whoever finishes an interrupted one."""
        return self.dir / ".init.lock"
