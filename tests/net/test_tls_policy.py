"""Issue 9.6: Mozilla's "intermediate" TLS configuration, checked rule by rule with the real
``openssl s_client`` against a real server process."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from typing import TYPE_CHECKING

from cryptography import x509

from mtlschat.ca.bundle import load_bundle

if TYPE_CHECKING:
    from conftest import ServerSpawner, TestPKI

# (s_client arguments, accepted?, what the connection must show)
CASES: list[tuple[tuple[str, ...], bool, str]] = [
    (("-tls1_3",), True, "Protocol version: TLSv1.3"),
    (("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"), True, "ECDHE-ECDSA-AES128-GCM"),
    (("-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384"), True, "ECDHE-ECDSA-AES256-GCM"),
    (("-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"), True, "CHACHA20-POLY1305"),
    (("-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-SHA384"), False, ""),  # CBC
    (("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA256"), False, ""),  # CBC
    (("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA"), False, ""),  # CBC, SHA-1
    (("-tls1_3", "-groups", "X25519"), True, "Server Temp Key: X25519"),
    (("-tls1_3", "-groups", "P-256"), True, "Server Temp Key: ECDH, prime256v1"),
    (("-tls1_3", "-groups", "P-384"), True, "Server Temp Key: ECDH, secp384r1"),
    (("-tls1_3", "-groups", "X448"), False, ""),
    (("-tls1_3", "-groups", "P-521"), False, ""),
    (("-tls1_3", "-groups", "ffdhe2048"), False, ""),
]


def test_openssl_s_client_rule_by_rule(pki: TestPKI, spawn_server: ServerSpawner) -> None:
    server = spawn_server(pki.dir)
    user = str(pki.user("alice"))
    base = ["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}", "-brief"]
    base += ["-cert", user, "-key", user, "-CAfile", str(pki.ca_cert), "-servername", "localhost"]
    wrong: list[str] = []
    for args, accepted, shows in CASES:
        done = subprocess.run(
            [*base, *args], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
        )
        out = done.stdout + done.stderr
        established = done.returncode == 0 and "CONNECTION ESTABLISHED" in out
        if established != accepted or (accepted and shows not in out):
            wrong.append(f"{' '.join(args)}: rc {done.returncode}\n{out[-600:]}")
    assert not wrong, "\n\n".join(wrong)


def test_server_certificates_last_at_most_365_days_by_default(pki: TestPKI) -> None:
    cert = load_bundle(pki.server_bundle, None).cert
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    # (notBefore is backdated 5 minutes for clock skew)
    assert lifetime <= timedelta(days=365, minutes=5), lifetime
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in usage
