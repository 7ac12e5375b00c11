"""``mtlschat ca ...``: thin CLI over :mod:`mtlschat.ca` (parse, call, print).

Every error from the library is a :class:`~mtlschat.ca.errors.CAError` with a one-line message:
it is printed as ``mtlschat: error: ...`` on stderr with exit code 1 (typer's usage errors exit
2).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

# Only what the command signatures need is imported here; the CA itself, bundles, export and
# rich are imported by the commands that use them, so other `mtlschat` commands start faster.
from mtlschat.ca.crl import DEFAULT_CRL_DAYS, Reason
from mtlschat.ca.errors import BadFile, BadRequest, CAError, PassphraseRequired
from mtlschat.ca.fileio import read_file
from mtlschat.ca.keys import KeyType
from mtlschat.ca.paths import DEFAULT_PKI_DIR, PKI_ENV
from mtlschat.ca.profile import (
    DEFAULT_CA_DAYS,
    DEFAULT_LEAF_DAYS,
    MAX_SERVER_DAYS,
    parse_validity,
)
from mtlschat.cli.output import fail

if TYPE_CHECKING:
    from mtlschat.ca.authority import CertificateAuthority

CA_PASSPHRASE_ENV = "MTLSCHAT_CA_PASSPHRASE"
BUNDLE_PASSPHRASE_ENV = "MTLSCHAT_BUNDLE_PASSPHRASE"
P12_PASSWORD_ENV = "MTLSCHAT_P12_PASSWORD"

app = typer.Typer(
    help="""Run the certificate authority: init, issue, sign, revoke, export ...

    Every command works on the PKI directory given by --pki or MTLSCHAT_PKI, pki by default.

    Examples:
      mtlschat ca init
      mtlschat ca issue alice
      mtlschat ca revoke bob
    """,
    no_args_is_help=True,
)


class ExportFormat(StrEnum):
    """Formats ``ca export`` writes."""

    p12 = "p12"


Pki = Annotated[
    Path,
    typer.Option("--pki", envvar=PKI_ENV, help="PKI directory.", show_default=True),
]
Force = Annotated[bool, typer.Option("--force", help="Overwrite an existing output file.")]
Days = Annotated[
    int | None,
    typer.Option(
        "--days",
        help=f"Validity in days: a server certificate at most {MAX_SERVER_DAYS}, a member's up "
        f"to the CA's expiry. [default: {DEFAULT_LEAF_DAYS}]",
    ),
]
Valid = Annotated[
    str | None,
    typer.Option("--valid", help="Validity as a duration instead of --days: 90d, 8760h, 12w, 2y."),
]
Encrypt = Annotated[
    bool,
    typer.Option(
        "--encrypt",
        help=f"Encrypt the bundle's key: passphrase from {BUNDLE_PASSPHRASE_ENV} or a prompt.",
    ),
]
LeafKeyType = Annotated[KeyType, typer.Option("--key-type", help="Key algorithm of the new key.")]


# -- helpers: errors, secrets, opening the CA ------------------------------------------------


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Turn library errors (and Ctrl-C at a prompt) into one line on stderr and exit 1."""
    try:
        yield
    except CAError as e:
        fail(str(e))
    except (KeyboardInterrupt, EOFError, typer.Abort):
        fail("aborted")


def _env_bytes(name: str) -> bytes | None:
    value = os.environ.get(name)
    return value.encode() if value else None


def _secret(env: str, prompt: str, *, confirm: bool, required: bool, why: str = "") -> bytes | None:
    """A passphrase from ``env``, else from a hidden prompt on a terminal, else None/an error.

    ``why`` starts the error message when none can be had (default: "<prompt> needed").
    """
    value = _env_bytes(env)
    if value:
        return value
    if sys.stdin.isatty():
        entered: str = typer.prompt(prompt, hide_input=True, confirmation_prompt=confirm)
        if entered:
            return entered.encode()
    if required:
        reason = why or f"{prompt} needed"  # as the prompt says it: "PKCS#12 password"
        raise PassphraseRequired(f"{reason}: set {env} or run in a terminal")
    return None


