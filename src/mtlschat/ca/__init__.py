"""The certificate authority library: ``mtlschat ca`` is a thin CLI over it.

Re-exports the names other packages use; see the modules for the rest. The authority (and with
it most of ``cryptography``) is imported on first use, so that importing a light submodule such
as :mod:`mtlschat.ca.names` does not pay for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mtlschat.ca.errors import CAError, PassphraseRequired, WrongPassphrase
from mtlschat.ca.paths import PKIPaths

if TYPE_CHECKING:
    from mtlschat.ca.authority import CertificateAuthority, IssuedCert

__all__ = [
    "CAError",
    "CertificateAuthority",
    "IssuedCert",
    "PKIPaths",
    "PassphraseRequired",
    "WrongPassphrase",
]

_LAZY = {"CertificateAuthority", "IssuedCert"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from mtlschat.ca import authority

        return getattr(authority, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
