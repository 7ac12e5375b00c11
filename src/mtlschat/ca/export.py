"""PKCS#12 for other software: a member's keystore, and a Java truststore with the CA.

Both are encrypted with PBES2 (AES-256-CBC, PBKDF2-SHA256) and a SHA-256 MAC, which Java's
``keytool`` (JDK 12+ / 11.0.12+) and ``openssl pkcs12`` both read.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import (
    KeySerializationEncryption,
    PrivateFormat,
    pkcs12,
)

from mtlschat.ca.bundle import Bundle
from mtlschat.ca.errors import BadRequest

MIN_PASSWORD = 6  # keytool refuses shorter store passwords
TRUSTSTORE_ALIAS = "mtlschat-ca"


def _encryption(password: bytes) -> KeySerializationEncryption:
    if len(password) < MIN_PASSWORD:
        raise BadRequest(
            f"the PKCS#12 password must be at least {MIN_PASSWORD} characters (keytool's minimum)"
        )
    return (
        PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(100_000)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(password)
    )


def export_pkcs12(bundle: Bundle, password: bytes) -> bytes:
    """A PKCS#12 keystore: the bundle's key and certificate (alias = its CN) plus the CA chain."""
    alias = (bundle.name or "mtlschat").encode()
    return pkcs12.serialize_key_and_certificates(
        alias, bundle.key, bundle.cert, bundle.chain or None, _encryption(password)
    )


def java_truststore(ca_cert: x509.Certificate, password: bytes) -> bytes:
    """A PKCS#12 truststore holding the CA certificate as a trusted entry (``trustedCertEntry``)."""
    entry = pkcs12.PKCS12Certificate(ca_cert, TRUSTSTORE_ALIAS.encode())
    return pkcs12.serialize_java_truststore([entry], _encryption(password))