def _open_ca(pki: Path, *, need_key: bool) -> CertificateAuthority:
    """Open the CA; when signing, decrypt its key now (prompting if needed) to fail early."""
    from mtlschat.ca.authority import CertificateAuthority

    ca = CertificateAuthority.open(pki, passphrase=_env_bytes(CA_PASSPHRASE_ENV))
    if ca.bench_cleaned:
        typer.echo(
            f"revoked {ca.bench_cleaned} certificates of an interrupted `mtlschat bench` and "
            "deleted their keys",
            err=True,
        )
    if need_key:
        passphrase = None
        if ca.key_encrypted:
            passphrase = _secret(
                CA_PASSPHRASE_ENV,
                "CA key passphrase",
                confirm=False,
                required=True,
                why=f"the CA key {ca.paths.ca_key} is encrypted",
            )
        ca.unlock(passphrase)  # wrong passphrase, missing key, key/certificate mismatch
    return ca


def _ask_bundle_passphrase(why: str, attempt: int) -> bytes | None:
    """The bundle passphrase: from the environment once, else up to three prompts."""
    if attempt == 0 and (value := _env_bytes(BUNDLE_PASSPHRASE_ENV)):
        return value
    if os.environ.get(BUNDLE_PASSPHRASE_ENV) or not sys.stdin.isatty():
        if attempt == 0:
            raise PassphraseRequired(f"{why}: set {BUNDLE_PASSPHRASE_ENV} or run in a terminal")
        return None
    if attempt:
        typer.echo("wrong passphrase, try again", err=True)
    return typer.prompt("Bundle passphrase", hide_input=True).encode() or None


def _bundle_passphrase(encrypt: bool) -> bytes | None:
    if not encrypt:
        return None
    return _secret(
        BUNDLE_PASSPHRASE_ENV,
        "Bundle passphrase",
        confirm=True,
        required=True,
        why="--encrypt needs a passphrase",
    )


def _p12_password(password_file: Path | None, *, confirm: bool = True) -> bytes:
    if password_file is not None:
        lines = read_file(password_file, "password file").splitlines()
        if not lines or not lines[0]:
            raise BadRequest(f"password file {password_file} is empty")
        return lines[0]
    password = _secret(P12_PASSWORD_ENV, "PKCS#12 password", confirm=confirm, required=True)
    assert password is not None
    return password


def _validity(days: int | None, valid: str | None) -> timedelta | None:
    """--valid as a duration (None: the library uses --days or its default)."""
    if valid is None:
        return None
    if days is not None:
        raise BadRequest("give --days or --valid, not both")
    return parse_validity(valid)


def _date(value: datetime) -> str:
    return value.strftime("%Y-%m-%d")


# -- commands -----------------------------------------------------------------------------------


