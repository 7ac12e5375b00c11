"""``mtlschat server``: thin CLI over :mod:`mtlschat.net`.

Its options are not written here: one per setting declared on
:class:`~mtlschat.net.config.ServerConfig`, each with its ``MTLSCHAT_*`` variable (typer's
``envvar``) and the TOML file read into typer's ``default_map``, so typer itself applies the
precedence flags > environment > file > defaults.
"""

from __future__ import annotations

import inspect
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from mtlschat.cli.output import fail
from mtlschat.net.config import ConfigError, ServerConfig, read_settings_file
from mtlschat.setting import envvar, flag, parse_value, public_settings

SETTINGS = public_settings(ServerConfig)
_FILE = "mtlschat.config_file"  # ctx.meta keys: the TOML file the default_map came from,
_SOURCES = "mtlschat.sources"  # and where each setting's value came from


def _read_file(ctx: typer.Context, value: Path | None) -> Path | None:
    """``--config``: runs before the other options (eager) so its values become their defaults."""
    if value is not None:
        ctx.default_map = {**(ctx.default_map or {}), **read_settings_file(value)}
        ctx.meta[_FILE] = value
    return value


def _parse_setting(ctx: typer.Context, param: typer.CallbackParam, value: Any) -> Any:
    """Check a setting's value, naming where it came from if it is bad."""
    name = param.name or ""
    source = ctx.get_parameter_source(name)
    where = {
        "COMMANDLINE": flag(name),
        "ENVIRONMENT": envvar(name),
        "DEFAULT_MAP": f"{name.replace('_', '-')} in {ctx.meta.get(_FILE)}",
    }.get(source.name if source else "", "default")
    ctx.meta.setdefault(_SOURCES, {})[name] = where
    return parse_value(name, SETTINGS[name], value, where)


def _toml(value: object) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, str | Path):
        return json.dumps(str(value))  # a JSON string is a TOML basic string
    return f"{value:g}" if isinstance(value, float) else str(value)


def settings_report(cfg: ServerConfig, sources: dict[str, str]) -> str:
    """The settings in effect, as TOML, each with where it came from (``--check``)."""
    lines = []
    for name, declared in SETTINGS.items():
        value, key, where = getattr(cfg, name), name.replace("_", "-"), sources.get(name, "")
        if value is None:
            lines.append(f"# {key} = {declared.default_text}  # {where}")
        else:
            lines.append(f"{key} = {_toml(value)}  # {where}")
    return "\n".join(lines)


def _option(name: str) -> inspect.Parameter:
    declared = SETTINGS[name]
    # The default is given as the user would type it, so --help shows it as it is documented
    # (5, not 5.0) and _parse_setting reads it like any other value. A default that is a rule,
    # not a value (PKI/server.pem), is stated in the help, with the same brackets.
    described = declared.shown_default
    help_text = declared.help + (f" [default: {described}]" if described else "")
    option = typer.Option(
        None if described else declared.kind.show(declared.default),
        flag(name),
        envvar=envvar(name),
        callback=_parse_setting,
        parser=lambda raw: raw,  # _parse_setting reads strings and TOML's typed values alike
        metavar=declared.metavar,
        show_default=not described,
        help=help_text,
    )
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=Any)


LIVE = ("operators", "motd")  # re-read from the config file on reload, without a restart


def _live_settings(ctx: typer.Context) -> Callable[[], dict[str, object]] | None:
    """What the server calls on reload: the live settings as the config file has them now.

    A live setting given by flag or environment variable keeps that value (they win over the
    file, and cannot change under a running process).
    """
    path: Path | None = ctx.meta.get(_FILE)
    if path is None:
        return None
    sources: dict[str, str] = ctx.meta.get(_SOURCES, {})
    from_file = [n for n in LIVE if sources.get(n) not in (flag(n), envvar(n))]

    def reread() -> dict[str, object]:
        values = read_settings_file(path)
        where = f"{{}} in {path}"
        return {
            name: parse_value(name, SETTINGS[name], values[name], where.format(name))
            if name in values
            else SETTINGS[name].default
            for name in from_file
        }

    return reread


def server(ctx: typer.Context, config: Path | None, check: bool, **settings: Any) -> None:
    """Run the chat server.

    Every setting is a flag, an environment variable MTLSCHAT_<NAME> and a key of the optional TOML
    file (--config): flags win over the environment, which wins over the file.

    Examples:
      mtlschat server
      mtlschat server --pki /etc/mtlschat --host 127.0.0.1 --port 7443
      MTLSCHAT_MAX_CONNECTIONS=20000 mtlschat server --config server.toml --check
    """
    # Imported here so `mtlschat --help` and the other commands don't pay for the server's.
    from mtlschat.logformat import log_formatter
    from mtlschat.net.server import StartupError, run_server
    from mtlschat.net.tls import TLSSetupError

    try:
        cfg = ServerConfig(**settings)
        cfg.check_workers()
        cfg.check_files()
        if check:
            typer.echo(settings_report(cfg, ctx.meta.get(_SOURCES, {})))
            return
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(log_formatter(cfg.log_format))
        logging.basicConfig(level=cfg.log_level, handlers=[handler])
        if cfg.workers > 1:
            from mtlschat.net.workers import run_workers

            run_workers(cfg, _live_settings(ctx))
        else:
            run_server(cfg, _live_settings(ctx))
    except (ConfigError, TLSSetupError, StartupError) as exc:
        fail(str(exc))


_CONFIG = typer.Option(
    None,
    "--config",
    envvar=envvar("config"),
    is_eager=True,
    callback=_read_file,
    metavar="FILE",
    help="TOML file with any of these settings (keys as the flags, top level or [server]).",
)
_CHECK = typer.Option(
    False,
    "--check",
    help="Check the settings and the PKI files, print the settings in effect and where each came "
    "from (as TOML), and exit.",
)
server.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
        inspect.Parameter(
            "config", inspect.Parameter.KEYWORD_ONLY, default=_CONFIG, annotation=Path | None
        ),
        inspect.Parameter("check", inspect.Parameter.KEYWORD_ONLY, default=_CHECK, annotation=bool),
        *(_option(name) for name in SETTINGS),
    ]
)
