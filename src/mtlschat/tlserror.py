"""How a TLS or socket error is put in words: one rule for the server's log and the client."""

from __future__ import annotations

import ssl


def tls_reason(exc: OSError) -> str:
    """OpenSSL's short reason (``WRONG_VERSION_NUMBER`` -> "wrong version number"), the errno
    text of a plain socket error, or ``str(exc)`` when neither is there."""
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        return reason.replace("_", " ").lower() if reason else str(exc)
    return exc.strerror or str(exc)
