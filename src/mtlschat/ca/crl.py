"""Certificate revocation lists: building one, and reading one back (checked against the CA).

The server loads ``crl.pem`` with :func:`load_verified_crl` and reads its serials with
:func:`revoked_in`, to drop connections whose certificate has since been revoked.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

from cryptography import x509

from mtlschat.ca.db import Revocation
from mtlschat.ca.errors import BadFile, BadRequest
from mtlschat.ca.fileio import read_file
from mtlschat.ca.keys import PrivateKey, signature_hash
from mtlschat.ca.profile import CLOCK_SKEW

# The CRL's nextUpdate: OpenSSL rejects every certificate once it has passed, so run
# `mtlschat ca crl` well before (cron/systemd timer). easy-rsa uses the same default.
DEFAULT_CRL_DAYS = 180


class Reason(StrEnum):
    """Revocation reasons (``--reason``). certificateHold is left out: revocation is final."""

    unspecified = "unspecified"
    key_compromise = "key-compromise"
    ca_compromise = "ca-compromise"
    affiliation_changed = "affiliation-changed"
    superseded = "superseded"
    cessation_of_operation = "cessation-of-operation"
    privilege_withdrawn = "privilege-withdrawn"


# CLI spelling -> RFC 5280 reason (the member names match cryptography's ReasonFlags).
REASONS: dict[str, x509.ReasonFlags] = {r.value: x509.ReasonFlags[r.name] for r in Reason}


def check_reason(reason: str) -> str:
    """Return ``reason`` if it is one of :data:`REASONS`, else raise :class:`BadRequest`."""
    if reason not in REASONS:
        raise BadRequest(f"unknown reason {reason!r} (choose from {', '.join(REASONS)})")
    return reason


def build_crl(
    *,
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    revoked: Iterable[Revocation],
    number: int,
    now: datetime,
    days: int = DEFAULT_CRL_DAYS,
) -> x509.CertificateRevocationList:
    """A CRL listing ``revoked``, with a CRL number, AKI and a nextUpdate ``days`` away."""
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        # Backdated like certificates: a server whose clock is a little behind the CA's would
        # otherwise find the CRL "not yet valid" and refuse every client until it caught up.
        .last_update(now - CLOCK_SKEW)
        .next_update(now + timedelta(days=days))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    for rec in revoked:
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(rec.serial)
            .revocation_date(rec.revoked_at)
        )
        reason = REASONS.get(rec.reason, x509.ReasonFlags.unspecified)
        # RFC 5280 5.3.1: "unspecified" SHOULD be expressed by leaving the reason out.
        if reason is not x509.ReasonFlags.unspecified:
            entry = entry.add_extension(x509.CRLReason(reason), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(ca_key, signature_hash(ca_key))


def load_crl(crl_path: Path) -> x509.CertificateRevocationList:
    """Parse a PEM (or DER) CRL file, with one-line errors."""
    data = read_file(crl_path, "CRL")
    try:
        if b"-----BEGIN X509 CRL-----" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError:
        raise BadFile(f"{crl_path} is not a valid CRL") from None


def revoked_in(crl: x509.CertificateRevocationList) -> frozenset[int]:
    """The serial numbers a parsed CRL lists."""
    return frozenset(entry.serial_number for entry in crl)


def load_verified_crl(
    crl_path: Path, issuer: x509.Certificate | None = None
) -> x509.CertificateRevocationList:
    """Parse a CRL file; with ``issuer``, check that CA signed it (else :class:`BadFile`)."""
    crl = load_crl(crl_path)
    if issuer is not None:
        ok = crl.issuer == issuer.subject
        try:
            ok = ok and crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise BadFile(f"{crl_path} is not signed by the CA")
    return crl


def check_crl_days(days: int) -> None:
    """Refuse a nextUpdate that is not in the future."""
    if days < 1:
        raise BadRequest(f"CRL validity must be at least 1 day (got {days})")
    try:
        datetime.now(UTC) + timedelta(days=days)
    except OverflowError:
        raise BadRequest(f"CRL validity of {days} days is too long (past the year 9999)") from None