@app.command()
def init(
    pki: Pki = DEFAULT_PKI_DIR,
    name: Annotated[str, typer.Option("--name", help="The CA's name (its CN).")] = "mtlschat CA",
    key_type: Annotated[KeyType, typer.Option("--key-type", help="CA key algorithm.")] = (
        KeyType.ec_p256
    ),
    days: Annotated[int, typer.Option("--days", help="CA validity in days.")] = DEFAULT_CA_DAYS,
    encrypt: Annotated[
        bool,
        typer.Option(
            "--encrypt",
            help=f"Encrypt ca.key with a passphrase from a prompt (or {CA_PASSPHRASE_ENV}).",
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace an existing CA (kept in PKI/backup-DATE/)."),
    ] = False,
) -> None:
    """Create a root CA: ca.crt, ca.key (0600), an empty record ca.db and crl.pem.

    If MTLSCHAT_CA_PASSPHRASE is set, ca.key is encrypted with it; --encrypt asks for a
    passphrase when it is not set.

    Examples:
      mtlschat ca init --name "Acme Chat CA"
      mtlschat ca init --pki /etc/mtlschat --encrypt
    """
    from mtlschat.ca.authority import CertificateAuthority

    with _errors():
        passphrase = None
        if encrypt or os.environ.get(CA_PASSPHRASE_ENV):
            passphrase = _secret(
                CA_PASSPHRASE_ENV, "CA key passphrase", confirm=True, required=True
            )
        ca = CertificateAuthority.init(
            pki, name=name, key_type=key_type, days=days, passphrase=passphrase, force=force
        )
        lock = " (passphrase-protected)" if passphrase else ""
        if ca.backup_dir is not None:
            typer.echo(f"moved the previous CA (certificate, key, record, CRL) to {ca.backup_dir}")
        typer.echo(f"created CA {ca.name!r} in {ca.paths.dir}{lock}")
        typer.echo(f"  certificate: {ca.paths.ca_cert}  (give this to servers and members)")
        typer.echo(f"  private key: {ca.paths.ca_key}  (keep it secret)")
        typer.echo(f"  expires:     {_date(ca.cert.not_valid_after_utc)}")


@app.command()
def issue(
    names: Annotated[
        list[str],
        typer.Argument(
            metavar="NAME | --server HOST...", help="Username, or the server's hosts/IPs."
        ),
    ],
    pki: Pki = DEFAULT_PKI_DIR,
    server: Annotated[
        bool,
        typer.Option(
            "--server", help="Issue a server certificate for these DNS names / IP addresses."
        ),
    ] = False,
    days: Days = None,
    valid: Valid = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output bundle. [default: ./NAME.pem, or PKI/server.pem]"),
    ] = None,
    force: Force = False,
    encrypt: Encrypt = False,
    key_type: LeafKeyType = KeyType.ec_p256,
) -> None:
    """Issue a member's certificate as ONE file NAME.pem: key + certificate + CA certificate.

    With --server: a server certificate (DNS and IP SANs, serverAuth) written to PKI/server.pem,
    where `mtlschat server` looks.

    Examples:
      mtlschat ca issue alice
      mtlschat ca issue carol --out pki/users/carol.pem --encrypt
      mtlschat ca issue --server chat.example.org 192.0.2.7
    """
    with _errors():
        if not server and len(names) != 1:
            raise BadRequest("give exactly one username (or use --server HOST...)")
        validity = _validity(days, valid)
        ca = _open_ca(pki, need_key=True)
        if server:
            if encrypt:
                raise BadRequest("--encrypt is for member bundles; the server needs its key")
            issued = ca.issue_server(
                names, days=days, valid=validity, out=out, key_type=key_type, force=force
            )
        else:
            issued = ca.issue_user(
                names[0],
                days=days,
                valid=validity,
                out=out,
                key_type=key_type,
                passphrase=_bundle_passphrase(encrypt),
                force=force,
            )
        typer.echo(
            f"issued {issued.kind} certificate {issued.name!r} -> {issued.path} "
            f"(serial {issued.serial:x}, expires {_date(issued.not_after)})"
        )


@app.command()
def sign(
    csr: Annotated[
        Path, typer.Argument(metavar="CSR", help="The CSR (PEM or DER), subject CN=NAME.")
    ],
    pki: Pki = DEFAULT_PKI_DIR,
    days: Days = None,
    valid: Valid = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output certificate + CA. [default: ./NAME.crt]"),
    ] = None,
    force: Force = False,
) -> None:
    """Sign a member's CSR, so their private key never leaves their machine.

    The name policy applies; a CSR asking for CA powers or odd extensions is refused.

    Examples:
      mtlschat ca sign carol.csr
      mtlschat ca sign carol.csr --out carol.crt
    """
    with _errors():
        validity = _validity(days, valid)
        ca = _open_ca(pki, need_key=True)
        issued = ca.sign_csr(csr, days=days, valid=validity, out=out, force=force)
        typer.echo(
            f"signed {issued.name!r} -> {issued.path} "
            f"(serial {issued.serial:x}, expires {_date(issued.not_after)})"
        )


@app.command("list")
def list_(
    pki: Pki = DEFAULT_PKI_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    show_all: Annotated[
        bool, typer.Option("--all", help="Also the certificates `mtlschat bench` issued.")
    ] = False,
    bench: Annotated[
        bool, typer.Option("--bench", help="Only the certificates `mtlschat bench` issued.")
    ] = False,
) -> None:
    """Every certificate issued: serial, name, kind, expiry and status.

    Certificates `mtlschat bench` issued into this PKI (valid a day, revoked when the run ends)
    are left out unless --all or --bench.

    Examples:
      mtlschat ca list
      mtlschat ca list --json
      mtlschat ca list --bench
    """
    from rich.console import Console
    from rich.table import Table

    with _errors():
        ca = _open_ca(pki, need_key=False)
        every = ca.rows()
        rows = [r for r in every if r.bench == bench or show_all]
        hidden = len(every) - len(rows)
        if as_json:
            typer.echo(json.dumps([r.to_json() for r in rows], indent=2))
            return
        table = Table("serial", "name", "kind", "expires", "status", box=None)
        for r in rows:
            status = r.status
            if r.reason and status == "revoked":
                status += f" ({r.reason})"
            if r.expires_soon:
                status += " (expires soon)"
            table.add_row(r.serial, r.name, r.kind, _date(r.not_after), status)
        console = Console() if sys.stdout.isatty() else Console(width=200)
        if rows:
            console.print(table)
        else:
            typer.echo("no certificates issued yet" if not every else "no certificates to show")
        if hidden and not bench:
            typer.echo(f"({hidden} bench certificates not shown: --all or --bench shows them)")
        state = ca.crl_state()
        if state is None:
            typer.echo(f"{ca.paths.crl}: missing or unreadable: run `mtlschat ca crl`")
        elif state.next_update is not None:
            mark = ""
            if state.expired:
                mark = " EXPIRED: every member is refused until `mtlschat ca crl`"
            elif state.expires_soon:
                mark = " (expires soon: run `mtlschat ca crl`)"
            typer.echo(
                f"{ca.paths.crl}: CRL number {state.number}, {state.revoked} revoked, "
                f"next update {_date(state.next_update)}{mark}"
            )


