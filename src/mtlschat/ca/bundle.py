"""PEM bundles: one file holding a private key, its certificate and the CA certificate.

This is the only file a member needs (``alice.pem``), and what the server loads (``server.pem``).
Python's ``ssl.SSLContext.load_cert_chain(path, password=...)`` and ``openssl s_client -cert F
-key F`` both read it as it is.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from mtlschat.ca.errors import (
    BadFile,
    BadRequest,
    BundleError,
    PassphraseRequired,
    WrongPassphrase,
)
from mtlschat.ca.fileio import PRIVATE, atomic_write, read_file
from mtlschat.ca.keys import PrivateKey, as_supported_key, private_pem
from mtlschat.ca.profile import common_name

# Asked for a passphrase: (why it is needed, attempt number from 0) -> the passphrase, or None to
# give up. The CLI answers from an environment variable once, or from a prompt up to 3 times.
AskPassphrase = Callable[[str, int], bytes | None]
PASSPHRASE_TRIES = 3
_T = TypeVar("_T")

_KEY_BLOCK = re.compile(
    rb"-----BEGIN ((?:ENCRYPTED |RSA |EC )?PRIVATE KEY)-----.*?-----END \1-----", re.DOTALL
)


@dataclass(frozen=True)
class Bundle:
    """A loaded bundle: the key, the leaf certificate matching it, and the other certificates."""

    path: Path
    key: PrivateKey
    cert: x509.Certificate
    chain: list[x509.Certificate]
    name: str  # the leaf's CN ("" if it has none)
    encrypted: bool  # whether the key in the file is passphrase-protected

    @property
    def ca_pem(self) -> bytes:
        """The chain (normally just the CA certificate) as PEM, e.g. for ``cadata=``."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain)


def serialize_bundle(
    key: PrivateKey,
    cert: x509.Certificate,
    chain: Sequence[x509.Certificate],
    passphrase: bytes | None = None,
) -> bytes:
    """Key (PKCS#8, encrypted if ``passphrase``) + leaf certificate + chain, as PEM."""
    parts = [
        private_pem(key, passphrase),
        cert.public_bytes(serialization.Encoding.PEM),
        *(c.public_bytes(serialization.Encoding.PEM) for c in chain),
    ]
    return b"".join(parts)


def is_encrypted_pem_key(block: bytes) -> bool:
    """True for a PKCS#8 ``ENCRYPTED PRIVATE KEY`` or a legacy ``Proc-Type: 4,ENCRYPTED`` key."""
    return block.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----") or b"ENCRYPTED" in block[:120]


def load_pem_key(block: bytes, passphrase: bytes | None, what: str) -> PrivateKey:
    """Load one PEM private key block, mapping every failure to a one-line error.

    ``what`` names the key in messages, e.g. "the private key in alice.pem".
    """
    encrypted = is_encrypted_pem_key(block)
    if encrypted and not passphrase:
        raise PassphraseRequired(f"{what} is encrypted: a passphrase is needed")
    try:
        key = serialization.load_pem_private_key(block, passphrase if encrypted else None)
    except ValueError:
        if encrypted:
            raise WrongPassphrase(f"wrong passphrase for {what}") from None
        raise BundleError(f"{what} is unreadable") from None
    except (TypeError, UnsupportedAlgorithm):
        raise BundleError(f"{what} is unreadable") from None
    try:
        return as_supported_key(key)
    except BadRequest:
        raise BundleError(f"{what} has an unsupported key type") from None


def load_bundle(path: Path, passphrase: bytes | None = None) -> Bundle:
    """Load and check a bundle: it must hold exactly one key and the certificate matching it.

    Raises :class:`~mtlschat.ca.errors.BundleError` (missing, unreadable, no key, no
    certificate, key/certificate mismatch) or :class:`~mtlschat.ca.errors.WrongPassphrase` (its
    subclass :class:`~mtlschat.ca.errors.PassphraseRequired` when none was given).
    """
    path = Path(path)
    try:
        data = read_file(path, "bundle")
    except BadFile as e:
        raise BundleError(str(e)) from None
    blocks = [m.group(0) for m in _KEY_BLOCK.finditer(data)]
    if not blocks:
        raise BundleError(f"{path} holds no private key (expected a PEM bundle from `ca issue`)")
    if len(blocks) > 1:
        raise BundleError(f"{path} holds more than one private key")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise BundleError(f"{path} holds no certificate")
    key = load_pem_key(blocks[0], passphrase, f"the private key in {path}")
    want = _public_der(key)
    for i, cert in enumerate(certs):
        if _spki(cert) == want:
            chain = certs[:i] + certs[i + 1 :]
            return Bundle(
                path=path,
                key=key,
                cert=cert,
                chain=chain,
                name=common_name(cert.subject) or "",
                encrypted=is_encrypted_pem_key(blocks[0]),
            )
    raise BundleError(f"the private key in {path} does not match any certificate in it")


