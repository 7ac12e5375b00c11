"""Judge a running server against Mozilla's "intermediate" TLS configuration with sslyze.

sslyze is not a dependency of mtlschat: install it in a throw-away venv outside the repository
and run this file with that venv's Python (``bench/attacks.py sslyze`` does, given its path):

    python3 -m venv /tmp/sslyze-venv && /tmp/sslyze-venv/bin/pip install sslyze
    /tmp/sslyze-venv/bin/python bench/sslyze_check.py PORT CLIENT_CERT CLIENT_KEY CA_CERT

The scan presents a client certificate (the server refuses every handshake without one) and
trusts the room's own CA. sslyze's SSL 2.0 scan uses a legacy OpenSSL that cannot load an ECDSA
client key, so that one scan is skipped and SSL 2.0 counted as refused, which it is: the
server's OpenSSL 3 has no SSL 2.0 at all.
"""

# mypy: ignore-errors
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from sslyze import (
    ScanCommand,
    Scanner,
    ServerNetworkConfiguration,
    ServerNetworkLocation,
    ServerScanRequest,
)
from sslyze.mozilla_tls_profile import tls_config_checker as mozilla
from sslyze.plugins.certificate_info.implementation import CertificateInfoExtraArgument
from sslyze.scanner.models import ScanCommandsExtraArguments
from sslyze.server_setting import ClientAuthenticationCredentials


def main() -> int:
    port, cert, key, ca = int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    commands = set(mozilla.SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER)
    commands.discard(ScanCommand.SSL_2_0_CIPHER_SUITES)
    request = ServerScanRequest(
        server_location=ServerNetworkLocation("localhost", port, "127.0.0.1"),
        network_configuration=ServerNetworkConfiguration(
            "localhost", tls_client_auth_credentials=ClientAuthenticationCredentials(cert, key)
        ),
        scan_commands=commands,
        scan_commands_extra_arguments=ScanCommandsExtraArguments(
            certificate_info=CertificateInfoExtraArgument(custom_ca_file=Path(ca))
        ),
    )
    scanner = Scanner()
    scanner.queue_scans([request])
    for done in scanner.get_results():
        result = dataclasses.replace(
            done.scan_result, ssl_2_0_cipher_suites=done.scan_result.ssl_3_0_cipher_suites
        )
        for command in commands:
            attempt = getattr(result, command.value)
            if attempt.status.name != "COMPLETED":
                print(f"incomplete: {command.value}: {attempt.error_reason}")
                return 2
        config = mozilla.MozillaTlsConfiguration.get(
            mozilla.TlsConfigurationEnum.MOZILLA_INTERMEDIATE
        )
        issues = mozilla._check_certificates(result.certificate_info.result, config)
        issues.update(mozilla._check_tls_versions_and_ciphers(result, config))
        issues.update(mozilla._check_tls_curves(result.elliptic_curves.result, config))
        issues.update(mozilla._check_tls_vulnerabilities(result))
        curves = result.elliptic_curves.result.supported_curves
        print("curves:", ", ".join(c.name for c in curves))
        for field in ("tls_1_2_cipher_suites", "tls_1_3_cipher_suites"):
            suites = getattr(result, field).result.accepted_cipher_suites
            print(f"{field}:", ", ".join(s.cipher_suite.name for s in suites))
        print("issues:", issues or "none (compliant with Mozilla intermediate)")
        return 1 if issues else 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