_NEXT_AFTER_CRL = (
    "a server using this PKI reloads crl.pem within 5 seconds and disconnects revoked members "
    "(SIGHUP applies it at once; a server on another host needs the new file copied to it)"
)


@app.command()
def revoke(
    name: Annotated[
        str | None,
        typer.Argument(metavar="NAME", help="The member whose certificate to revoke."),
    ] = None,
    pki: Pki = DEFAULT_PKI_DIR,
    reason: Annotated[Reason, typer.Option("--reason", help="Why (RFC 5280 reason).")] = (
        Reason.unspecified
    ),
    serial: Annotated[
        str | None, typer.Option("--serial", help="Revoke one certificate by (hex) serial.")
    ] = None,
    cert: Annotated[
        Path | None,
        typer.Option("--cert", help="Revoke the certificate in this file (bundle or .crt)."),
    ] = None,
    server: Annotated[
        bool, typer.Option("--server", help="NAME is a server certificate's CN.")
    ] = False,
) -> None:
    """Revoke a certificate and rewrite crl.pem at once; a running server applies it by itself.

    --serial and --cert revoke any certificate this CA signed, even one ca.db does not hold.

    Examples:
      mtlschat ca revoke bob --reason key-compromise
      mtlschat ca revoke --serial 3f2a9c
      mtlschat ca revoke --cert lost-laptop.pem
    """
    with _errors():
        given = sum(x is not None for x in (name, serial, cert))
        if given == 0:
            raise BadRequest("give a NAME, --serial or --cert (see mtlschat ca revoke -h)")
        if given > 1:
            raise BadRequest("give one of NAME, --serial or --cert, not more")
        ca = _open_ca(pki, need_key=True)
        if serial is not None:
            try:
                number = int(serial.removeprefix("0x"), 16)
            except ValueError:
                raise BadRequest(f"--serial {serial!r} is not a hex number") from None
            record = ca.revoke_serial(number, reason=reason)
            what = f"{record.name!r} (serial {number:x})" if record else f"serial {number:x}"
            typer.echo(f"revoked {what}; {ca.paths.crl} rewritten")
            if record is None:
                typer.echo(
                    f"note: serial {number:x} is not in {ca.paths.db}: it is listed in the CRL "
                    "as given (check it against the certificate)",
                    err=True,
                )
            typer.echo(_NEXT_AFTER_CRL)
            return
        if cert is not None:
            revoked = ca.revoke_cert(cert, reason=reason)
            typer.echo(
                f"revoked {revoked.name!r} (serial {revoked.serial:x}); {ca.paths.crl} rewritten"
            )
            if not revoked.was_recorded:
                typer.echo(f"note: {cert} was not in {ca.paths.db}: recorded now", err=True)
            typer.echo(_NEXT_AFTER_CRL)
            return
        assert name is not None
        serials = ca.revoke(name, reason=reason, kind="server" if server else "user")
        listed = ", ".join(f"{s:x}" for s in serials)
        typer.echo(f"revoked {name!r} (serial {listed}); {ca.paths.crl} rewritten")
        typer.echo(_NEXT_AFTER_CRL)


