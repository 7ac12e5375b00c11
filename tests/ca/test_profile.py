"""The certificate profile: exactly the extensions the issue asks for, for every key type."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from mtlschat.ca import CertificateAuthority
from mtlschat.ca.bundle import load_bundle
from mtlschat.ca.errors import BadRequest
from mtlschat.ca.keys import KEY_TYPES
from mtlschat.ca.profile import MAX_SERVER_DAYS

if TYPE_CHECKING:  # conftest is not importable at run time (--import-mode=importlib)
    from conftest import TestPKI


def _ext(
    cert: x509.Certificate, cls: type[x509.ExtensionType]
) -> x509.Extension[x509.ExtensionType]:
    return cert.extensions.get_extension_for_class(cls)


def test_root_profile(pki: TestPKI) -> None:
    cert = pki.ca.cert
    bc = _ext(cert, x509.BasicConstraints)
    assert bc.critical and bc.value == x509.BasicConstraints(ca=True, path_length=0)
    ku = _ext(cert, x509.KeyUsage)
    assert ku.critical
    assert isinstance(ku.value, x509.KeyUsage)
    assert ku.value.key_cert_sign and ku.value.crl_sign and not ku.value.digital_signature
    _ext(cert, x509.SubjectKeyIdentifier)
    assert cert.subject == cert.issuer
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.signature_hash_algorithm is not None
    assert cert.signature_hash_algorithm.name == "sha256"


@pytest.mark.parametrize("kind", ["user", "server"])
def test_leaf_profile(pki: TestPKI, kind: str) -> None:
    path = pki.user("profile-user") if kind == "user" else pki.server_bundle
    bundle = load_bundle(path)
    cert = bundle.cert
    bc = _ext(cert, x509.BasicConstraints)
    assert bc.critical and bc.value == x509.BasicConstraints(ca=False, path_length=None)
    ku = _ext(cert, x509.KeyUsage)
    assert ku.critical and isinstance(ku.value, x509.KeyUsage)
    assert ku.value.digital_signature
    assert not ku.value.key_encipherment  # EC key: no key transport
    assert not ku.value.key_cert_sign and not ku.value.crl_sign
    eku = _ext(cert, x509.ExtendedKeyUsage).value
    want = ExtendedKeyUsageOID.CLIENT_AUTH if kind == "user" else ExtendedKeyUsageOID.SERVER_AUTH
    assert list(eku) == [want]  # type: ignore[call-overload]
    ski = _ext(cert, x509.SubjectKeyIdentifier).value
    aki = _ext(cert, x509.AuthorityKeyIdentifier).value
    ca_ski = _ext(pki.ca.cert, x509.SubjectKeyIdentifier).value
    assert isinstance(aki, x509.AuthorityKeyIdentifier) and isinstance(
        ca_ski, x509.SubjectKeyIdentifier
    )
    assert aki.key_identifier == ca_ski.digest
    assert ski is not None
    assert cert.serial_number > 0
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime <= timedelta(days=MAX_SERVER_DAYS)
    assert bundle.chain == [pki.ca.cert]
    if kind == "server":
        sans = _ext(cert, x509.SubjectAlternativeName).value
        assert isinstance(sans, x509.SubjectAlternativeName)
        assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
        assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    else:
        with pytest.raises(x509.ExtensionNotFound):
            cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)


def test_serials_are_random_and_distinct(pki: TestPKI) -> None:
    serials = {r.serial for r in pki.ca.records()}
    pki.user("serial-a")
    pki.user("serial-b")
    after = {r.serial for r in pki.ca.records()}
    assert len(after) == len(serials) + 2
    assert all(s.bit_length() > 64 for s in after)


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_every_key_type_verifies_with_openssl(tmp_path: Path, key_type: str, openssl: str) -> None:
    ca = CertificateAuthority.init(tmp_path / "pki", key_type=key_type)
    issued = ca.issue_user("alice", out=tmp_path / "alice.pem", key_type=key_type)
    key = load_bundle(issued.path).key
    ku = _ext(issued.cert, x509.KeyUsage).value
    assert isinstance(ku, x509.KeyUsage)
    assert ku.key_encipherment == isinstance(key, rsa.RSAPrivateKey)
    if key_type == "ed25519":
        assert isinstance(key, ed25519.Ed25519PrivateKey)
    result = subprocess.run(
        [
            openssl,
            "verify",
            "-CAfile",
            str(ca.paths.ca_cert),
            "-purpose",
            "sslclient",
            str(issued.path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_leaf_validity_capped_and_checked(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "pki", days=30)
    issued = ca.issue_user("alice", out=tmp_path / "a.pem", days=100)
    assert issued.not_after <= ca.cert.not_valid_after_utc  # never outlives the CA
    with pytest.raises(BadRequest):
        ca.issue_server(["h"], out=tmp_path / "h.pem", days=MAX_SERVER_DAYS + 1)
    with pytest.raises(BadRequest):
        ca.issue_user("bob", out=tmp_path / "b.pem", days=0)


def test_expired_user_is_entirely_in_the_past(pki: TestPKI) -> None:
    cert = load_bundle(pki.expired_user("old-timer")).cert
    assert cert.not_valid_after_utc < datetime.now(UTC)
    assert cert.not_valid_before_utc < cert.not_valid_after_utc
