"""The certificate authority library: ``mtlschat ca`` is a thin CLI over it.

Re-exports the names other packages use; see the modules for the rest.
"""

from mtlschat.ca.authority import CertificateAuthority, IssuedCert
from mtlschat.ca.errors import CAError, PassphraseRequired, WrongPassphrase
from mtlschat.ca.paths import PKIPaths

__all__ = [
    "CAError",
    "CertificateAuthority",
    "IssuedCert",
    "PKIPaths",
    "PassphraseRequired",
    "WrongPassphrase",
]