@app.command()
def crl(
    pki: Pki = DEFAULT_PKI_DIR,
    days: Annotated[
        int, typer.Option("--days", help="Days until the CRL's nextUpdate.")
    ] = DEFAULT_CRL_DAYS,
    if_due: Annotated[
        int | None,
        typer.Option(
            "--if-due",
            metavar="DAYS",
            help="Only if crl.pem's nextUpdate is within DAYS days (or it is unusable): for cron.",
        ),
    ] = None,
) -> None:
    """Rewrite crl.pem: next CRL number, nextUpdate in --days (re-run before then).

    Examples:
      mtlschat ca crl
      mtlschat ca crl --days 30
      mtlschat ca crl --if-due 30
    """
    with _errors():
        if if_due is not None:
            if if_due < 0:
                raise BadRequest(f"--if-due must be 0 or more days (got {if_due})")
            ca = _open_ca(pki, need_key=False)
            state = ca.crl_state()
            if (
                state is not None
                and state.next_update is not None
                and not ca.crl_due(timedelta(days=if_due))
            ):
                typer.echo(
                    f"{ca.paths.crl} is valid until {_date(state.next_update)}: not due "
                    f"(--if-due {if_due})"
                )
                return
        ca = _open_ca(pki, need_key=True)
        path = ca.write_crl(days)
        typer.echo(f"wrote {path} (valid for {days} days)")


@app.command()
def renew(
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="The member to give a new key and certificate.")
    ],
    pki: Pki = DEFAULT_PKI_DIR,
    days: Days = None,
    valid: Valid = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output bundle. [default: ./NAME.pem]")
    ] = None,
    force: Force = False,
    revoke_old: Annotated[
        bool,
        typer.Option("--revoke-old", help="Revoke the old certificate(s) now (reason superseded)."),
    ] = False,
    encrypt: Encrypt = False,
    key_type: LeafKeyType = KeyType.ec_p256,
) -> None:
    """New key and certificate for an existing member.

    The old certificate stays valid until it expires (the member can switch over without being
    locked out) unless --revoke-old is given.

    Examples:
      mtlschat ca renew bob
      mtlschat ca renew bob --revoke-old --out pki/users/bob.pem
    """
    with _errors():
        validity = _validity(days, valid)
        ca = _open_ca(pki, need_key=True)
        issued = ca.renew(
            name,
            days=days,
            valid=validity,
            out=out,
            revoke_old=revoke_old,
            key_type=key_type,
            passphrase=_bundle_passphrase(encrypt),
            force=force,
        )
        old = "revoked" if revoke_old else "still valid until it expires"
        typer.echo(
            f"renewed {issued.name!r} -> {issued.path} (serial {issued.serial:x}, expires "
            f"{_date(issued.not_after)}); the old certificate is {old}"
        )


@app.command()
def export(
    bundle: Annotated[
        str, typer.Argument(metavar="NAME|BUNDLE", help="A bundle file, or NAME for ./NAME.pem.")
    ],
    fmt: Annotated[ExportFormat, typer.Option("--format", help="Output format.")] = (
        ExportFormat.p12
    ),
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output file. [default: NAME.p12]")
    ] = None,
    password_file: Annotated[
        Path | None, typer.Option("--password-file", help="Read the password from this file.")
    ] = None,
    force: Force = False,
) -> None:
    """Export a bundle as a PKCS#12 keystore (key + certificate + CA) for Java, browsers ...

    Password from --password-file, MTLSCHAT_P12_PASSWORD or a prompt. An encrypted bundle's
    passphrase comes from MTLSCHAT_BUNDLE_PASSPHRASE or a prompt.

    Examples:
      mtlschat ca export alice
      mtlschat ca export pki/server.pem --out server.p12 --password-file pw.txt
    """
    from mtlschat.ca.export import export_bundle

    with _errors():
        exported = export_bundle(
            bundle,
            password=lambda: _p12_password(password_file),
            ask_passphrase=_ask_bundle_passphrase,
            out=out,
            force=force,
        )
        typer.echo(
            f"wrote {exported.path} (PKCS#12: key and certificate of {exported.name!r} + CA)"
        )


@app.command()
def truststore(
    pki: Pki = DEFAULT_PKI_DIR,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output PKCS#12 truststore.")] = Path(
        "truststore.p12"
    ),
    password_file: Annotated[
        Path | None, typer.Option("--password-file", help="Read the password from this file.")
    ] = None,
    force: Force = False,
) -> None:
    """Write a Java truststore (PKCS#12) holding the CA certificate as a trusted entry.

    Password from --password-file, MTLSCHAT_P12_PASSWORD or a prompt.

    Examples:
      mtlschat ca truststore --out myTrustStore.p12
    """
    from mtlschat.ca.export import write_truststore

    with _errors():
        ca = _open_ca(pki, need_key=False)
        write_truststore(ca.cert, out, lambda: _p12_password(password_file), force=force)
        typer.echo(f"wrote {out} (truststore with {ca.name!r} as a trusted certificate)")


