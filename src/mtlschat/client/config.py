"""The client's small config file: default bundle and server, and the UI's habits.

``$XDG_CONFIG_HOME/mtlschat/client.toml`` (``~/.config/mtlschat/client.toml``), or the file named
by ``MTLSCHAT_CLIENT_CONFIG``::

    cert = "/home/alice/alice.pem"   # default for --cert (MTLSCHAT_CERT overrides it)
    server = "chat.example.org"      # default HOST[:PORT] (MTLSCHAT_SERVER overrides it);
                                     # a list for the nodes of one room: ["a:7443", "b:7443"]
    paste_confirm = 5                # ask before sending a paste of more lines (0: never ask)
    bell = true                      # ring on a private message or a mention
    title = true                     # unread count and who called you in the terminal title

After the first successful join, the bundle and server used are remembered there when the file
does not name any yet, so that ``mtlschat client`` alone works the next time.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mtlschat.address import Address, parse_addresses
from mtlschat.ca.errors import CAError
from mtlschat.ca.fileio import atomic_write
from mtlschat.client.errors import ClientError, ExitCode

CONFIG_ENV = "MTLSCHAT_CLIENT_CONFIG"
CERT_ENV = "MTLSCHAT_CERT"
SERVER_ENV = "MTLSCHAT_SERVER"  # one or more HOST[:PORT], separated by commas or spaces


def config_path() -> Path:
    """Where the client's config file is (whether or not it exists)."""
    named = os.environ.get(CONFIG_ENV)
    if named:
        return Path(named)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mtlschat" / "client.toml"


@dataclass(frozen=True)
class ClientConfig:
    """What the config file says (defaults where it is silent)."""

    path: Path
    cert: Path | None = None
    server: tuple[str, ...] = ()  # HOST[:PORT] each; empty: not named
    paste_confirm: int = 5
    bell: bool = True
    title: bool = True


def _bad(path: Path, why: str) -> ClientError:
    return ClientError(ExitCode.USAGE, f"{path}: {why}")


def load_config(path: Path | None = None) -> ClientConfig:
    """Read the config file; a missing file is an empty one, a broken one a one-line error."""
    path = path or config_path()
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return ClientConfig(path)
    except tomllib.TOMLDecodeError as exc:
        raise _bad(path, f"not valid TOML ({exc})") from None
    except OSError as exc:
        raise _bad(path, exc.strerror or str(exc)) from None
    known = {"cert": str, "server": str, "paste_confirm": int, "bell": bool, "title": bool}
    for key, value in data.items():
        if key not in known:
            raise _bad(path, f"unknown setting {key!r} (known: {', '.join(known)})")
        kind = known[key]
        if key == "server" and isinstance(value, list):
            if not all(isinstance(item, str) for item in value):
                raise _bad(path, "server must be a string or a list of strings")
        elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise _bad(path, f"{key} must be a {kind.__name__}")
    if data.get("paste_confirm", 0) < 0:
        raise _bad(path, "paste_confirm must be 0 (never ask) or more")
    cert, server = data.get("cert"), data.get("server") or ()
    return ClientConfig(
        path,
        cert=Path(cert).expanduser() if cert else None,
        server=(server,) if isinstance(server, str) else tuple(server),
        paste_confirm=data.get("paste_confirm", 5),
        bell=data.get("bell", True),
        title=data.get("title", True),
    )


def choose_cert(given: Path | None, config: ClientConfig) -> Path:
    """``--cert``, else ``MTLSCHAT_CERT``, else the config file's; a clear error if none."""
    if given is not None:
        return given
    named = os.environ.get(CERT_ENV)
    if named:
        return Path(named).expanduser()
    if config.cert is not None:
        return config.cert
    raise ClientError(
        ExitCode.USAGE,
        f'which certificate? give --cert FILE (or set {CERT_ENV}, or cert = "FILE" in '
        f"{config.path})",
    )


def choose_servers(given: Sequence[str], config: ClientConfig) -> list[Address]:
    """The servers given on the command line, else ``MTLSCHAT_SERVER``, else the config file's,
    else ``localhost:7443``; a one-line error for a malformed one."""
    named = os.environ.get(SERVER_ENV, "")
    texts = given or ([named] if named.strip() else config.server)
    try:
        return parse_addresses(texts)
    except ValueError as exc:
        raise ClientError(ExitCode.USAGE, str(exc)) from None


def remember(config: ClientConfig, cert: Path, servers: Sequence[Address]) -> bool:
    """Write ``cert`` and ``servers`` as the defaults if the file names neither; True if written.

    The file is rewritten atomically with what it held plus the two lines.
    """
    if config.cert is not None or config.server:
        return False
    try:
        old = config.path.read_text() if config.path.exists() else ""
        config.path.parent.mkdir(parents=True, exist_ok=True)
        lines = [
            f"cert = {json.dumps(str(cert.expanduser().resolve()))}",
            f"server = {_toml_servers(servers)}",
        ]
        text = (old.rstrip("\n") + "\n" if old.strip() else "") + "\n".join(lines) + "\n"
        atomic_write(config.path, text.encode("utf-8"), mode=0o600)
    except (OSError, CAError):
        return False  # a read-only home: the user can still pass --cert every time
    return True


def _toml_servers(servers: Sequence[Address]) -> str:
    """One server as a TOML string, several as an array of strings."""
    texts = [json.dumps(str(server)) for server in servers]  # a JSON string is a TOML string
    return texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
