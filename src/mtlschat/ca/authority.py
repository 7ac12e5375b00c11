"""The certificate authority: create or open a PKI directory, issue, sign, renew and revoke."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID

from mtlschat.ca import benchrun, install
from mtlschat.ca.bundle import is_encrypted_pem_key, load_pem_key, serialize_bundle
from mtlschat.ca.crl import (
    DEFAULT_CRL_DAYS,
    build_crl,
    check_crl_days,
    check_reason,
    load_verified_crl,
)
from mtlschat.ca.csr import check_csr, load_csr
from mtlschat.ca.db import CertDB, CertRecord
from mtlschat.ca.errors import (
    BadFile,
    BadName,
    BadRequest,
    BundleError,
    CAError,
    CAExists,
    NameTaken,
    NoCA,
    OutputExists,
    UnknownName,
)
from mtlschat.ca.fileio import (
    PRIVATE,
    PUBLIC,
    atomic_write,
    read_file,
    remove_stale_temporaries,
)
from mtlschat.ca.keys import DEFAULT_KEY_TYPE, PrivateKey, generate_key, private_pem
from mtlschat.ca.listing import CertRow, CRLState, cert_rows, crl_state
from mtlschat.ca.names import InvalidName, validate_username
from mtlschat.ca.paths import PKIPaths
from mtlschat.ca.profile import (
    CLOCK_SKEW,
    DEFAULT_CA_DAYS,
    DEFAULT_LEAF_DAYS,
    build_leaf,
    build_root,
    check_days,
    check_validity,
    common_name,
    fingerprint,
    parse_host,
)
from mtlschat.ca.testpoint import pause_point

MAX_CA_NAME = 64  # X.520 upper bound for a CN

_T = TypeVar("_T")


@dataclass(frozen=True)
class RevokedCert:
    """What :meth:`CertificateAuthority.revoke_cert` revoked."""

    serial: int
    name: str
    was_recorded: bool  # False: ca.db did not hold it (it is recorded now, revoked)


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
        self.backup_dir: Path | None = None  # where `init --force` put the CA it replaced
        self.bench_cleaned = 0  # bench certificates of killed runs that `open` cleaned up

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

        Refuses (:class:`CAExists`) if a CA is there already, unless ``force``: then the old CA's
        files move to a dated backup directory (``backup_dir`` on the result) and a new CA with
        an empty record replaces it (certificates of the old CA no longer verify). All or
        nothing: see :mod:`mtlschat.ca.install`.
        """
        paths = PKIPaths(Path(pki_dir))
        if not name.strip() or len(name) > MAX_CA_NAME or not name.isprintable():
            raise BadRequest(f"the CA name must be 1-{MAX_CA_NAME} printable characters")
        check_days(days)
        try:
            paths.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise BadFile(f"cannot create {paths.dir}: {e.strerror}") from None
        with install.install_lock(paths):
            install.finish_interrupted(paths)
            if not force and paths.ca_cert.exists():
                raise CAExists(f"a CA already exists in {paths.dir} (use --force to replace it)")
            if not force and paths.ca_key.exists():
                raise CAExists(
                    f"{paths.ca_key} exists without {paths.ca_cert.name}: move it away, or use "
                    "--force to replace it (it is kept in a backup directory)"
                )
            key = generate_key(key_type)
            now = datetime.now(UTC)
            cert = build_root(key, name, now - CLOCK_SKEW, now + timedelta(days=days))
            staging = install.new_staging(paths)
            staged = PKIPaths(staging)
            atomic_write(staged.ca_key, private_pem(key, passphrase), mode=PRIVATE)
            atomic_write(staged.ca_cert, _pem(cert), mode=PUBLIC)
            db = CertDB(staged.db)
            db.create()
            with db.transaction() as conn:
                crl = _sign_crl(db, conn, key, cert, now, DEFAULT_CRL_DAYS)
            db.close()
            atomic_write(staged.crl, crl, mode=PUBLIC)
            pause_point("init:staged")
            backup = install.backup_dir(paths, now) if install.existing_ca_files(paths) else None
            install.commit(paths, staging, backup)
        ca = cls(paths, cert, passphrase)
        ca._key = key
        ca.backup_dir = backup
        return ca

    @classmethod
    def open(cls, pki_dir: Path, *, passphrase: bytes | None = None) -> CertificateAuthority:
        """Open the CA in ``pki_dir``; raises :class:`NoCA` if there is none.

        Finishes what a killed command left half done: an init past its commit point, a CRL
        recorded but not yet written to ``crl.pem``, stale temporary files.
        """
        paths = PKIPaths(Path(pki_dir))
        if paths.init_marker.exists():
            with install.install_lock(paths):
                install.finish_interrupted(paths)
        if not paths.ca_cert.exists():
            raise NoCA(f"no CA in {paths.dir}: run `mtlschat ca init` first")
        data = read_file(paths.ca_cert, "CA certificate")
        try:
            cert = x509.load_pem_x509_certificate(data)
        except ValueError:
            raise BadFile(f"{paths.ca_cert} is not a PEM certificate") from None
        ca = cls(paths, cert, passphrase)
        ca.db.create()  # a CA copied without its database gets an empty record
        remove_stale_temporaries(paths.dir)
        recorded = ca.db.newest_crl()
        if recorded is not None and _read_or_none(paths.crl) != recorded:
            ca._publish_crl()
        if ca.db.bench_runs():
            # Best effort: a CA key that needs a passphrase waits for a command that has it.
            with contextlib.suppress(CAError):
                ca.bench_cleaned = ca.clean_stale_bench_runs()
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
        valid: timedelta | None = None,
        out: Path | None = None,
        not_before: datetime | None = None,
        key_type: str = DEFAULT_KEY_TYPE,
        passphrase: bytes | None = None,
        force: bool = False,
        bench_run: str | None = None,
    ) -> IssuedCert:
        """Issue a client certificate for ``name``; write the bundle (key + cert + CA), 0600.

        ``out`` defaults to ``./NAME.pem``; an existing file is refused unless ``force``.
        ``passphrase`` encrypts the bundle's key. ``not_before`` (for tests) moves the validity
        window; a certificate that is already expired cannot clash with a live name.
        ``bench_run`` records it as a certificate of that bench run (see :mod:`.benchrun`).
        """
        _check_name(name)
        key = generate_key(key_type)
        target = Path(out) if out is not None else Path(f"{name}.pem")
        return self._issue(
            kind="user",
            cn=name,
            public_key=key.public_key(),
            days=days,
            valid=valid,
            not_before=not_before,
            out=target,
            force=force,
            render=lambda cert: serialize_bundle(key, cert, [self.cert], passphrase),
            mode=PRIVATE,
            bench_run=bench_run,
        )

    def issue_server(
        self,
        hosts: Sequence[str],
        *,
        days: int | None = None,
        valid: timedelta | None = None,
        out: Path | None = None,
        key_type: str = DEFAULT_KEY_TYPE,
        force: bool = False,
        bench_run: str | None = None,
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
            valid=valid,
            not_before=None,
            out=Path(out) if out is not None else self.paths.server_bundle,
            force=force,
            render=lambda cert: serialize_bundle(key, cert, [self.cert]),
            mode=PRIVATE,
            sans=sans,
            unique=False,
            bench_run=bench_run,
        )

    def sign_csr(
        self,
        csr: Path | bytes,
        *,
        days: int | None = None,
        valid: timedelta | None = None,
        out: Path | None = None,
        force: bool = False,
    ) -> IssuedCert:
        """Sign a user's CSR (the key never leaves their machine): writes certificate + CA.

        The CSR's subject must be just ``CN=<name>`` (name policy and uniqueness apply), its
        key strong enough, and any extension it requests harmless; its extensions are never
        copied. ``out`` defaults to ``./NAME.crt``.
        """
        request = load_csr(csr)
        name = check_csr(request)
        target = Path(out) if out is not None else Path(f"{name}.crt")
        return self._issue(
            kind="user",
            cn=name,
            public_key=request.public_key(),
            days=days,
            valid=valid,
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
        valid: timedelta | None = None,
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
            valid=valid,
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
        valid: timedelta | None,
        not_before: datetime | None,
        out: Path,
        force: bool,
        render: Callable[[x509.Certificate], bytes],
        mode: int,
        sans: Sequence[x509.GeneralName] = (),
        unique: bool = True,
        supersede: bool = False,
        bench_run: str | None = None,
    ) -> IssuedCert:
        if valid is None:
            days = DEFAULT_LEAF_DAYS if days is None else days
            check_days(days)
            valid = timedelta(days=days)
        check_validity(valid, server=kind == "server")
        if out.exists() and not force:
            raise OutputExists(f"{out} already exists (use --force to overwrite)")
        ca_key = self.key  # decrypt before taking the lock: a wrong passphrase fails fast
        now = datetime.now(UTC)
        start = not_before if not_before is not None else now - CLOCK_SKEW
        end = min(start + valid, self.cert.not_valid_after_utc)
        if end <= start:
            raise BadRequest("the CA certificate has expired: create a new CA")
        # Recorded first, then written: whatever exists on disk (the file, or a temporary left
        # by a kill) is in the record and can be revoked.
        with self.db.transaction() as conn:
            if unique and end > now and self.db.active_names(conn, cn, kind, now):
                raise NameTaken(
                    f"{cn!r} already has a valid certificate (names are unique "
                    "case-insensitively; revoke or renew it instead)"
                )
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
            if bench_run is not None:
                self.db.mark_bench(conn, cert.serial_number, bench_run, out)
        pause_point("issue:recorded")
        try:
            atomic_write(out, render(cert), mode=mode, overwrite=force)
        except BaseException:
            if _pem(cert) not in (_read_or_none(out) or b""):
                # Never handed out: forget it, so the name is free again. (Killed before this,
                # the record stays: safe, and `ca renew` or `ca revoke` clears it.)
                with contextlib.suppress(CAError), self.db.transaction() as conn:
                    self.db.delete(conn, cert.serial_number)
            raise
        if supersede:
            # Only once the new bundle exists: a failed renew must not lock the member out.
            self._revoke_and_publish(
                lambda conn: self.db.revoke(
                    conn, cn, kind, "superseded", now, keep=cert.serial_number
                )
            )
        return IssuedCert(
            path=out, serial=cert.serial_number, name=cn, not_after=end, kind=kind, cert=cert
        )

    # -- revoking -----------------------------------------------------------------------------
    # Each revocation commits the record and the new CRL (with its number) in one transaction,
    # then writes crl.pem from the record: a kill in between leaves crl.pem one CRL behind, and
    # the next command publishes the recorded one. An announced revocation is never undone, and
    # CRL numbers never repeat.

    def revoke(self, name: str, *, reason: str = "unspecified", kind: str = "user") -> list[int]:
        """Revoke every unrevoked certificate called ``name`` and rewrite the CRL at once.

        Returns the serials revoked; raises :class:`UnknownName` if there were none.
        """
        check_reason(reason)

        def change(conn: sqlite3.Connection) -> list[int]:
            serials = self.db.revoke(conn, name, kind, reason, datetime.now(UTC))
            if not serials:
                raise UnknownName(f"no unrevoked {kind} certificate named {name!r}")
            return serials

        return self._revoke_and_publish(change)

    def revoke_serial(self, serial: int, *, reason: str = "unspecified") -> CertRecord | None:
        """Revoke one certificate by serial number and rewrite the CRL.

        A serial the record does not hold (a certificate issued before ``ca.db`` was lost, say)
        is listed in the CRL all the same; the record of a known one is returned, else None.
        """
        check_reason(reason)

        def change(conn: sqlite3.Connection) -> CertRecord | None:
            now = datetime.now(UTC)
            record = self.db.get(conn, serial)
            if record is None:
                if not self.db.revoke_unknown(conn, serial, reason, now):
                    raise UnknownName(f"serial {serial:x} is already revoked")
            elif not self.db.revoke_serial(conn, serial, reason, now):
                raise UnknownName(f"no unrevoked certificate with serial {serial:x}")
            return record

        return self._revoke_and_publish(change)

    def revoke_cert(self, path: Path, *, reason: str = "unspecified") -> RevokedCert:
        """Revoke the certificate in ``path`` (a certificate, bundle or ``.crt`` from this CA),
        whether or not the record holds it (if not, it is recorded now, as revoked).
        """
        check_reason(reason)
        cert = self._own_certificate(path)

        def change(conn: sqlite3.Connection) -> RevokedCert:
            now = datetime.now(UTC)
            serial = cert.serial_number
            name = common_name(cert.subject) or ""
            record = self.db.get(conn, serial)
            if record is None:
                self.db.insert(conn, _record_of(cert, name))
            if not self.db.revoke_serial(conn, serial, reason, now):
                raise UnknownName(f"{name!r} (serial {serial:x}) is already revoked")
            return RevokedCert(serial=serial, name=name, was_recorded=record is not None)

        return self._revoke_and_publish(change)

    def end_bench_run(self, run: str) -> int:
        """Revoke the certificates of bench run ``run`` (one CRL), delete their bundles, and
        mark the run done; returns how many. Safe to repeat after a kill at any point."""
        with self.db.transaction() as conn:
            pending = self.db.bench_pending(conn, run)
        if pending:
            now = datetime.now(UTC)
            self._revoke_and_publish(
                lambda conn: [
                    self.db.revoke_serial(conn, serial, "cessation-of-operation", now)
                    for serial, _ in pending
                ]
            )
            for _, path in pending:  # (revoked first: a key deleted too late is harmless)
                path.unlink(missing_ok=True)
            remove_stale_temporaries(self.paths.bench)  # a bundle a kill left half written
        with self.db.transaction() as conn:
            self.db.bench_finished(conn, run)
        return len(pending)

    def clean_stale_bench_runs(self) -> int:
        """:meth:`end_bench_run` for every bench run that is over (killed, say) but not cleaned
        up; returns how many certificates that revoked."""
        cleaned = 0
        for run in self.db.bench_runs():
            with benchrun.claim_if_over(self.paths, run) as over:
                if over:
                    cleaned += self.end_bench_run(run)
        return cleaned

    def write_crl(self, days: int = DEFAULT_CRL_DAYS) -> Path:
        """(Re)write ``crl.pem`` with the next CRL number and a nextUpdate ``days`` away."""
        check_crl_days(days)
        self._revoke_and_publish(lambda conn: None, days)
        return self.paths.crl

    def _revoke_and_publish(
        self, change: Callable[[sqlite3.Connection], _T], days: int = DEFAULT_CRL_DAYS
    ) -> _T:
        """Run ``change`` and sign the next CRL in one transaction, then write ``crl.pem``."""
        ca_key = self.key
        with self.db.transaction() as conn:
            result = change(conn)
            _sign_crl(self.db, conn, ca_key, self.cert, datetime.now(UTC), days)
        pause_point("crl:recorded")
        self._publish_crl()
        return result

    def _publish_crl(self) -> None:
        """Write the newest recorded CRL to ``crl.pem`` (under the database lock, so that two
        commands finishing at once cannot leave the older of their CRLs in place)."""
        with self.db.transaction() as conn:
            pem = self.db.latest_crl(conn)
            if pem is not None and _read_or_none(self.paths.crl) != pem:
                atomic_write(self.paths.crl, pem, mode=PUBLIC)

    def _own_certificate(self, path: Path) -> x509.Certificate:
        """The first certificate in ``path`` that this CA signed (not the CA itself)."""
        data = read_file(path, "certificate")
        try:
            if b"-----BEGIN" in data:
                certs = x509.load_pem_x509_certificates(data)
            else:
                certs = [x509.load_der_x509_certificate(data)]
        except ValueError:
            raise BadFile(f"{path} holds no certificate") from None
        for cert in certs:
            if cert == self.cert:
                continue
            try:
                cert.verify_directly_issued_by(self.cert)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return cert
        raise BadRequest(f"{path} holds no certificate signed by this CA ({self.name!r})")

    # -- reading ------------------------------------------------------------------------------

    def records(self) -> list[CertRecord]:
        """Every certificate issued, oldest first."""
        return self.db.all()

    def crl_state(self, now: datetime | None = None) -> CRLState | None:
        """What ``crl.pem`` says (None if it is missing, unreadable or not signed by this CA)."""
        try:
            crl = load_verified_crl(self.paths.crl, self.cert)
        except CAError:
            return None
        return crl_state(crl, now or datetime.now(UTC))

    def crl_due(self, within: timedelta, now: datetime | None = None) -> bool:
        """Whether ``crl.pem`` must be re-signed to stay valid for ``within`` (or is unusable)."""
        now = now or datetime.now(UTC)
        state = self.crl_state(now)
        return state is None or state.due(within, now)

    def rows(self, now: datetime | None = None) -> list[CertRow]:
        """Every certificate issued as listed by ``ca list`` (status as of ``now``)."""
        return cert_rows(self.db.all(), now or datetime.now(UTC))


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _sign_crl(
    db: CertDB,
    conn: sqlite3.Connection,
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    now: datetime,
    days: int,
) -> bytes:
    """Sign the next CRL from the record and record it (inside the caller's transaction)."""
    number = db.next_crl_number(conn)
    crl = build_crl(
        ca_key=ca_key,
        ca_cert=ca_cert,
        revoked=db.revoked(conn, now),
        number=number,
        now=now,
        days=days,
    )
    pem = crl.public_bytes(serialization.Encoding.PEM)
    db.record_crl(conn, number, pem, now)
    return pem


def _record_of(cert: x509.Certificate, name: str) -> CertRecord:
    """A record for a certificate of this CA that the database did not hold."""
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        server = ExtendedKeyUsageOID.SERVER_AUTH in eku
    except x509.ExtensionNotFound:
        server = False
    return CertRecord(
        serial=cert.serial_number,
        name=name,
        kind="server" if server else "user",
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        fingerprint=fingerprint(cert),
        revoked_at=None,
        reason=None,
        cert_pem=_pem(cert).decode(),
    )
