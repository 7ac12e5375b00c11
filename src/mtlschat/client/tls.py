"""TLS for the client: the SSLContext built from a bundle, and what each TLS failure means.

The bundle (``mtlschat ca issue``) holds our key, our certificate and the CA certificate; the CA
certificate is the trust anchor for the server unless ``--ca`` names another file.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mtlschat.address import Address
from mtlschat.ca.bundle import Bundle, load_bundle
from mtlschat.ca.errors import BundleError, CAError, PassphraseRequired, WrongPassphrase
from mtlschat.chat.wire import ALPN_JSON
from mtlschat.client.errors import ClientError, ExitCode
from mtlschat.tlserror import tls_reason

PASSPHRASE_ENV = "MTLSCHAT_BUNDLE_PASSPHRASE"
EXPIRY_WARNING_DAYS = 14  # warn on connect when our own certificate expires sooner

# OpenSSL verify codes (X509_V_ERR_*) that mean "right CA, wrong name".
_NAME_MISMATCH = {62, 63, 64}  # hostname, email, IP address mismatch

# Other verify codes about the server's certificate, in the user's words.
_FOREIGN_CA = (
    "its certificate is from a different CA than yours: check the address; if the room "
    "really changed its CA, ask the operator for a new bundle (or use --ca FILE)"
)
_SERVER_CERT: dict[int, str] = {
    2: _FOREIGN_CA,  # unable to get issuer certificate
    18: _FOREIGN_CA,  # self-signed certificate (not ours)
    19: _FOREIGN_CA,  # self-signed certificate in certificate chain
    20: _FOREIGN_CA,  # unable to get local issuer certificate
    21: _FOREIGN_CA,  # unable to verify the first certificate
    9: "its certificate is not valid yet: a clock is wrong (yours or the server's)",
    10: "its certificate has expired: tell the room's operator",
    26: (
        "it is using a certificate that is not a server certificate: tell the room's operator "
        "(the server needs one from 'mtlschat ca issue --server HOST')"
    ),
}

# TLS reasons meaning "whatever answered does not speak TLS" (a web server, a typo'd port).
_NOT_TLS = {"WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "HTTP_REQUEST", "PACKET_LENGTH_TOO_LONG"}

# TLS alerts the server sends about our certificate -> (exit code, what to tell the user).
_ALERTS: dict[str, tuple[ExitCode, str]] = {
    "SSLV3_ALERT_CERTIFICATE_REVOKED": (ExitCode.CERT_REVOKED, "your certificate is revoked"),
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": (
        ExitCode.CERT_EXPIRED,
        "your certificate has expired (or is not valid yet)",
    ),
    "TLSV1_ALERT_UNKNOWN_CA": (
        ExitCode.CERT_UNKNOWN_CA,
        "your certificate was signed by a CA this server does not trust",
    ),
    "SSLV3_ALERT_BAD_CERTIFICATE": (ExitCode.CERT_REJECTED, "your certificate is not acceptable"),
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": (
        ExitCode.CERT_REJECTED,
        "your certificate is not a client certificate",
    ),
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": (ExitCode.CERT_REJECTED, "your certificate was refused"),
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": (
        ExitCode.CERT_REJECTED,
        "the server wants a client certificate and got none",
    ),
    "TLSV1_ALERT_ACCESS_DENIED": (ExitCode.CERT_REJECTED, "access denied for your certificate"),
    "TLSV1_ALERT_DECRYPT_ERROR": (ExitCode.CERT_REJECTED, "your certificate was refused"),
}


def missing_bundle(bundle: Path) -> ClientError:
    """``--cert alcie.pem`` does not exist: the error, naming a close match next to it."""
    try:
        nearby = [p.name for p in bundle.parent.glob("*.pem")]
    except OSError:
        nearby = []
    match = difflib.get_close_matches(bundle.name, nearby, n=1, cutoff=0.6)
    hint = f": did you mean {bundle.with_name(match[0])}?" if match else ""
    return ClientError(ExitCode.BUNDLE_MISSING, f"certificate bundle {bundle} does not exist{hint}")


def check_dates(identity: Bundle, now: datetime | None = None) -> str | None:
    """Refuse a bundle whose certificate has expired (or is not valid yet) before connecting,
    naming the date; a warning when it expires within :data:`EXPIRY_WARNING_DAYS`."""
    now = now or datetime.now(UTC)
    cert = identity.cert
    ends, starts = cert.not_valid_after_utc, cert.not_valid_before_utc
    renew = f"ask the room's operator for a new one ('mtlschat ca renew {identity.name or 'NAME'}')"
    if now > ends:
        raise ClientError(
            ExitCode.CERT_EXPIRED,
            f"your certificate has expired: {identity.path} was valid until "
            f"{ends:%Y-%m-%d %H:%M} UTC; {renew}",
        )
    if now < starts:
        raise ClientError(
            ExitCode.CERT_EXPIRED,
            f"your certificate in {identity.path} is not valid before {starts:%Y-%m-%d %H:%M} UTC: "
            "is this computer's clock right?",
        )
    left = ends - now
    if left < timedelta(days=EXPIRY_WARNING_DAYS):
        days = left.days
        when = f"in {days} days" if days > 1 else "within a day" if days < 1 else "tomorrow"
        return f"your certificate expires {when} ({ends:%Y-%m-%d %H:%M} UTC): {renew}"
    return None


async def certificate_names(
    address: Address, context: ssl.SSLContext, timeout: float = 10.0
) -> list[str]:
    """The names the server's certificate is valid for: one more handshake, trusting the same
    CA but not checking the host name (only to tell the user which names would work)."""
    context.check_hostname = False
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(
                address.host, address.port, ssl=context, server_hostname=address.host
            ),
            timeout,
        )
    except (OSError, TimeoutError):
        return []
    finally:
        context.check_hostname = True
    cert = writer.get_extra_info("peercert") or {}
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 2)
    names = [
        value for kind, value in cert.get("subjectAltName", ()) if kind in ("DNS", "IP Address")
    ]
    return [name.strip() for name in names]


def load_identity(bundle: Path, passphrase: str | None) -> Bundle:
    """Check the bundle can be used and return it.

    Raises :class:`ClientError` with the bundle exit codes (missing, unreadable, no key, wrong
    passphrase) so the user hears about it before any network traffic.
    """
    if not bundle.exists():
        raise missing_bundle(bundle)
    secret = passphrase.encode() if passphrase is not None else None
    try:
        loaded = load_bundle(bundle, secret)
    except PassphraseRequired:
        raise ClientError(
            ExitCode.BAD_PASSPHRASE,
            f"the key in {bundle} is encrypted: set {PASSPHRASE_ENV} or run in a terminal",
        ) from None
    except WrongPassphrase:
        raise ClientError(
            ExitCode.BAD_PASSPHRASE, f"wrong passphrase for the key in {bundle}"
        ) from None
    except BundleError as exc:
        text = str(exc)
        no_key = "no private key" in text or "does not match" in text
        code = ExitCode.BUNDLE_NO_KEY if no_key else ExitCode.BUNDLE_UNREADABLE
        raise ClientError(code, text) from None
    except CAError as exc:
        raise ClientError(ExitCode.BUNDLE_UNREADABLE, str(exc)) from None
    return loaded


def client_context(
    bundle: Path | None,
    passphrase: str | None = None,
    ca: Path | None = None,
    *,
    alpn: str | None = ALPN_JSON,
) -> ssl.SSLContext:
    """The one TLS client context of mtlschat (the client, the bench, the tests).

    TLS >= 1.2; the server is verified against ``ca`` (default: the CA certificate in the
    bundle) with its host name checked; ``bundle`` (key + certificate) is presented as our
    identity, or nothing when it is None (then ``ca`` is required); ``alpn`` asks for a mode
    (JSON by default, None for the server's text mode). Every failure is a
    :class:`ClientError` with its exit code.
    """
    loaded = load_identity(bundle, passphrase) if bundle is not None else None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED + check_hostname
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if alpn is not None:
        ctx.set_alpn_protocols([alpn])
    if ca is None:
        if loaded is None or not loaded.chain:
            raise ClientError(
                ExitCode.BUNDLE_UNREADABLE,
                f"{bundle} holds no CA certificate to check the server with: use --ca FILE",
            )
        ctx.load_verify_locations(cadata=loaded.ca_pem.decode("ascii"))
    else:
        if not ca.exists():
            raise ClientError(ExitCode.BUNDLE_MISSING, f"CA certificate {ca} does not exist")
        try:
            ctx.load_verify_locations(cafile=ca)
        except (OSError, ssl.SSLError) as exc:
            raise ClientError(
                ExitCode.BUNDLE_UNREADABLE, f"cannot load CA certificate {ca}: {tls_reason(exc)}"
            ) from None
    if bundle is None:
        return ctx
    secret = (passphrase or "").encode()
    try:
        # The same file again, now for OpenSSL; the callback stops it prompting on the tty.
        ctx.load_cert_chain(bundle, password=lambda: secret)
    except ssl.SSLError as exc:
        raise ClientError(
            ExitCode.BUNDLE_UNREADABLE, f"cannot use {bundle}: {tls_reason(exc)}"
        ) from None
    except OSError as exc:
        raise ClientError(
            ExitCode.BUNDLE_UNREADABLE, f"cannot read {bundle}: {tls_reason(exc)}"
        ) from None
    return ctx


def handshake_error(exc: ssl.SSLError, where: str) -> ClientError:
    """What a TLS failure during the handshake (or the first read) means for the user.

    With TLS 1.3 the client finishes its handshake before the server has checked our
    certificate, so a rejection arrives as an alert on the first read, not in ``connect``.
    """
    detail = tls_reason(exc)
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or detail
        if exc.verify_code in _NAME_MISMATCH:
            return ClientError(
                ExitCode.HOSTNAME_MISMATCH,
                f"the server's certificate is not valid for {where}",
                detail,
            )
        why = _SERVER_CERT.get(exc.verify_code, f"its certificate cannot be verified: {detail}")
        return ClientError(
            ExitCode.SERVER_UNTRUSTED, f"the server at {where} is not trusted: {why}", detail
        )
    reason = exc.reason or ""
    if reason in _NOT_TLS:
        return ClientError(
            ExitCode.PROTOCOL,
            f"{where} does not speak TLS: is that the right port? (mtlschat's default is 7443)",
            detail,
        )
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError) or "UNEXPECTED_EOF" in reason:
        # No alert, just a close: e.g. a server over its connection limit.
        return ClientError(
            ExitCode.REFUSED, f"{where} closed the connection during the TLS handshake"
        )
    if reason in _ALERTS:
        code, text = _ALERTS[reason]
        return ClientError(code, f"{where} rejected your certificate: {text}", detail)
    if "ALERT" in reason:
        return ClientError(
            ExitCode.CERT_REJECTED, f"{where} refused the connection: {tls_reason(exc)}"
        )
    return ClientError(ExitCode.PROTOCOL, f"TLS with {where} failed: {tls_reason(exc)}")
