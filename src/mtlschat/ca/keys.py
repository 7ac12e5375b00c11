"""Key types the CA can generate, and the signature hash that goes with each."""

from __future__ import annotations

from enum import StrEnum
from typing import TypeAlias

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

from mtlschat.ca.errors import BadRequest

PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


class KeyType(StrEnum):
    """The key algorithms the CA generates (``--key-type``)."""

    ec_p256 = "ec-p256"
    ec_p384 = "ec-p384"
    rsa_2048 = "rsa-2048"
    rsa_3072 = "rsa-3072"
    ed25519 = "ed25519"


KEY_TYPES = tuple(k.value for k in KeyType)
DEFAULT_KEY_TYPE = "ec-p256"  # fast to generate and fast handshakes


def generate_key(key_type: str = DEFAULT_KEY_TYPE) -> PrivateKey:
    """A fresh private key of ``key_type`` (one of :data:`KEY_TYPES`)."""
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "rsa-3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise BadRequest(f"unknown key type {key_type!r} (choose from {', '.join(KEY_TYPES)})")


def as_supported_key(key: PrivateKeyTypes) -> PrivateKey:
    """Narrow a loaded key to the kinds mtlschat signs with, or raise :class:`BadRequest`."""
    if isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        return key
    raise BadRequest(f"unsupported private key type {type(key).__name__}")


def signature_hash(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384 | None:
    """SHA-256, or SHA-384 for a P-384 key (matching strength); Ed25519 takes no hash."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def describe_public_key(key: PublicKeyTypes) -> str:
    """A short human description: ``EC P-256``, ``RSA 2048``, ``Ed25519`` ..."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        names = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
        return f"EC {names.get(key.curve.name, key.curve.name)}"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    return type(key).__name__


def private_pem(key: PrivateKey, passphrase: bytes | None = None) -> bytes:
    """``key`` as PKCS#8 PEM, encrypted (PBES2, AES-256) if ``passphrase`` is given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
