"""The certificate authority: create or open a PKI directory, issue, sign, renew and revoke."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from mtlschat.ca.bundle import is_encrypted_pem_key, load_pem_key, serialize_bundle
from mtlschat.ca.crl import DEFAULT_CRL_DAYS, build_crl, check_crl_days, check_reason
from mtlschat.ca.db import CertDB, CertRecord
from mtlschat.ca.errors import (
    BadFile,
    BadName,
    BadRequest,
    BundleError,
    CAExists,
    CSRRefused,
    NameTaken,
    NoCA,
    OutputExists,
    UnknownName,
)
from mtlschat.ca.fileio import PRIVATE, PUBLIC, atomic_write, read_file
from mtlschat.ca.keys import DEFAULT_KEY_TYPE, PrivateKey, generate_key
from mtlschat.ca.listing import CertRow, cert_rows
from mtlschat.ca.names import InvalidName, validate_username
from mtlschat.ca.paths import PKIPaths
from mtlschat.ca.profile import (
    CLOCK_SKEW,
    DEFAULT_CA_DAYS,
    DEFAULT_LEAF_DAYS,
    MAX_LEAF_DAYS,
    build_leaf,
    build_root,
    check_days,
    common_name,
    fingerprint,
    parse_host,
)

MAX_CA_NAME = 64  # X.520 upper bound for a CN

# Extensions a CSR may carry: they are checked, never copied (the profile decides).
_CSR_ALLOWED = {
    ExtensionOID.BASIC_CONSTRAINTS,
    ExtensionOID.KEY_USAGE,
    ExtensionOID.EXTENDED_KEY_USAGE,
    ExtensionOID.SUBJECT_KEY_IDENTIFIER,
}


@dataclass(frozen=True)
class IssuedCert:
    """What an issuing operation produced."""

    path: Path  # the file written (bundle, or certificate + CA for a signed CSR)
    serial: int
    name: str  # the CN
    not_after: datetime
    kind: str  # "user" or "server"
    cert: x509.Certificate


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _check_name(name: str) -> str:
    try:
        return validate_username(name)
    except InvalidName as e:
        raise BadName(str(e)) from None


class CertificateAuthority:
    """One PKI directory: the CA certificate and key, the record of issued certificates, the CRL.

    Use :meth:`init` to create a CA and :meth:`open` to use an existing one. The CA key is loaded
    (and decrypted) only when something is signed, so ``list`` needs no passphrase.
    """

    def __init__(self, paths: PKIPaths, cert: x509.Certificate, passphrase: bytes | None) -> None:
        self.paths = paths
        self.cert = cert
        self.db = CertDB(paths.db)
        self._passphrase = passphrase
        self._key: PrivateKey | None = None

    # -- creating and opening ---------------------------------------------------------------

    @classmethod
    def init(
        cls,
        pki_dir: Path,
        *,
        name: str = "mtlschat CA",
        key_type: str = DEFAULT_KEY_TYPE,
        days: int = DEFAULT_CA_DAYS,
        passphrase: bytes | None = None,
        force: bool = False,
    ) -> CertificateAuthority:
        """Create a root CA in ``pki_dir``: ``ca.key``, ``ca.crt``, an empty ``ca.db`` and CRL.

        Refuses (:class:`CAExists`) if a CA is there already, unless ``force``: then a new CA
        replaces it and the record is reset (certificates of the old CA no longer verify).
        """
        paths = PKIPaths(Path(pki_dir))
        if not force and (paths.ca_cert.exists() or paths.ca_key.exists()):
            raise CAExists(f"a CA already exists in {paths.dir} (use --force to replace it)")
        if not name.strip() or len(name) > MAX_CA_NAME or not name.isprintable():
            raise BadRequest(f"the CA name must be 1-{MAX_CA_NAME} printable characters")
        check_days(days, None)
        key = generate_key(key_type)
        now = datetime.now(UTC)
        cert = build_root(key, name, now - CLOCK_SKEW, now + timedelta(days=days))
        try:
            paths.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise BadFile(f"cannot create {paths.dir}: {e.strerror}") from None
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase)
            if passphrase
            else serialization.NoEncryption()
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
        atomic_write(paths.ca_key, key_pem, mode=PRIVATE)
        atomic_write(paths.ca_cert, _pem(cert), mode=PUBLIC)
        for suffix in ("", "-journal", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{paths.db}{suffix}").unlink()
        ca = cls(paths, cert, passphrase)
        ca._key = key
        ca.db.create()
        ca.write_crl()
        return ca

    @classmethod
    def open(cls, pki_dir: Path, *, passphrase: bytes | None = None) -> CertificateAuthority:
        """Open the CA in ``pki_dir``; raises :class:`NoCA` if there is none."""
        paths = PKIPaths(Path(pki_dir))
        if not paths.ca_cert.exists():
            raise NoCA(f"no CA in {paths.dir}: run `mtlschat ca init` first")
        data = read_file(paths.ca_cert, "CA certificate")
        try:
            cert = x509.load_pem_x509_certificate(data)
        except ValueError:
            raise BadFile(f"{paths.ca_cert} is not a PEM certificate") from None
        ca = cls(paths, cert, passphrase)
        ca.db.create()  # a CA copied without its database gets an empty record
        return ca

    # -- properties ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The CA's CN."""
        return common_name(self.cert.subject) or ""

    @property
    def key_encrypted(self) -> bool:
        """Whether ``ca.key`` is passphrase-protected (so a passphrase must be supplied)."""
        try:
            return is_encrypted_pem_key(self.paths.ca_key.read_bytes()[:200])
        except OSError:
            return False

    def unlock(self, passphrase: bytes | None = None) -> PrivateKey:
        """Load the CA key now, with ``passphrase`` if given (else the one passed to ``open``).

        Raises :class:`PassphraseRequired`, :class:`WrongPassphrase` or :class:`BadFile` (missing,
        or not matching ``ca.crt``) before anything is signed.
        """
        if passphrase is not None and self._key is None:
            self._passphrase = passphrase
        return self.key

    @property
    def key(self) -> PrivateKey:
        """The CA private key, loaded and decrypted on first use."""
        if self._key is None:
            data = read_file(self.paths.ca_key, "CA key")
            try:
                key = load_pem_key(data, self._passphrase, f"the CA key {self.paths.ca_key}")
            except BundleError as e:  # not a bundle, just a bad file
                raise BadFile(str(e)) from None
            if key.public_key() != self.cert.public_key():
                raise BadFile(f"{self.paths.ca_key} does not match {self.paths.ca_cert}")
            self._key = key
        return self._key

    # -- issuing --------------------------------------------------------------------------------

    def issue_user(
        self,
        name: str,
        *,
        days: int | None = None,
        out: Path | None = None,
        not_before: datetime | None = None,
        key_type: str = DEFAULT_KEY_TYPE,
        passphrase: bytes | None = None,
        force: bool = False,
    ) -> IssuedCert:
        """Issue a client certificate for ``name``; write the bundle (key + cert + CA), 0600.

        ``out`` defaults to ``./NAME.pem``; an existing file is refused unless ``force``.
        ``passphrase`` encrypts the bundle's key. ``not_before`` (for tests) moves the validity
        window; a certificate that is already expired cannot clash with a live name.
        """
        _check_name(name)
        key = generate_key(key_type)
        target = Path(out) if out is not None else Path(f"{name}.pem")
        return self._issue(
            kind="user",
            cn=name,
            public_key=key.public_key(),
            days=days,
            not_before=not_before,
            out=target,
            force=force,
            render=lambda cert: serialize_bundle(key, cert, [self.cert], passphrase),
            mode=PRIVATE,
        )

    def issue_server(
        self,
        hosts: Sequence[str],
        *,
        days: int | None = None,
        out: Path | None = None,
        key_type: str = DEFAULT_KEY_TYPE,
        force: bool = False,
    ) -> IssuedCert:
        """Issue a server certificate with DNS/IP SANs for ``hosts`` (CN = the first host).

        Written as a bundle to ``out`` (default ``paths.server_bundle``), refusing to replace an
        existing file unless ``force``.
        """
        if not hosts:
            raise BadRequest("give at least one host name or IP address for the server")
        sans: list[x509.GeneralName] = []
        for host in hosts:
            san = parse_host(host)
            if san not in sans:
                sans.append(san)
        cn = hosts[0]
        if len(cn) > MAX_CA_NAME:
            raise BadRequest(f"the first host name must be at most {MAX_CA_NAME} characters")
        key = generate_key(key_type)
        return self._issue(
            kind="server",
            cn=cn,
            public_key=key.public_key(),
            days=days,
            not_before=None,
            out=Path(out) if out is not None else self.paths.server_bundle,
            force=force,
            render=lambda cert: serialize_bundle(key, cert, [self.cert]),
            mode=PRIVATE,
            sans=sans,
            unique=False,
        )

    def sign_csr(
        self,
        csr: Path | bytes,
        *,
        days: int | None = None,
        out: Path | None = None,
        force: bool = False,
    ) -> IssuedCert:
        """Sign a user's CSR (the key never leaves their machine): writes certificate + CA.

        The CSR's subject must be just ``CN=<name>`` (name policy and uniqueness apply), its
        key strong enough, and any extension it requests harmless; its extensions are never
        copied. ``out`` defaults to ``./NAME.crt``.
        """
        request = _load_csr(csr)
        name = _check_csr(request)
        target = Path(out) if out is not None else Path(f"{name}.crt")
        return self._issue(
            kind="user",
            cn=name,
            public_key=request.public_key(),
            days=days,
            not_before=None,
            out=target,
            force=force,
            render=lambda cert: _pem(cert) + _pem(self.cert),
            mode=PUBLIC,
        )

    def renew(
        self,
        name: str,
        *,
        days: int | None = None,
        out: Path | None = None,
        revoke_old: bool = False,
        key_type: str = DEFAULT_KEY_TYPE,
        passphrase: bytes | None = None,
        force: bool = False,
    ) -> IssuedCert:
        """A new key and certificate for an existing (unrevoked) name.

        The old certificate stays valid until it expires, so a member can switch over without
        being locked out; with ``revoke_old`` it is revoked at once (reason ``superseded``) and
        the CRL rewritten.
        """
        _check_name(name)
        current = [r for r in self.db.by_name(name) if r.kind == "user" and r.revoked_at is None]
        if not current:
            raise UnknownName(f"no unrevoked certificate named {name!r} to renew")
        cn = current[-1].name  # keep the spelling it was issued with
        key = generate_key(key_type)
        return self._issue(
            kind="user",
            cn=cn,
            public_key=key.public_key(),
            days=days,
            not_before=None,
            out=Path(out) if out is not None else Path(f"{cn}.pem"),
            force=force,
            render=lambda cert: serialize_bundle(key, cert, [self.cert], passphrase),
            mode=PRIVATE,
            unique=False,
            supersede=revoke_old,
        )

    def _issue(
        self,
        *,
        kind: str,
        cn: str,
        public_key: CertificatePublicKeyTypes,
        days: int | None,
        not_before: datetime | None,
        out: Path,
        force: bool,
        render: Callable[[x509.Certificate], bytes],
        mode: int,
        sans: Sequence[x509.GeneralName] = (),
        unique: bool = True,
        supersede: bool = False,
    ) -> IssuedCert:
        days = DEFAULT_LEAF_DAYS if days is None else days
        check_days(days, MAX_LEAF_DAYS)
        if out.exists() and not force:
            raise OutputExists(f"{out} already exists (use --force to overwrite)")
        ca_key = self.key  # decrypt before taking the lock: a wrong passphrase fails fast
        now = datetime.now(UTC)
        start = not_before if not_before is not None else now - CLOCK_SKEW
        end = min(start + timedelta(days=days), self.cert.not_valid_after_utc)
        if end <= start:
            raise BadRequest("the CA certificate has expired: create a new CA")
        with self.db.transaction() as conn:
            if unique and end > now and self.db.active_names(conn, cn, kind, now):
                raise NameTaken(
                    f"{cn!r} already has a valid certificate (names are unique "
                    "case-insensitively; revoke or renew it instead)"
                )
            if supersede:
                self.db.revoke(conn, cn, kind, "superseded", now)
            cert = build_leaf(
                ca_key=ca_key,
                ca_cert=self.cert,
                public_key=public_key,
                cn=cn,
                server=kind == "server",
                not_before=start,
                not_after=end,
                sans=sans,
            )
            self.db.insert(
                conn,
                CertRecord(
                    serial=cert.serial_number,
                    name=cn,
                    kind=kind,
                    not_before=start,
                    not_after=end,
                    fingerprint=fingerprint(cert),
                    revoked_at=None,
                    reason=None,
                    cert_pem=_pem(cert).decode(),
                ),
            )
            # Written inside the transaction: if the write fails, the record is rolled back.
            atomic_write(out, render(cert), mode=mode, overwrite=force)
            if supersede:
                # Only once the new bundle exists: a failed renew must not revoke the old
                # certificate in crl.pem while the record (rolled back) still says valid.
                try:
                    self._write_crl(conn, now, DEFAULT_CRL_DAYS)
                except BaseException:
                    with contextlib.suppress(OSError):
                        out.unlink()  # its certificate is not recorded: do not hand it out
                    raise
        return IssuedCert(
            path=out, serial=cert.serial_number, name=cn, not_after=end, kind=kind, cert=cert
        )

    # -- revoking -----------------------------------------------------------------------------

    def revoke(self, name: str, *, reason: str = "unspecified", kind: str = "user") -> list[int]:
        """Revoke every unrevoked certificate called ``name`` and rewrite the CRL at once.

        Returns the serials revoked; raises :class:`UnknownName` if there were none.
        """
        check_reason(reason)
        ca_key = self.key
        now = datetime.now(UTC)
        with self.db.transaction() as conn:
            serials = self.db.revoke(conn, name, kind, reason, now)
            if not serials:
                raise UnknownName(f"no unrevoked {kind} certificate named {name!r}")
            self._write_crl(conn, now, DEFAULT_CRL_DAYS, ca_key)
        return serials

    def revoke_serial(self, serial: int, *, reason: str = "unspecified") -> None:
        """Revoke one certificate by serial number and rewrite the CRL."""
        check_reason(reason)
        ca_key = self.key
        now = datetime.now(UTC)
        with self.db.transaction() as conn:
            if not self.db.revoke_serial(conn, serial, reason, now):
                raise UnknownName(f"no unrevoked certificate with serial {serial:x}")
            self._write_crl(conn, now, DEFAULT_CRL_DAYS, ca_key)

    def write_crl(self, days: int = DEFAULT_CRL_DAYS) -> Path:
        """(Re)write ``crl.pem`` with the next CRL number and a nextUpdate ``days`` away."""
        check_crl_days(days)
        ca_key = self.key
        with self.db.transaction() as conn:
            self._write_crl(conn, datetime.now(UTC), days, ca_key)
        return self.paths.crl

    def _write_crl(
        self, conn: sqlite3.Connection, now: datetime, days: int, ca_key: PrivateKey | None = None
    ) -> None:
        crl = build_crl(
            ca_key=ca_key or self.key,
            ca_cert=self.cert,
            revoked=self.db.revoked(conn),
            number=self.db.next_crl_number(conn),
            now=now,
            days=days,
        )
        atomic_write(self.paths.crl, crl.public_bytes(serialization.Encoding.PEM), mode=PUBLIC)

    # -- reading ------------------------------------------------------------------------------

    def records(self) -> list[CertRecord]:
        """Every certificate issued, oldest first."""
        return self.db.all()

    def rows(self, now: datetime | None = None) -> list[CertRow]:
        """Every certificate issued as listed by ``ca list`` (status as of ``now``)."""
        return cert_rows(self.db.all(), now or datetime.now(UTC))


def _load_csr(csr: Path | bytes) -> x509.CertificateSigningRequest:
    data = csr if isinstance(csr, bytes) else read_file(csr, "CSR")
    where = "the CSR" if isinstance(csr, bytes) else str(csr)
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_csr(data)
        return x509.load_der_x509_csr(data)
    except ValueError:
        raise BadFile(f"{where} is not a certificate signing request") from None


def _check_csr(csr: x509.CertificateSigningRequest) -> str:
    """Return the requested name, or raise :class:`CSRRefused` / :class:`BadName`."""
    if not csr.is_signature_valid:
        raise CSRRefused("the CSR's signature does not verify")
    attrs = list(csr.subject)
    if len(attrs) != 1 or attrs[0].oid != NameOID.COMMON_NAME:
        raise CSRRefused(
            f"the CSR subject must be just CN=<name>, not {csr.subject.rfc4514_string()!r}"
        )
    name = common_name(csr.subject) or ""
    _check_name(name)
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
