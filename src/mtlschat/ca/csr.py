"""Certificate signing requests: the member's side (a key and a CSR made on their machine, so
the key never leaves it) and the CA's check of what comes in.

The CA signs only ``CN=<name>``: a request carrying keytool's default distinguished name
(``CN=Unknown, OU=Unknown, ...``) or any other attribute is refused with the ``-dname`` hint.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from mtlschat.ca.errors import BadFile, BadName, CSRRefused
from mtlschat.ca.fileio import PRIVATE, PUBLIC, atomic_write, read_file
from mtlschat.ca.keys import DEFAULT_KEY_TYPE, generate_key, private_pem, signature_hash
from mtlschat.ca.names import InvalidName, validate_username
from mtlschat.ca.profile import common_name

# Extensions a CSR may carry: they are checked, never copied (the profile decides).
_CSR_ALLOWED = {
    ExtensionOID.BASIC_CONSTRAINTS,
    ExtensionOID.KEY_USAGE,
    ExtensionOID.EXTENDED_KEY_USAGE,
    ExtensionOID.SUBJECT_KEY_IDENTIFIER,
}


@dataclass(frozen=True)
class Request:
    """What :func:`make_request` wrote."""

    name: str
    key: Path  # the private key, 0600
    csr: Path  # the request to send to the operator


def make_request(
    name: str,
    *,
    key_out: Path | None = None,
    csr_out: Path | None = None,
    key_type: str = DEFAULT_KEY_TYPE,
    passphrase: bytes | None = None,
    force: bool = False,
) -> Request:
    """A new key (``./NAME.key``, 0600, encrypted with ``passphrase`` if given) and a CSR for
    ``CN=NAME`` (``./NAME.csr``) for ``mtlschat ca sign``. Existing files are kept unless
    ``force``; the name policy is checked here, so the operator does not have to refuse it.
    """
    try:
        validate_username(name)
    except InvalidName as e:
        raise BadName(str(e)) from None
    key_path = Path(key_out) if key_out is not None else Path(f"{name}.key")
    csr_path = Path(csr_out) if csr_out is not None else Path(f"{name}.csr")
    if key_path == csr_path:
        raise BadFile("the key and the CSR need two different files")
    key = generate_key(key_type)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, signature_hash(key))
    )
    key_pem = private_pem(key, passphrase)
    if csr_path.exists() and not force:  # checked before the key is written
        raise BadFile(f"{csr_path} already exists (use --force to overwrite)")
    atomic_write(key_path, key_pem, mode=PRIVATE, overwrite=force)
    atomic_write(
        csr_path, csr.public_bytes(serialization.Encoding.PEM), mode=PUBLIC, overwrite=True
    )
    return Request(name=name, key=key_path, csr=csr_path)


def load_csr(csr: Path | bytes) -> x509.CertificateSigningRequest:
    """Parse a PEM or DER CSR (a path, or its bytes), with a one-line error."""
    data = csr if isinstance(csr, bytes) else read_file(csr, "CSR")
    where = "the CSR" if isinstance(csr, bytes) else str(csr)
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_csr(data)
        return x509.load_der_x509_csr(data)
    except ValueError:
        raise BadFile(f"{where} is not a certificate signing request") from None


def _subject_problem(subject: x509.Name) -> str | None:
    """Why ``subject`` is not just ``CN=<name>`` (None if it is), with the keytool hint."""
    attrs = list(subject)
    if len(attrs) == 1 and attrs[0].oid == NameOID.COMMON_NAME:
        return None
    shown = subject.rfc4514_string()
    cn = common_name(subject)
    hint_name = cn if cn and cn != "Unknown" else "<your name>"
    values = {str(a.value) for a in attrs}
    keytool = "Unknown" in values  # keytool fills every field it was not given with "Unknown"
    why = "keytool's default distinguished name" if keytool else "more than a CN"
    return (
        f"the CSR subject must be just CN=<name>, not {shown!r} ({why}): make the request "
        f'again with -dname "CN={hint_name}" (keytool) or -subj "/CN={hint_name}" (openssl)'
    )


def check_csr(csr: x509.CertificateSigningRequest) -> str:
    """Return the requested name, or raise :class:`CSRRefused` / :class:`BadName`."""
    # cryptography warns (UserWarning) about odd attributes such as keytool's C=Unknown (a
    # country code must be 2 letters): the refusal below says it in one line instead.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _check_csr(csr)


def _check_csr(csr: x509.CertificateSigningRequest) -> str:
    if not csr.is_signature_valid:
        raise CSRRefused("the CSR's signature does not verify")
    problem = _subject_problem(csr.subject)
    if problem is not None:
        raise CSRRefused(problem)
    name = common_name(csr.subject) or ""
    try:
        validate_username(name)
    except InvalidName as e:
        raise BadName(str(e)) from None
    key = csr.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise CSRRefused(f"the CSR's RSA key is too small ({key.key_size} bits; need 2048+)")
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
            raise CSRRefused(f"the CSR's curve {key.curve.name} is not supported")
    elif not isinstance(key, ed25519.Ed25519PublicKey):
        raise CSRRefused(f"the CSR's key type {type(key).__name__} is not supported")
    try:
        extensions = list(csr.extensions)
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType):
        raise CSRRefused("the CSR carries malformed extensions") from None
    for ext in extensions:
        value = ext.value
        if ext.oid not in _CSR_ALLOWED:
            raise CSRRefused(
                "the CSR asks for an extension the CA does not grant: "
                f"{ext.oid.dotted_string} ({ext.oid._name})"
            )
        if isinstance(value, x509.BasicConstraints) and value.ca:
            raise CSRRefused("the CSR asks for CA powers (basicConstraints CA:TRUE)")
        if isinstance(value, x509.KeyUsage) and (value.key_cert_sign or value.crl_sign):
            raise CSRRefused("the CSR asks for certificate or CRL signing (keyUsage)")
        if isinstance(value, x509.ExtendedKeyUsage) and set(value) - {
            ExtendedKeyUsageOID.CLIENT_AUTH
        }:
            raise CSRRefused("the CSR asks for extended key usages other than clientAuth")
    return name
