"""What a server checks about its own PKI files, at startup and at every reload.

One place for these checks, so a reload can never accept what startup would refuse:

- :func:`check_server_bundle`: the server's key + certificate is a *server* certificate
  (serverAuth), signed by the CA the server trusts, matching its key, and valid now;
- :func:`check_crl`: the CRL is signed by that CA and, once one has been enforced, is not older
  than the last good one (revocation fails closed: a missing, unreadable, foreign or older CRL is
  refused, never silently replaced by "nothing is revoked");
- :func:`expiring`: what expires within the warning window (certificates, CA, CRL nextUpdate).

Every error is a :class:`~mtlschat.ca.errors.CAError` whose message is one line naming the fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID

from mtlschat.ca.bundle import load_bundle
from mtlschat.ca.crl import load_crl, revoked_in
from mtlschat.ca.errors import BadFile, CAError, PassphraseRequired
from mtlschat.ca.fileio import read_file

WARN_BEFORE = timedelta(days=30)  # expiry warnings start this long before the date
_ISSUE_SERVER = "`mtlschat ca issue --server HOST... --force`"


class TrustError(BadFile):
    """The server's certificate, CA or CRL is unusable; the message names the fix."""


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def load_ca_certs(ca_path: Path) -> list[x509.Certificate]:
    """The CA certificate(s) in ``ca_path`` (PEM), with a one-line error."""
    data = read_file(ca_path, "CA certificate")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise TrustError(f"{ca_path} holds no PEM certificate (expected the CA's ca.crt)")
    return certs


def _signed_by(
    item: x509.Certificate | x509.CertificateRevocationList, ca: x509.Certificate
) -> bool:
    if item.issuer != ca.subject:
        return False
    try:
        if isinstance(item, x509.Certificate):
            item.verify_directly_issued_by(ca)
            return True
        return item.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    except (ValueError, TypeError, InvalidSignature):
        return False


@dataclass(frozen=True, slots=True)
class ServerCert:
    """A checked server certificate."""

    path: Path
    cert: x509.Certificate

    @property
    def not_after(self) -> datetime:
        """When it expires (UTC)."""
        return self.cert.not_valid_after_utc


def check_server_bundle(
    bundle: Path, cas: Sequence[x509.Certificate], ca_path: Path, now: datetime
) -> ServerCert:
    """Check the server's bundle against the CA(s) it trusts; raise :class:`TrustError`.

    Refused: a key that does not match the certificate, a certificate without the serverAuth
    extended key usage (e.g. a member's), one not signed by a CA in ``cas`` (e.g. left over from
    a CA replaced by ``ca init --force``), and one outside its validity period.
    """
    try:
        loaded = load_bundle(bundle)
    except PassphraseRequired:
        raise TrustError(
            f"the server key in {bundle} is passphrase-protected (not supported): "
            f"issue the server an unencrypted one with {_ISSUE_SERVER}"
        ) from None
    except CAError as exc:
        raise TrustError(
            f"cannot load server certificate/key: {exc} (issue a new one with {_ISSUE_SERVER})"
        ) from None
    cert = loaded.cert
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        server_auth = ExtendedKeyUsageOID.SERVER_AUTH in usages
    except x509.ExtensionNotFound:
        server_auth = False
    if not server_auth:
        who = f" ({loaded.name!r})" if loaded.name else ""
        raise TrustError(
            f"{bundle}{who} is not a server certificate (no serverAuth): "
            f"give the server its own with {_ISSUE_SERVER}"
        )
    if not any(_signed_by(cert, ca) for ca in cas):
        raise TrustError(
            f"{bundle} is not signed by the CA in {ca_path} (left over from a replaced CA?): "
            f"issue a new one with {_ISSUE_SERVER}"
        )
    if now >= cert.not_valid_after_utc:
        raise TrustError(
            f"the server certificate {bundle} expired on {_when(cert.not_valid_after_utc)}: "
            f"issue a new one with {_ISSUE_SERVER}"
        )
    if now < cert.not_valid_before_utc:
        raise TrustError(
            f"the server certificate {bundle} is not valid before "
            f"{_when(cert.not_valid_before_utc)} (is this machine's clock right?)"
        )
    return ServerCert(bundle, cert)


@dataclass(frozen=True, slots=True)
class CRLState:
    """A CRL that passed :func:`check_crl`: what it revokes and where it stands in time."""

    path: Path
    number: int | None  # the CRLNumber extension (None if it has none)
    last_update: datetime
    next_update: datetime | None
    revoked: frozenset[int]

    def expired(self, now: datetime) -> bool:
        """Whether its nextUpdate has passed (OpenSSL would then refuse every client)."""
        return self.next_update is not None and now >= self.next_update


def check_crl(
    crl_path: Path, cas: Sequence[x509.Certificate], previous: CRLState | None = None
) -> CRLState:
    """Load a CRL signed by one of ``cas``; with ``previous``, refuse one older than it.

    Raises :class:`TrustError` for a missing or unreadable file, a CRL not signed by the CA,
    and (given ``previous``) a CRL with a lower CRL number or an earlier lastUpdate: an old copy
    put back would un-revoke whoever was revoked since.
    """
    if previous is not None and not crl_path.exists():
        raise TrustError(
            f"the CRL {crl_path} has disappeared: put it back (`mtlschat ca crl` rewrites it)"
        )
    crl = load_crl(crl_path)
    if not any(_signed_by(crl, ca) for ca in cas):
        raise TrustError(f"the CRL {crl_path} is not signed by the CA the server trusts")
    try:
        number: int | None = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = None
    state = CRLState(
        path=crl_path,
        number=number,
        last_update=crl.last_update_utc,
        next_update=crl.next_update_utc,
        revoked=revoked_in(crl),
    )
    if previous is not None:
        older = state.last_update < previous.last_update
        if state.number is not None and previous.number is not None:
            older = older or state.number < previous.number
        if older:
            raise TrustError(
                f"the CRL {crl_path} (number {state.number}, {_when(state.last_update)}) is older "
                f"than the one in force (number {previous.number}, "
                f"{_when(previous.last_update)}): run `mtlschat ca crl` to write a current one"
            )
    return state


def expiring(
    items: Sequence[tuple[str, datetime | None]], now: datetime, within: timedelta = WARN_BEFORE
) -> list[tuple[str, datetime]]:
    """The ``(what, when)`` pairs whose date falls before ``now + within`` (past ones too)."""
    return [(what, when) for what, when in items if when is not None and when - now < within]
