"""The library's export, passphrase retries and listing rows (what ``ca export`` / ``ca list``
print is built here; the CLI only parses and prints)."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12

from mtlschat.ca import PassphraseRequired, WrongPassphrase
from mtlschat.ca.bundle import AskPassphrase, unlock_bundle
from mtlschat.ca.errors import BundleError, OutputExists
from mtlschat.ca.export import bundle_path, export_bundle

if TYPE_CHECKING:  # conftest is not importable at run time (--import-mode=importlib)
    from conftest import TestPKI


def _answers(*values: bytes | None) -> tuple[list[str], AskPassphrase]:
    asked: list[str] = []
    it = iter(values)

    def ask(why: str, attempt: int) -> bytes | None:
        assert attempt == len(asked)
        asked.append(why)
        return next(it)

    return asked, ask


def test_unlock_bundle_asks_again_after_a_wrong_passphrase(pki: TestPKI, tmp_path: Path) -> None:
    out = pki.ca.issue_user("retry-user", out=tmp_path / "r.pem", passphrase=b"right-pw").path
    asked, ask = _answers(b"wrong", b"also wrong", b"right-pw")
    assert unlock_bundle(out, ask).name == "retry-user"
    assert len(asked) == 3 and "is encrypted" in asked[0]
    _, ask = _answers(b"a", b"b", b"c", b"right-pw")
    with pytest.raises(WrongPassphrase):
        unlock_bundle(out, ask)  # three tries, not four
    _, ask = _answers(None)
    with pytest.raises(PassphraseRequired):
        unlock_bundle(out, ask)
    plain = pki.user("plain-user")
    asked, ask = _answers()
    assert unlock_bundle(plain, ask).name == "plain-user"
    assert asked == []  # an unencrypted key is never asked for


def test_export_bundle_by_name(
    pki: TestPKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    pki.ca.issue_user("exp-user", out=tmp_path / "exp-user.pem", passphrase=b"bundle-pw")
    assert bundle_path("exp-user") == Path("exp-user.pem")
    assert bundle_path("sub/exp-user") == Path("sub/exp-user")  # a path is taken as given
    _, ask = _answers(b"bundle-pw")
    exported = export_bundle(
        "exp-user",
        password=lambda: b"store-pw",
        ask_passphrase=ask,
    )
    assert exported.path == Path("exp-user.p12") and exported.name == "exp-user"
    assert stat.S_IMODE(os.stat(exported.path).st_mode) == 0o600
    store = pkcs12.load_pkcs12(exported.path.read_bytes(), b"store-pw")
    assert store.cert is not None and store.cert.friendly_name == b"exp-user"
    assert len(store.additional_certs) == 1  # the CA
    # An existing keystore is refused before anyone is asked for a password.
    asked_password: list[bool] = []
    _, ask = _answers(b"bundle-pw")
    with pytest.raises(OutputExists):
        export_bundle(
            "exp-user",
            password=lambda: asked_password.append(True) or b"x" * 8,
            ask_passphrase=ask,
        )
    assert asked_password == []
    with pytest.raises(BundleError, match="not found"):
        export_bundle("nobody", password=lambda: b"store-pw", ask_passphrase=ask)


def test_rows_serialise_and_mark_expiry(fresh_pki: TestPKI, tmp_path: Path) -> None:
    ca = fresh_pki.ca
    soon = ca.issue_user("soon", days=10, out=tmp_path / "soon.pem")
    ca.issue_user("later", days=300, out=tmp_path / "later.pem")
    gone = ca.issue_user("gone", out=tmp_path / "gone.pem")
    ca.revoke("gone", reason="key-compromise")
    rows = {r.name: r for r in ca.rows()}
    assert rows["soon"].expires_soon and not rows["later"].expires_soon
    assert rows["gone"].status == "revoked" and not rows["gone"].expires_soon
    data = json.loads(json.dumps([r.to_json() for r in ca.rows()]))
    by_name = {d["name"]: d for d in data}
    assert by_name["soon"]["serial"] == f"{soon.serial:x}"
    assert by_name["later"]["status"] == "valid" and by_name["later"]["revoked_at"] is None
    assert by_name["gone"]["reason"] == "key-compromise"
    assert datetime.fromisoformat(by_name["gone"]["revoked_at"]) <= datetime.now(UTC)
    assert datetime.fromisoformat(by_name["soon"]["not_after"]) - datetime.now(UTC) < timedelta(
        days=11
    )
    assert set(by_name["soon"]) == {
        "serial", "name", "kind", "not_before", "not_after", "status", "revoked_at", "reason",
        "sha256", "expires_soon", "bench",
    }  # fmt: skip
    assert gone.serial == int(by_name["gone"]["serial"], 16)


def test_crl_state_of_an_expired_crl(fresh_pki: TestPKI) -> None:
    from mtlschat.ca.crl import build_crl
    from mtlschat.ca.listing import crl_state

    now = datetime.now(UTC)
    old = build_crl(
        ca_key=fresh_pki.ca.key, ca_cert=fresh_pki.ca.cert, revoked=[], number=9,
        now=now - timedelta(days=30), days=1,
    )  # fmt: skip
    state = crl_state(old, now)
    assert state.expired and state.expires_soon and state.number == 9
    assert state.due(timedelta(days=0), now)
