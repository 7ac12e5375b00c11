"""TLS for the server: the SSLContext and the identity of a verified peer."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from mtlschat.ca.crl import load_verified_crl, revoked_in
from mtlschat.ca.errors import CAError
from mtlschat.chat.wire import ALPN_PROTOCOLS
from mtlschat.tlserror import tls_reason

log = logging.getLogger("mtlschat.server")


class TLSSetupError(Exception):
    """The server's certificate, key, CA or CRL could not be loaded (one-line message)."""


def server_context(cert: Path, ca: Path, crl: Path | None) -> ssl.SSLContext:
    """A fresh server context: TLS >= 1.2, client certificate required, CRL enforced if given.

    Built anew on every SIGHUP so new handshakes see the reloaded certificate and CRL while
    established connections keep the context they were accepted with.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # PROTOCOL_TLS_SERVER defaults to CERT_NONE: without this any client would be let in.
    ctx.verify_mode = ssl.CERT_REQUIRED
    # No session resumption: every TLS 1.3 ticket costs server CPU on each handshake.
    ctx.num_tickets = 0
    # Client-initiated TLS 1.2 renegotiation only costs us CPU; nobody needs it.
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    ctx.set_alpn_protocols(list(ALPN_PROTOCOLS))
    try:
        # A server starts unattended: never let OpenSSL prompt on the terminal for a passphrase.
        ctx.load_cert_chain(cert, password=_no_passphrase(cert))
    except (OSError, ssl.SSLError) as exc:
        why = tls_reason(exc)
        raise TLSSetupError(f"cannot load server certificate/key {cert}: {why}") from None
    try:
        ctx.load_verify_locations(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise TLSSetupError(f"cannot load CA certificate {ca}: {tls_reason(exc)}") from None
    if crl is not None:
        try:
            # A PEM CRL loads into the same trust store as the CA certificate.
            ctx.load_verify_locations(cafile=crl)
        except (OSError, ssl.SSLError) as exc:
            raise TLSSetupError(f"cannot load CRL {crl}: {tls_reason(exc)}") from None
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return ctx


def revoked_serials(ca: Path, crl: Path | None) -> frozenset[int]:
    """The serials the CRL revokes, after checking the CRL is signed by a certificate in ``ca``.

    Used on SIGHUP to find live sessions to disconnect, and at startup and reload to refuse a
    CRL that OpenSSL would reject at every handshake (wrong issuer, bad signature).
    """
    if crl is None:
        return frozenset()
    try:
        issuers = x509.load_pem_x509_certificates(ca.read_bytes())
    except (OSError, ValueError) as exc:
        raise TLSSetupError(f"cannot load CA certificate {ca}: {exc}") from None
    problem = f"{crl} is not signed by the CA in {ca}"
    for issuer in issuers:
        try:
            parsed = load_verified_crl(crl, issuer)
        except CAError as exc:
            problem = str(exc)
            continue
        next_update = parsed.next_update_utc
        if next_update is not None and next_update < datetime.now(UTC):
            # OpenSSL refuses every client certificate against an expired CRL ("CRL has expired").
            log.error(
                "the CRL %s expired on %s: every client will be refused until `mtlschat ca crl` "
                "rewrites it and the server is sent SIGHUP",
                crl,
                f"{next_update:%Y-%m-%d %H:%M} UTC",
            )
        return revoked_in(parsed)
    raise TLSSetupError(f"bad CRL: {problem}")


def _no_passphrase(cert: Path) -> Callable[[], bytes]:
    def refuse() -> bytes:
        raise TLSSetupError(f"the server key in {cert} is passphrase-protected (not supported)")

    return refuse


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """Who is at the other end of a verified handshake."""

    name: str  # the certificate's CN ("" if none or several); the room applies the name policy
    serial: int  # the certificate's serial number, compared with the CRL on SIGHUP


def peer_identity(sock: ssl.SSLSocket) -> PeerIdentity:
    """The CN and serial of the peer's verified certificate.

    The CN is not judged here: :meth:`mtlschat.chat.room.Room.open` checks it against the
    username policy (``mtlschat.ca.names``) and refuses a bad one in the protocol (``bad_name``).
    """
    cert = sock.getpeercert() or {}
    names: list[str] = []
    for rdn in cert.get("subject", ()):
        for attr in rdn:  # each RDN is a tuple of (type, value) pairs
            if isinstance(attr, tuple) and attr[0] == "commonName":
                names.append(str(attr[1]))
    serial = int(str(cert.get("serialNumber", "0")), 16)
    return PeerIdentity(name=names[0] if len(names) == 1 else "", serial=serial)
