"""PKCS#12 for other software: a member's keystore, and a Java truststore with the CA.

Both are encrypted with PBES2 (AES-256-CBC, PBKDF2-SHA256) and a SHA-256 MAC, which Java's
``keytool`` (JDK 12+ / 11.0.12+) and ``openssl pkcs12`` both read.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import (
    KeySerializationEncryption,
    PrivateFormat,
    pkcs12,
)

from mtlschat.ca.bundle import AskPassphrase, Bundle, unlock_bundle
from mtlschat.ca.errors import BadRequest, OutputExists
from mtlschat.ca.fileio import PRIVATE, PUBLIC, atomic_write

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


@dataclass(frozen=True)
class ExportedStore:
    """What :func:`export_bundle` wrote."""

    path: Path
    name: str  # the CN of the exported certificate (also its alias)


def bundle_path(name_or_path: str | Path) -> Path:
    """The bundle meant by ``name_or_path``: a path as given, or ``NAME`` for ``./NAME.pem``."""
    path = Path(name_or_path)
    text = str(name_or_path)
    if not path.exists() and path.suffix != ".pem" and os.sep not in text:
        return Path(f"{text}.pem")
    return path


def export_bundle(
    source: str | Path,
    *,
    password: Callable[[], bytes],
    ask_passphrase: AskPassphrase,
    out: Path | None = None,
    force: bool = False,
) -> ExportedStore:
    """Write the bundle ``source`` (a path, or NAME) as a PKCS#12 keystore, 0600, atomically.

    ``ask_passphrase`` is called only if the bundle's key is encrypted, ``password`` once the
    bundle is loaded (so a user is not asked for a keystore password for a file that is not a
    bundle). ``out`` defaults to the bundle's path with the suffix ``.p12``; an existing file is
    kept unless ``force``.
    """
    path = bundle_path(source)
    bundle = unlock_bundle(path, ask_passphrase)
    target = out if out is not None else path.with_suffix(".p12")
    if target.exists() and not force:  # before asking for a password in vain
        raise OutputExists(f"{target} already exists (use --force to overwrite)")
    atomic_write(target, export_pkcs12(bundle, password()), mode=PRIVATE, overwrite=force)
    return ExportedStore(path=target, name=bundle.name)


def write_truststore(
    ca_cert: x509.Certificate, out: Path, password: Callable[[], bytes], *, force: bool = False
) -> Path:
    """Write :func:`java_truststore` to ``out`` (0644: it holds no secret), atomically."""
    if out.exists() and not force:
        raise OutputExists(f"{out} already exists (use --force to overwrite)")
    atomic_write(out, java_truststore(ca_cert, password()), mode=PUBLIC, overwrite=force)
    return out
