"""The certificate profiles: exactly which extensions a root, a user and a server cert carry.

Root: basicConstraints CA:TRUE pathLen 0 (critical), keyUsage keyCertSign + cRLSign (critical),
SKI. Leaves: CA:FALSE (critical), keyUsage digitalSignature (critical; plus keyEncipherment for
RSA keys only, which can do RSA key transport in TLS 1.2), EKU clientAuth or serverAuth, SKI, AKI.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mtlschat.ca.errors import BadRequest
from mtlschat.ca.keys import PrivateKey, signature_hash

# Server certificates: the CA/Browser Forum ceiling, which clients (browsers, Java) may enforce.
# Member certificates of a private CA may live longer if the operator asks (--days/--valid), up
# to the CA's own expiry.
MAX_SERVER_DAYS = 397
DEFAULT_LEAF_DAYS = 365  # Mozilla "intermediate" wants server certificates under 366 days
MIN_VALIDITY = timedelta(hours=1)
_DURATION = re.compile(r"(\d+)\s*([hdwy]?)")
_UNIT_HOURS = {"h": 1, "d": 24, "": 24, "w": 7 * 24, "y": 365 * 24}
DEFAULT_CA_DAYS = 3650
CLOCK_SKEW = timedelta(minutes=5)  # backdate notBefore so a slightly slow clock still accepts

_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, lowercase hex."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def common_name(name: x509.Name) -> str | None:
    """The (first) CN of a distinguished name, if any."""
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attrs:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def check_days(days: int) -> None:
    """Refuse a non-positive number of days, or one past the year 9999."""
    if days < 1:
        raise BadRequest(f"--days must be at least 1 (got {days})")
    try:
        datetime.now(UTC) + timedelta(days=days)
    except OverflowError:
        raise BadRequest(f"--days {days} is too large (past the year 9999)") from None


def parse_validity(text: str) -> timedelta:
    """A validity such as ``90d``, ``8760h``, ``12w``, ``2y`` (365 days) or ``90`` (days)."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise BadRequest(
            f"invalid validity {text!r}: use a number with h, d, w or y, e.g. 90d or 8760h"
        )
    hours = int(match.group(1)) * _UNIT_HOURS[match.group(2)]
    try:
        return timedelta(hours=hours)
    except OverflowError:
        raise BadRequest(f"validity {text!r} is too long (past the year 9999)") from None


def check_validity(validity: timedelta, *, server: bool) -> None:
    """Refuse less than an hour, past the year 9999, or over :data:`MAX_SERVER_DAYS` for a
    server certificate."""
    if validity < MIN_VALIDITY:
        raise BadRequest("a certificate must be valid for at least 1 hour")
    if server and validity > timedelta(days=MAX_SERVER_DAYS):
        raise BadRequest(
            f"a server certificate may be valid for at most {MAX_SERVER_DAYS} days "
            "(clients may refuse longer ones)"
        )
    try:
        datetime.now(UTC) + validity
    except OverflowError:
        raise BadRequest("the validity is too long (past the year 9999)") from None


def parse_host(host: str) -> x509.GeneralName:
    """A server SAN: an IP address, or a DNS name (optionally one leading ``*.`` wildcard)."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    name = host[:-1] if host.endswith(".") else host
    labels = name.split(".")
    if labels and labels[0] == "*" and len(labels) > 2:
        labels = labels[1:]
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise BadRequest(f"invalid host name or IP address {host!r}")
    return x509.DNSName(name.lower())


def build_root(
    key: PrivateKey, name: str, not_before: datetime, not_after: datetime
) -> x509.Certificate:
    """A self-signed root CA certificate."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return builder.sign(key, signature_hash(key))


def build_leaf(
    *,
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    public_key: CertificatePublicKeyTypes,
    cn: str,
    server: bool,
    not_before: datetime,
    not_after: datetime,
    sans: Sequence[x509.GeneralName] = (),
) -> x509.Certificate:
    """A leaf certificate signed by the CA: clientAuth for a user, serverAuth for a server."""
    is_rsa = isinstance(public_key, rsa.RSAPublicKey)
    eku = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=is_rsa,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(ca_key, signature_hash(ca_key))
