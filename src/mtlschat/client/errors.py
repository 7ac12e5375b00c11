"""The client's exit codes (one place) and the error that carries one.

Every way the client can fail has its own code so scripts can tell them apart; the README's
troubleshooting table documents each. 2 is left to typer for usage errors.
"""

from __future__ import annotations

from enum import IntEnum, unique


@unique  # an alias (two names, one value) would make two failures indistinguishable
class ExitCode(IntEnum):
    """Process exit status of ``mtlschat client``."""

    OK = 0
    ERROR = 1  # unexpected failure (a bug): still one line, no traceback
    USAGE = 2  # bad command line (typer)
    UNREACHABLE = 3  # no TCP connection: refused, unknown host, timeout
    SERVER_UNTRUSTED = 4  # the server's certificate is not signed by our CA
    HOSTNAME_MISMATCH = 5  # the server's certificate is not valid for the host we dialled
    CERT_REJECTED = 6  # the server rejected our certificate (reason not given by TLS)
    CERT_REVOKED = 7  # ... because it is revoked
    CERT_EXPIRED = 8  # ... because it has expired (or is not yet valid)
    CERT_UNKNOWN_CA = 9  # ... because another CA signed it
    BUNDLE_MISSING = 10  # the --cert file does not exist
    BUNDLE_UNREADABLE = 11  # the --cert file cannot be read or is not a certificate bundle
    BUNDLE_NO_KEY = 12  # the bundle has no private key (or it does not match the certificate)
    BAD_PASSPHRASE = 13  # the bundle's key is encrypted and the passphrase is wrong or missing
    REFUSED = 14  # the server said bye before welcoming us (e.g. server full, bad name)
    PROTOCOL = 15  # the peer does not speak mtlschat (not TLS, no welcome)
    NOT_DELIVERED = 16  # pipe mode: the server refused some of the lines
    INTERRUPTED = 130  # Ctrl-C


class ClientError(Exception):
    """A failure the user must see as one line on stderr, exiting with ``code``."""

    def __init__(self, code: ExitCode, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail  # OpenSSL's own words, for --verbose

    def __str__(self) -> str:
        return self.message
