"""What ``ca list`` shows: one typed row per certificate, which serialises to JSON as it is."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509

from mtlschat.ca.db import CertRecord

# Certificates (and the CRL) that stop working within this many days are marked in `ca list`.
EXPIRY_WARNING = timedelta(days=30)


@dataclass(frozen=True)
class CertRow:
    """One certificate as listed: dates are aware UTC datetimes, the serial is hex."""

    serial: str
    name: str
    kind: str
    not_before: datetime
    not_after: datetime
    status: str  # valid, expired or revoked
    revoked_at: datetime | None
    reason: str | None
    sha256: str
    expires_soon: bool  # valid, and expires within EXPIRY_WARNING
    bench: bool  # issued by `mtlschat bench` (hidden by `ca list` unless --all or --bench)

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict (datetimes as ISO 8601 strings)."""
        return {
            k: v.isoformat() if isinstance(v, datetime) else v
            for k, v in dataclasses.asdict(self).items()
        }


def cert_rows(records: Iterable[CertRecord], now: datetime) -> list[CertRow]:
    """The rows for ``records`` as of ``now``."""
    rows = []
    for r in records:
        status = r.status(now)
        rows.append(
            CertRow(
                serial=f"{r.serial:x}",
                name=r.name,
                kind=r.kind,
                not_before=r.not_before,
                not_after=r.not_after,
                status=status,
                revoked_at=r.revoked_at,
                reason=r.reason,
                sha256=r.fingerprint,
                expires_soon=status == "valid" and r.not_after - now <= EXPIRY_WARNING,
                bench=r.bench,
            )
        )
    return rows


@dataclass(frozen=True)
class CRLState:
    """What ``crl.pem`` says, for ``ca list`` and ``ca crl --if-due``."""

    number: int | None
    next_update: datetime | None
    revoked: int  # how many serials it lists
    expires_soon: bool  # nextUpdate within EXPIRY_WARNING
    expired: bool  # nextUpdate passed: OpenSSL refuses every client against it

    def due(self, within: timedelta, now: datetime) -> bool:
        """Whether the CRL must be re-signed now to stay valid for ``within``."""
        return self.next_update is None or self.next_update - now <= within


def crl_state(crl: x509.CertificateRevocationList, now: datetime) -> CRLState:
    """The state of a parsed CRL as of ``now``."""
    try:
        number: int | None = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = None
    nxt = crl.next_update_utc
    return CRLState(
        number=number,
        next_update=nxt,
        revoked=len(crl),
        expires_soon=nxt is not None and nxt - now <= EXPIRY_WARNING,
        expired=nxt is not None and nxt <= now,
    )