def unlock_bundle(path: Path, ask: AskPassphrase, tries: int = PASSPHRASE_TRIES) -> Bundle:
    """Load a bundle, asking ``ask`` for its passphrase if the key is encrypted.

    A wrong passphrase is asked again, up to ``tries`` times in all; when ``ask`` gives up
    (returns None) the last error (:class:`PassphraseRequired` or :class:`WrongPassphrase`) is
    raised.
    """
    return _asking(
        lambda passphrase: load_bundle(path, passphrase), f"the key in {path}", ask, tries
    )


def _asking(load: Callable[[bytes | None], _T], what: str, ask: AskPassphrase, tries: int) -> _T:
    """``load(None)``; if that needs a passphrase, ``load(ask(...))`` up to ``tries`` times."""
    try:
        return load(None)
    except PassphraseRequired as e:
        error: WrongPassphrase = e
    for attempt in range(tries):
        passphrase = ask(f"{what} is encrypted", attempt)
        if passphrase is None:
            break
        try:
            return load(passphrase)
        except WrongPassphrase as e:
            error = e
    raise error


def join_bundle(
    key_path: Path,
    cert_path: Path,
    *,
    ask: AskPassphrase,
    ca_path: Path | None = None,
    out: Path | None = None,
    force: bool = False,
) -> Bundle:
    """Join a member's own key (from ``mtlschat request``) and the certificate the operator
    returned (``ca sign``: certificate + CA) into one bundle, 0600, for ``mtlschat client``.

    The key is copied as it is (an encrypted key stays encrypted; ``ask`` is asked for its
    passphrase only to check that it matches the certificate). ``out`` defaults to the
    certificate's path with the suffix ``.pem``. ``ca_path`` adds the CA certificate when the
    certificate file lacks it.
    """
    key_data = read_file(key_path, "key")
    blocks = [m.group(0) for m in _KEY_BLOCK.finditer(key_data)]
    if len(blocks) != 1:
        raise BundleError(f"{key_path} must hold exactly one PEM private key")
    key = _asking(
        lambda passphrase: load_pem_key(blocks[0], passphrase, f"the key {key_path}"),
        f"the key {key_path}",
        ask,
        PASSPHRASE_TRIES,
    )
    pem = read_file(cert_path, "certificate")
    if ca_path is not None:
        pem += b"\n" + read_file(ca_path, "CA certificate")
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise BundleError(f"{cert_path} holds no PEM certificate") from None
    want = _public_der(key)
    leaves = [c for c in certs if _spki(c) == want]
    if not leaves:
        raise BundleError(f"the key {key_path} does not match the certificate in {cert_path}")
    leaf = leaves[0]
    chain = [c for c in certs if c != leaf]
    if not chain:
        raise BundleError(f"{cert_path} holds no CA certificate: add --ca pki/ca.crt")
    try:
        leaf.verify_directly_issued_by(chain[0])
    except (ValueError, TypeError, InvalidSignature):
        raise BundleError(f"the certificate in {cert_path} is not signed by the CA given") from None
    target = Path(out) if out is not None else Path(cert_path).with_suffix(".pem")
    certs_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in [leaf, *chain])
    atomic_write(target, blocks[0] + b"\n" + certs_pem, mode=PRIVATE, overwrite=force)
    return Bundle(
        path=target,
        key=key,
        cert=leaf,
        chain=chain,
        name=common_name(leaf.subject) or "",
        encrypted=is_encrypted_pem_key(blocks[0]),
    )


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _public_der(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