@app.command()
def show(
    file: Annotated[
        Path,
        typer.Argument(metavar="FILE", help="A certificate, bundle, CSR, CRL or PKCS#12 file."),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    password_file: Annotated[
        Path | None,
        typer.Option("--password-file", help="A PKCS#12 file's password (first line)."),
    ] = None,
) -> None:
    """Subject, issuer, SANs, validity, key type and SHA-256 fingerprint of what FILE holds.

    Reads PEM, DER and the PKCS#12 files `ca export` and `ca truststore` write (password from
    --password-file, MTLSCHAT_P12_PASSWORD or a prompt).

    Examples:
      mtlschat ca show alice.pem
      mtlschat ca show pki/crl.pem --json
    """
    from mtlschat.ca.describe import describe_file

    with _errors():
        if not file.exists():
            raise BadFile(f"{file} not found")
        sections = describe_file(file, lambda: _p12_password(password_file, confirm=False))
        if as_json:
            typer.echo(
                json.dumps([{"type": s.title, **dict(s.fields)} for s in sections], indent=2)
            )
            return
        for i, section in enumerate(sections):
            if i:
                typer.echo("")
            typer.echo(f"{section.title}:")
            width = max(len(label) for label, _ in section.fields)
            for label, value in section.fields:
                typer.echo(f"  {label:<{width}}  {value}")


# -- the member's side (registered as top-level `mtlschat request` and `mtlschat bundle`) ------


def request(
    name: Annotated[str, typer.Argument(help="Your username (the CN the operator will sign).")],
    key: Annotated[
        Path | None, typer.Option("--key", help="Where to write your key. [default: ./NAME.key]")
    ] = None,
    csr: Annotated[
        Path | None, typer.Option("--csr", help="Where to write the CSR. [default: ./NAME.csr]")
    ] = None,
    encrypt: Annotated[
        bool,
        typer.Option(
            "--encrypt",
            help=f"Encrypt your key: passphrase from {BUNDLE_PASSPHRASE_ENV} or a prompt.",
        ),
    ] = False,
    key_type: LeafKeyType = KeyType.ec_p256,
    force: Force = False,
) -> None:
    """Make your own key (0600) and a certificate signing request, so that your key never
    leaves this machine.

    Send NAME.csr to the operator (`mtlschat ca sign NAME.csr`), then join the NAME.crt you get
    back with your key: `mtlschat bundle NAME.key NAME.crt` writes NAME.pem for the client.

    Examples:
      mtlschat request alice
      mtlschat request alice --encrypt --key ~/.mtlschat/alice.key
    """
    from mtlschat.ca.csr import make_request

    with _errors():
        made = make_request(
            name,
            key_out=key,
            csr_out=csr,
            key_type=key_type,
            passphrase=_bundle_passphrase(encrypt),
            force=force,
        )
        typer.echo(f"wrote your key {made.key} (0600: keep it here) and the request {made.csr}")
        typer.echo(f"next: send {made.csr} to the operator, who runs `mtlschat ca sign {made.csr}`")
        crt = made.csr.with_suffix(".crt")
        typer.echo(f"then: mtlschat bundle {made.key} {crt}  (writes {crt.with_suffix('.pem')})")


def bundle(
    key: Annotated[Path, typer.Argument(help="Your key (from `mtlschat request`).")],
    cert: Annotated[
        Path, typer.Argument(help="The certificate the operator sent back (`ca sign`).")
    ],
    ca: Annotated[
        Path | None,
        typer.Option("--ca", help="The CA certificate, if CERT does not include it."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="The bundle. [default: CERT with .pem]")
    ] = None,
    force: Force = False,
) -> None:
    """Join your key and your signed certificate into one bundle for `mtlschat client --cert`.

    The key is copied as it is (an encrypted key stays encrypted); the bundle is written 0600.

    Examples:
      mtlschat bundle alice.key alice.crt
      mtlschat bundle alice.key alice.crt --ca ca.crt --out alice.pem
    """
    from mtlschat.ca.bundle import join_bundle

    with _errors():
        joined = join_bundle(
            key, cert, ask=_ask_bundle_passphrase, ca_path=ca, out=out, force=force
        )
        typer.echo(
            f"wrote {joined.path} (key + certificate of {joined.name!r} + CA): "
            f"mtlschat client --cert {joined.path}"
        )
