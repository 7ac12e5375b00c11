"""The shared PKI fixtures produce what they promise."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mtlschat.ca.bundle import load_bundle
from mtlschat.ca.crl import load_verified_crl, revoked_in

if TYPE_CHECKING:  # conftest is not importable at run time (--import-mode=importlib)
    from conftest import TestPKI


def test_session_pki_has_ca_server_and_crl(pki: TestPKI) -> None:
    assert pki.ca_cert.is_file() and pki.crl.is_file()
    server = load_bundle(pki.server_bundle)
    assert server.name == "localhost"
    assert revoked_in(load_verified_crl(pki.crl, pki.ca.cert)) == frozenset()


def test_user_bundles_are_cached_and_distinct(pki: TestPKI) -> None:
    alice = pki.user("alice")
    assert pki.user("alice") == alice
    assert load_bundle(alice).name == "alice"
    assert load_bundle(pki.user("bob")).cert != load_bundle(alice).cert


def test_expired_and_other_ca_users(pki: TestPKI) -> None:
    expired = load_bundle(pki.expired_user("alice"))
    assert expired.cert.not_valid_after_utc < datetime.now(UTC)
    other = load_bundle(pki.other_ca_user("alice"))
    assert other.chain[0].public_key() != pki.ca.cert.public_key()


def test_fresh_pki_revoke_updates_crl(fresh_pki: TestPKI) -> None:
    serial = load_bundle(fresh_pki.user("carol")).cert.serial_number
    fresh_pki.revoke("carol")
    assert revoked_in(load_verified_crl(fresh_pki.crl, fresh_pki.ca.cert)) == {serial}
