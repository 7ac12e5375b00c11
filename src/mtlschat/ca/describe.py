"""Describe a certificate, bundle, CSR, CRL or PKCS#12 file for ``mtlschat ca show``."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from mtlschat.ca.errors import BadFile, PassphraseRequired, WrongPassphrase
from mtlschat.ca.fileio import read_file
from mtlschat.ca.keys import describe_public_key


@dataclass
class Section:
    """One object found in the file, as ordered (label, value) pairs."""

    title: str
    fields: list[tuple[str, str]] = field(default_factory=list)


def _when(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _sans(cert: x509.Certificate) -> str | None:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    parts = [f"DNS:{n}" for n in ext.get_values_for_type(x509.DNSName)]
    parts += [f"IP:{ip}" for ip in ext.get_values_for_type(x509.IPAddress)]
    parts += [f"email:{n}" for n in ext.get_values_for_type(x509.RFC822Name)]
    return ", ".join(parts)


def _usage(cert: x509.Certificate) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for ext in cert.extensions:
        v = ext.value
        if isinstance(v, x509.BasicConstraints):
            ca = f"CA:TRUE, pathlen {v.path_length}" if v.ca else "CA:FALSE"
            out.append(("basic constraints", ca))
        elif isinstance(v, x509.KeyUsage):
            flags = [
                n
                for n in ("digital_signature", "key_encipherment", "key_cert_sign", "crl_sign")
                if getattr(v, n)
            ]
            out.append(("key usage", ", ".join(flags)))
        elif isinstance(v, x509.ExtendedKeyUsage):
            out.append(("extended key usage", ", ".join(o._name for o in v)))
    return out


def describe_certificate(cert: x509.Certificate, title: str = "certificate") -> Section:
    """Subject, issuer, SANs, validity, key type and SHA-256 fingerprint of one certificate."""
    now = datetime.now(UTC)
    s = Section(title)
    s.fields.append(("subject", cert.subject.rfc4514_string()))
    s.fields.append(("issuer", cert.issuer.rfc4514_string()))
    s.fields.append(("serial", f"{cert.serial_number:x}"))
    sans = _sans(cert)
    if sans is not None:
        s.fields.append(("subject alt names", sans))
    s.fields.append(("not before", _when(cert.not_valid_before_utc)))
    expired = " (expired)" if cert.not_valid_after_utc <= now else ""
    s.fields.append(("not after", _when(cert.not_valid_after_utc) + expired))
    s.fields.append(("key type", describe_public_key(cert.public_key())))
    s.fields.extend(_usage(cert))
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
    s.fields.append(("sha256 fingerprint", ":".join(digest[i : i + 2] for i in range(0, 64, 2))))
    return s


def _describe_csr(csr: x509.CertificateSigningRequest) -> Section:
    s = Section("certificate signing request")
    s.fields.append(("subject", csr.subject.rfc4514_string()))
    s.fields.append(("key type", describe_public_key(csr.public_key())))
    s.fields.append(("signature valid", "yes" if csr.is_signature_valid else "NO"))
    return s


def _describe_crl(crl: x509.CertificateRevocationList) -> Section:
    s = Section("certificate revocation list")
    s.fields.append(("issuer", crl.issuer.rfc4514_string()))
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        s.fields.append(("CRL number", str(number)))
    except x509.ExtensionNotFound:
        pass
    s.fields.append(("last update", _when(crl.last_update_utc)))
    if crl.next_update_utc is not None:
        s.fields.append(("next update", _when(crl.next_update_utc)))
    serials = ", ".join(f"{r.serial_number:x}" for r in crl) or "none"
    s.fields.append(("revoked serials", serials))
    return s


def _der_certificate(data: bytes) -> Section:
    return describe_certificate(x509.load_der_x509_certificate(data))


def _der_csr(data: bytes) -> Section:
    return _describe_csr(x509.load_der_x509_csr(data))


def _der_crl(data: bytes) -> Section:
    return _describe_crl(x509.load_der_x509_crl(data))


def _looks_like_pkcs12(data: bytes) -> bool:
    """A DER SEQUENCE whose first element is INTEGER 3: a PKCS#12 PFX (RFC 7292)."""
    if len(data) < 8 or data[0] != 0x30:
        return False
    offset = 2 if data[1] < 0x80 else 2 + (data[1] & 0x7F)
    return data[offset : offset + 3] == b"\x02\x01\x03"


def _describe_pkcs12(
    data: bytes, path: Path, password: Callable[[], bytes | None] | None
) -> list[Section]:
    """The key, certificate and other certificates of a PKCS#12 file (``ca export`` writes a
    key and its chain, ``ca truststore`` a trusted certificate)."""
    try:
        store = pkcs12.load_pkcs12(data, None)
    except ValueError:
        secret = password() if password is not None else None
        if secret is None:
            raise PassphraseRequired(f"{path} is a PKCS#12 file: its password is needed") from None
        try:
            store = pkcs12.load_pkcs12(data, secret)
        except ValueError:
            raise WrongPassphrase(f"wrong password for the PKCS#12 file {path}") from None
    sections: list[Section] = []
    if store.key is not None:
        sections.append(Section("private key", [("format", "PKCS#12 (password-protected)")]))
    entries = ([store.cert] if store.cert is not None else []) + list(store.additional_certs)
    for entry in entries:
        if store.key is not None:
            title = "certificate" if entry is store.cert else "chain"
        else:
            title = "trusted certificate"
        section = describe_certificate(entry.certificate, title)
        if entry.friendly_name:
            section.fields.insert(0, ("alias", entry.friendly_name.decode("utf-8", "replace")))
        sections.append(section)
    return sections


def describe_file(path: Path, password: Callable[[], bytes | None] | None = None) -> list[Section]:
    """Every certificate, CSR, CRL (and whether a private key is there) in a PEM, DER or
    PKCS#12 file. ``password`` is asked only for a PKCS#12 file that needs one."""
    data = read_file(path)
    sections: list[Section] = []
    if b"-----BEGIN" in data:
        if b"PRIVATE KEY-----" in data:
            encrypted = b"ENCRYPTED" in data  # PKCS#8 or legacy Proc-Type header
            sections.append(Section("private key", [("encrypted", "yes" if encrypted else "no")]))
        if b"CERTIFICATE-----" in data and b"CERTIFICATE REQUEST" not in data:
            try:
                certs = x509.load_pem_x509_certificates(data)
            except ValueError:
                raise BadFile(f"{path}: unreadable certificate") from None
            for i, cert in enumerate(certs):
                sections.append(describe_certificate(cert, "certificate" if i == 0 else "chain"))
        if b"CERTIFICATE REQUEST-----" in data:
            try:
                sections.append(_describe_csr(x509.load_pem_x509_csr(data)))
            except ValueError:
                raise BadFile(f"{path}: unreadable certificate signing request") from None
        if b"X509 CRL-----" in data:
            try:
                sections.append(_describe_crl(x509.load_pem_x509_crl(data)))
            except ValueError:
                raise BadFile(f"{path}: unreadable CRL") from None
    elif _looks_like_pkcs12(data):
        sections = _describe_pkcs12(data, path, password)
    else:
        for load in (_der_certificate, _der_csr, _der_crl):
            try:
                sections.append(load(data))
                break
            except ValueError:
                continue
    if not any(s.title != "private key" for s in sections):
        raise BadFile(f"{path} holds no certificate, CSR or CRL")
    return sections
