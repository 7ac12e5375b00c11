"""TLS for the client: the SSLContext built from a bundle, and what each TLS failure means.

The bundle (``mtlschat ca issue``) holds our key, our certificate and the CA certificate; the CA
certificate is the trust anchor for the server unless ``--ca`` names another file.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from mtlschat.ca.bundle import Bundle, load_bundle
from mtlschat.ca.errors import BundleError, CAError, PassphraseRequired, WrongPassphrase
from mtlschat.chat.wire import ALPN_JSON
from mtlschat.client.errors import ClientError, ExitCode
from mtlschat.tlserror import tls_reason

PASSPHRASE_ENV = "MTLSCHAT_BUNDLE_PASSPHRASE"

# OpenSSL verify codes (X509_V_ERR_*) that mean "right CA, wrong name".
_NAME_MISMATCH = {62, 63, 64}  # hostname, email, IP address mismatch

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


def load_identity(bundle: Path, passphrase: str | None) -> Bundle:
    """Check the bundle can be used and return it.

    Raises :class:`ClientError` with the bundle exit codes (missing, unreadable, no key, wrong
    passphrase) so the user hears about it before any network traffic.
    """
    if not bundle.exists():
        raise ClientError(ExitCode.BUNDLE_MISSING, f"certificate bundle {bundle} does not exist")
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
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or tls_reason(exc)
        if exc.verify_code in _NAME_MISMATCH:
            return ClientError(
                ExitCode.HOSTNAME_MISMATCH,
                f"the server certificate is not valid for {where}: {detail}",
            )
        return ClientError(
            ExitCode.SERVER_UNTRUSTED,
            f"the server at {where} is not trusted (not signed by your CA): {detail}",
        )
    reason = exc.reason or ""
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError) or "UNEXPECTED_EOF" in reason:
        # No alert, just a close: e.g. a server over its connection limit.
        return ClientError(
            ExitCode.REFUSED, f"{where} closed the connection during the TLS handshake"
        )
    if reason in _ALERTS:
        code, text = _ALERTS[reason]
        return ClientError(code, f"{where} rejected your certificate: {text}")
    if "ALERT" in reason:
        return ClientError(
            ExitCode.CERT_REJECTED, f"{where} refused the connection: {tls_reason(exc)}"
        )
    return ClientError(ExitCode.PROTOCOL, f"TLS with {where} failed: {tls_reason(exc)}")
