"""TLS for the server: the SSLContext and the identity of a verified peer."""

from __future__ import annotations

import _ssl
import ctypes
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509

from mtlschat.ca.errors import CAError
from mtlschat.ca.profile import common_name
from mtlschat.ca.trust import CRLState, ServerCert, check_crl, check_server_bundle, load_ca_certs
from mtlschat.chat.wire import ALPN_PROTOCOLS
from mtlschat.tlserror import tls_reason


class TLSSetupError(Exception):
    """The server's certificate, key, CA or CRL could not be loaded (one-line message)."""


# Mozilla's "intermediate" configuration (v5.7): for TLS 1.2 only ECDHE with AEAD suites (the
# DHE ones need DH parameters we do not ship); TLS 1.3's suites are all AEAD and stay as they are.
TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
GROUPS = "X25519:P-256:P-384"  # key exchange groups, for TLS 1.2 and 1.3
_SSL_CTRL_SET_GROUPS_LIST = 92  # SSL_CTX_set1_groups_list is a macro for this SSL_CTX_ctrl


def server_context(cert: Path, ca: Path, crl: Path | None) -> ssl.SSLContext:
    """A fresh server context: TLS >= 1.2, client certificate required, CRL enforced if given,
    ciphers and groups of Mozilla's "intermediate" configuration.

    Built anew on every reload so new handshakes see the reloaded certificate and CRL while
    established connections keep the context they were accepted with. ``crl`` is left out (and
    revocation is checked by the server alone, see :class:`ServerTrust`) once the CRL is past
    its nextUpdate, because OpenSSL would then refuse every client as "expired".
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # PROTOCOL_TLS_SERVER defaults to CERT_NONE: without this any client would be let in.
    ctx.verify_mode = ssl.CERT_REQUIRED
    # No session resumption: every TLS 1.3 ticket costs server CPU on each handshake.
    ctx.num_tickets = 0
    # Client-initiated TLS 1.2 renegotiation only costs us CPU; nobody needs it.
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    # A client that half-closes TCP without close_notify (`ncat --ssl` after stdin EOF) still
    # gets its answers: OpenSSL 3 would otherwise fail every write after reading that EOF. Only
    # whole lines are acted on, so a truncated stream loses nothing but its unfinished line.
    ctx.options |= ssl.OP_IGNORE_UNEXPECTED_EOF
    ctx.set_ciphers(TLS12_CIPHERS)
    _set_groups(ctx, GROUPS)
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


@dataclass(frozen=True, slots=True)
class ServerTrust:
    """Everything the server loaded from its PKI files: one unit, replaced whole on reload.

    While the CRL is current, OpenSSL checks it during the handshake (a revoked member gets the
    ``certificate_revoked`` alert). Once its nextUpdate has passed (``stale_crl``) the context is
    built without it and the server checks ``crl.revoked`` itself when the handshake completes:
    members are not refused for the operator's lapse, and whoever this last good CRL revokes
    stays out.
    """

    context: ssl.SSLContext
    server: ServerCert
    ca_certs: tuple[x509.Certificate, ...]
    crl: CRLState | None
    stale_crl: bool

    @property
    def revoked(self) -> frozenset[int]:
        """The serials of the CRL in force (empty without one)."""
        return self.crl.revoked if self.crl is not None else frozenset()

    def expiries(self) -> list[tuple[str, datetime | None]]:
        """What can expire: ``(what, when)`` for the server certificate, CA(s) and CRL."""
        items: list[tuple[str, datetime | None]] = [
            (f"the server certificate {self.server.path}", self.server.not_after)
        ]
        items += [
            (f"the CA certificate {_subject(ca)}", ca.not_valid_after_utc) for ca in self.ca_certs
        ]
        if self.crl is not None and not self.stale_crl:  # (a stale one is an error of its own)
            items.append((f"the CRL {self.crl.path} (nextUpdate)", self.crl.next_update))
        return items


def load_trust(
    cert: Path, ca: Path, crl: Path | None, previous: ServerTrust | None, now: datetime
) -> ServerTrust:
    """Check and load the server's certificate, CA and CRL (raise :class:`TLSSetupError`).

    The same checks at startup and at every reload (:mod:`mtlschat.ca.trust`). Given the
    ``previous`` trust, revocation fails closed: once a CRL has been enforced, a missing one
    (``crl`` None falls back to the previous CRL's path), an unreadable, foreign or older one
    is an error, never "nothing is revoked".
    """
    prev_crl = previous.crl if previous is not None else None
    if crl is None and prev_crl is not None:
        crl = prev_crl.path
    try:
        cas = load_ca_certs(ca)
        server = check_server_bundle(cert, cas, ca, now)
        state = check_crl(crl, cas, prev_crl) if crl is not None else None
    except CAError as exc:
        raise TLSSetupError(str(exc)) from None
    stale = state is not None and state.expired(now)
    ctx = server_context(cert, ca, None if stale else crl)
    return ServerTrust(ctx, server, tuple(cas), state, stale)


def _subject(cert: x509.Certificate) -> str:
    return common_name(cert.subject) or cert.subject.rfc4514_string()


def _set_groups(ctx: ssl.SSLContext, groups: str) -> None:
    """Offer only ``groups`` for key exchange (OpenSSL's default adds X448, P-521, FFDHE).

    Python 3.11's ssl module can set one curve (``set_ecdh_curve``) but not a list, so this
    calls OpenSSL's ``SSL_CTX_set1_groups_list`` through ctypes on the context's ``SSL_CTX``
    (the first field after the object header). The pointer is checked first: OpenSSL must
    report the same options as Python does for this context. If anything does not match, fall
    back to P-256 alone (accepted by every TLS client), which still offers nothing outside
    the list.
    """
    try:
        lib = ctypes.CDLL(_ssl.__file__)  # its symbol lookup reaches the libssl it links
        get_options = lib.SSL_CTX_get_options
        get_options.argtypes, get_options.restype = [ctypes.c_void_p], ctypes.c_uint64
        ctrl = lib.SSL_CTX_ctrl
        ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_char_p]
        ctrl.restype = ctypes.c_long
        ssl_ctx = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
        same = bool(ssl_ctx) and get_options(ssl_ctx) == int(ctx.options)
        if same and ctrl(ssl_ctx, _SSL_CTRL_SET_GROUPS_LIST, 0, groups.encode()) == 1:
            return
    except (OSError, AttributeError, ValueError):
        pass
    ctx.set_ecdh_curve("prime256v1")


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
