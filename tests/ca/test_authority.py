"""The CA library: names, the record, renew/revoke/CRL, CSR signing, passphrases, file modes."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mtlschat.ca import CertificateAuthority, PassphraseRequired, WrongPassphrase
from mtlschat.ca.bundle import load_bundle
from mtlschat.ca.crl import load_crl, load_verified_crl, revoked_in
from mtlschat.ca.errors import (
    BadFile,
    BadName,
    BadRequest,
    CAExists,
    CSRRefused,
    NameTaken,
    NoCA,
    OutputExists,
    UnknownName,
)

if TYPE_CHECKING:  # conftest is not importable at run time (--import-mode=importlib)
    from conftest import TestPKI


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _crl_number(path: Path) -> int:
    ext = load_crl(path).extensions.get_extension_for_class(x509.CRLNumber).value
    assert isinstance(ext, x509.CRLNumber)
    return ext.crl_number


def test_init_writes_files_with_safe_modes(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "pki", name="Acme Chat CA")
    assert ca.name == "Acme Chat CA"
    assert _mode(ca.paths.ca_key) == 0o600
    assert _mode(ca.paths.ca_cert) == 0o644
    assert _mode(ca.paths.dir) == 0o700
    assert revoked_in(load_verified_crl(ca.paths.crl, ca.cert)) == frozenset()
    assert ca.paths.ca_key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    assert not list(ca.paths.dir.glob(".*tmp"))  # no temp files left behind


def test_init_refuses_existing_ca_unless_forced(tmp_path: Path) -> None:
    first = CertificateAuthority.init(tmp_path)
    first.issue_user("alice", out=tmp_path / "alice.pem")
    with pytest.raises(CAExists):
        CertificateAuthority.init(tmp_path)
    assert CertificateAuthority.open(tmp_path).cert == first.cert  # untouched
    second = CertificateAuthority.init(tmp_path, force=True)
    assert second.cert != first.cert
    assert second.records() == []  # a new CA starts a new record


def test_open_without_ca(tmp_path: Path) -> None:
    with pytest.raises(NoCA, match="mtlschat ca init"):
        CertificateAuthority.open(tmp_path)


def test_bad_init_arguments(tmp_path: Path) -> None:
    with pytest.raises(BadRequest):
        CertificateAuthority.init(tmp_path, key_type="dsa-1024")
    with pytest.raises(BadRequest):
        CertificateAuthority.init(tmp_path, name="")
    with pytest.raises(BadRequest):
        CertificateAuthority.init(tmp_path, days=0)
    assert not (tmp_path / "ca.key").exists()


def test_user_bundle_is_one_0600_file(pki: TestPKI) -> None:
    path = pki.user("bundle-check")
    assert _mode(path) == 0o600
    text = path.read_text()
    assert text.index("PRIVATE KEY") < text.index("BEGIN CERTIFICATE")
    assert text.count("BEGIN CERTIFICATE") == 2
    b = load_bundle(path)
    assert (b.name, b.encrypted, b.chain) == ("bundle-check", False, [pki.ca.cert])


@pytest.mark.parametrize("name", ["", "-x", "a b", "x" * 33, "é"])
def test_bad_names_refused(pki: TestPKI, tmp_path: Path, name: str) -> None:
    with pytest.raises(BadName):
        pki.ca.issue_user(name, out=tmp_path / "x.pem")
    assert not (tmp_path / "x.pem").exists()


def test_duplicate_name_refused_case_insensitively(fresh_pki: TestPKI, tmp_path: Path) -> None:
    ca = fresh_pki.ca
    ca.issue_user("Dana", out=tmp_path / "dana.pem")
    before = ca.records()
    with pytest.raises(NameTaken):
        ca.issue_user("dana", out=tmp_path / "dana2.pem")
    assert not (tmp_path / "dana2.pem").exists()
    assert ca.records() == before  # nothing recorded
    ca.revoke("DANA")
    again = ca.issue_user("dana", out=tmp_path / "dana3.pem")  # a revoked name can be reissued
    assert load_bundle(again.path).name == "dana"
    assert [r.status() for r in ca.records() if r.name.lower() == "dana"] == ["revoked", "valid"]


def test_expired_cert_does_not_hold_the_name(fresh_pki: TestPKI) -> None:
    old = load_bundle(fresh_pki.expired_user("erin")).cert
    new = load_bundle(fresh_pki.user("erin")).cert  # not NameTaken: the old one is unusable
    statuses = {r.serial: r.status() for r in fresh_pki.ca.records() if r.name == "erin"}
    assert statuses == {old.serial_number: "expired", new.serial_number: "valid"}


def test_existing_output_refused_unless_forced(fresh_pki: TestPKI, tmp_path: Path) -> None:
    out = tmp_path / "frank.pem"
    out.write_text("keep me")
    with pytest.raises(OutputExists):
        fresh_pki.ca.issue_user("frank", out=out)
    assert out.read_text() == "keep me"
    assert fresh_pki.ca.records()[-1].name != "frank"  # the record was rolled back
    fresh_pki.ca.issue_user("frank", out=out, force=True)
    assert load_bundle(out).name == "frank"


def test_revoke_rewrites_crl_with_incrementing_number(fresh_pki: TestPKI) -> None:
    n0 = _crl_number(fresh_pki.crl)
    serial = load_bundle(fresh_pki.user("gina")).cert.serial_number
    assert fresh_pki.ca.revoke("gina", reason="key-compromise") == [serial]
    assert _crl_number(fresh_pki.crl) == n0 + 1
    crl = load_crl(fresh_pki.crl)
    entry = crl.get_revoked_certificate_by_serial_number(serial)
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value
    assert isinstance(reason, x509.CRLReason)
    assert reason.reason == x509.ReasonFlags.key_compromise
    assert crl.next_update_utc is not None and crl.next_update_utc > datetime.now(UTC)
    [rec] = [r for r in fresh_pki.ca.records() if r.serial == serial]
    assert rec.status() == "revoked" and rec.reason == "key-compromise"
    fresh_pki.ca.write_crl()
    assert _crl_number(fresh_pki.crl) == n0 + 2


def test_revoke_unknown_or_twice(fresh_pki: TestPKI) -> None:
    with pytest.raises(UnknownName):
        fresh_pki.ca.revoke("nobody")
    fresh_pki.user("hal")
    fresh_pki.revoke("hal")
    with pytest.raises(UnknownName):
        fresh_pki.ca.revoke("hal")
    with pytest.raises(BadRequest):
        fresh_pki.ca.revoke("hal", reason="because")


def test_revoke_by_serial(fresh_pki: TestPKI) -> None:
    serial = load_bundle(fresh_pki.server_bundle).cert.serial_number
    fresh_pki.ca.revoke_serial(serial, reason="superseded")
    assert serial in revoked_in(load_verified_crl(fresh_pki.crl))
    with pytest.raises(UnknownName):
        fresh_pki.ca.revoke_serial(serial)


def test_renew_keeps_old_valid_unless_asked(fresh_pki: TestPKI, tmp_path: Path) -> None:
    ca = fresh_pki.ca
    old = ca.issue_user("Ivy", out=tmp_path / "ivy.pem")
    new = ca.renew("ivy", out=tmp_path / "ivy2.pem")
    assert new.name == "Ivy" and new.serial != old.serial
    assert load_bundle(new.path).key.public_key() != load_bundle(old.path).key.public_key()
    statuses = {r.serial: r.status() for r in ca.records() if r.name == "Ivy"}
    assert statuses == {old.serial: "valid", new.serial: "valid"}
    newer = ca.renew("ivy", out=tmp_path / "ivy3.pem", revoke_old=True)
    statuses = {r.serial: r.status() for r in ca.records() if r.name == "Ivy"}
    assert statuses == {old.serial: "revoked", new.serial: "revoked", newer.serial: "valid"}
    assert revoked_in(load_verified_crl(fresh_pki.crl)) == {old.serial, new.serial}
    with pytest.raises(UnknownName):
        ca.renew("nobody", out=tmp_path / "n.pem")


def test_failed_renew_revoke_old_leaves_crl_alone(fresh_pki: TestPKI, tmp_path: Path) -> None:
    ca = fresh_pki.ca
    old = ca.issue_user("jade", out=tmp_path / "jade.pem")
    number = _crl_number(fresh_pki.crl)
    with pytest.raises(BadFile):
        ca.renew("jade", out=tmp_path / "missing" / "jade.pem", revoke_old=True)
    assert [r.status() for r in ca.records() if r.name == "jade"] == ["valid"]
    assert old.serial not in revoked_in(load_verified_crl(fresh_pki.crl, ca.cert))
    assert _crl_number(fresh_pki.crl) == number


def test_encrypted_ca_key(tmp_path: Path) -> None:
    CertificateAuthority.init(tmp_path, passphrase=b"s3cret")
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "ca.key").read_bytes()
    listed = CertificateAuthority.open(tmp_path)
    assert listed.key_encrypted and listed.records() == []  # listing needs no passphrase
    with pytest.raises(PassphraseRequired):
        listed.issue_user("alice", out=tmp_path / "a.pem")
    with pytest.raises(WrongPassphrase):
        CertificateAuthority.open(tmp_path, passphrase=b"nope").issue_user(
            "alice", out=tmp_path / "a.pem"
        )
    assert not (tmp_path / "a.pem").exists()
    ok = CertificateAuthority.open(tmp_path, passphrase=b"s3cret")
    ok.issue_user("alice", out=tmp_path / "a.pem")


def test_encrypted_bundle(pki: TestPKI, tmp_path: Path) -> None:
    out = pki.ca.issue_user("enc-user", out=tmp_path / "e.pem", passphrase=b"pw123456").path
    with pytest.raises(PassphraseRequired):
        load_bundle(out)
    with pytest.raises(WrongPassphrase):
        load_bundle(out, b"wrong")
    assert load_bundle(out, b"pw123456").encrypted


# -- bundles that are wrong in every way --


def test_bundle_errors(pki: TestPKI, tmp_path: Path) -> None:
    from mtlschat.ca.errors import BundleError

    alice = pki.user("bundle-errs").read_bytes()
    bob = pki.user("bundle-errs2").read_bytes()
    key_only = alice[: alice.index(b"-----BEGIN CERTIFICATE-----")]
    certs_only = alice[len(key_only) :]
    bob_key = bob[: bob.index(b"-----BEGIN CERTIFICATE-----")]
    cases = {
        "missing": None,
        "garbage": b"hello\n",
        "key only": key_only,
        "certs only": certs_only,
        "mismatch": bob_key + certs_only,
        "corrupt key": b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        + certs_only,
    }
    messages = {
        "missing": "not found",
        "garbage": "no private key",
        "key only": "no certificate",
        "certs only": "no private key",
        "mismatch": "does not match",
        "corrupt key": "unreadable",
    }
    for label, data in cases.items():
        path = tmp_path / f"{label.replace(' ', '-')}.pem"
        if data is not None:
            path.write_bytes(data)
        with pytest.raises(BundleError, match=messages[label]) as info:
            load_bundle(path)
        assert "\n" not in str(info.value)
    with pytest.raises(BundleError, match="directory"):
        load_bundle(tmp_path)


def test_crl_signature_checked(pki: TestPKI, tmp_path: Path) -> None:
    other = CertificateAuthority.init(tmp_path / "other")
    with pytest.raises(BadFile, match="not signed by the CA"):
        revoked_in(load_verified_crl(other.paths.crl, pki.ca.cert))
    (tmp_path / "bad.pem").write_text("nope")
    with pytest.raises(BadFile):
        revoked_in(load_verified_crl(tmp_path / "bad.pem"))


# -- CSR signing --


def _csr(
    cn: str = "jules",
    *,
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None,
    extensions: list[x509.ExtensionType] = (),  # type: ignore[assignment]
    extra_subject: bool = False,
) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if extra_subject:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Evil"))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    for ext in extensions:
        builder = builder.add_extension(ext, critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def test_sign_csr(fresh_pki: TestPKI, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = tmp_path / "jules.csr"
    csr.write_bytes(_csr(key=key, extensions=[x509.BasicConstraints(ca=False, path_length=None)]))
    issued = fresh_pki.ca.sign_csr(csr, out=tmp_path / "jules.crt")
    assert issued.cert.public_key() == key.public_key()
    assert _mode(issued.path) == 0o644  # no secret in it
    certs = x509.load_pem_x509_certificates(issued.path.read_bytes())
    assert certs == [issued.cert, fresh_pki.ca.cert]
    eku = issued.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]  # type: ignore[call-overload]
    with pytest.raises(NameTaken):
        fresh_pki.ca.sign_csr(csr, out=tmp_path / "again.crt")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"extensions": [x509.BasicConstraints(ca=True, path_length=None)]}, "CA powers"),
        (
            {"extensions": [x509.SubjectAlternativeName([x509.DNSName("bank.example")])]},
            "extension",
        ),
        (
            {"extensions": [x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])]},
            "clientAuth",
        ),
        ({"extra_subject": True}, "just CN"),
        ({"key": rsa.generate_private_key(65537, 1024)}, "too small"),
    ],
)
def test_sign_csr_refusals(
    fresh_pki: TestPKI, tmp_path: Path, kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(CSRRefused, match=match):
        fresh_pki.ca.sign_csr(_csr(**kwargs), out=tmp_path / "x.crt")  # type: ignore[arg-type]
    assert not (tmp_path / "x.crt").exists()
    assert [r.name for r in fresh_pki.ca.records()] == ["localhost"]


def test_sign_csr_bad_name_and_bad_file(fresh_pki: TestPKI, tmp_path: Path) -> None:
    with pytest.raises(BadName):
        fresh_pki.ca.sign_csr(_csr("bad name"), out=tmp_path / "x.crt")
    (tmp_path / "junk.csr").write_text("not a csr")
    with pytest.raises(BadFile):
        fresh_pki.ca.sign_csr(tmp_path / "junk.csr")


def test_issue_server_hosts(fresh_pki: TestPKI, tmp_path: Path) -> None:
    issued = fresh_pki.ca.issue_server(
        ["chat.example.org", "*.example.org", "10.0.0.1"], out=tmp_path / "s.pem"
    )
    sans = issued.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["chat.example.org", "*.example.org"]
    for bad in (["bad host"], [], ["-x.example"]):
        with pytest.raises(BadRequest):
            fresh_pki.ca.issue_server(bad, out=tmp_path / "t.pem")
    with pytest.raises(OutputExists):  # server.pem is there already
        fresh_pki.ca.issue_server(["localhost"])
    assert timedelta(0) < issued.not_after - datetime.now(UTC) <= timedelta(days=397)


def test_crl_is_backdated_like_certificates(tmp_path: Path) -> None:
    """A server whose clock is a few minutes behind the CA's must still accept the CRL."""
    ca = CertificateAuthority.init(tmp_path / "pki")
    before = datetime.now(UTC)
    crl = load_crl(ca.write_crl())
    assert crl.last_update_utc <= before - timedelta(minutes=4)
    assert crl.next_update_utc is not None and crl.next_update_utc > before + timedelta(days=179)
