"""One declaration per setting: what a setting is, and the kinds of value it can hold.

A setting is a dataclass field declared with :func:`setting`: its name is the field's name, and
everything else (type, default, range, help, unit) is in that one call. From it are derived the
command-line flag (``--max-line``), the environment variable (``MTLSCHAT_MAX_LINE``), the key in
a TOML file (``max-line`` or ``max_line``), the validation of every value, and the defaults shown
in ``--help`` and in the README. The room (``mtlschat.chat``) and the server (``mtlschat.net``)
both declare theirs here; this module imports neither.

    @dataclass(frozen=True, slots=True)
    class RoomSettings:
        burst: int = setting(20, Integer(min=1), "Lines a user may send at once.", unit="lines")

        def __post_init__(self) -> None:
            settle(self)   # parse and check every declared field
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

T = TypeVar("T")

ENV_PREFIX = "MTLSCHAT_"
_KEY = "mtlschat.setting"  # where a field's Setting is kept in its dataclass metadata


class ConfigError(ValueError):
    """A setting's value, a configuration file or a file a setting names is unusable; the message
    is one line for the user."""


class Kind(Generic[T]):
    """How the values of a setting are read (from a flag or variable, a string, or from TOML, a
    typed value), checked and shown. :meth:`parse` raises ``ValueError`` with a short reason."""

    @property
    def metavar(self) -> str:
        """What a value is called in ``--help``."""
        return "VALUE"

    def parse(self, raw: object) -> T:
        """The value ``raw`` stands for; ``ValueError(reason)`` if it is not acceptable."""
        raise NotImplementedError

    def show(self, value: T) -> str:
        """``value`` as a user would type it."""
        return str(value)


def _note(text: str) -> str:
    return f" ({text})" if text else ""


@dataclass(frozen=True)
class Integer(Kind[int]):
    """A whole number in ``[min, max]``; ``note`` explains a special value (``0 = always``)."""

    min: int | None = None
    max: int | None = None
    note: str = ""

    @property
    def metavar(self) -> str:
        return "N"

    def parse(self, raw: object) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int | str):
            raise ValueError("expected an integer")
        try:
            value = int(raw)
        except ValueError:
            raise ValueError("expected an integer") from None
        if self.max is not None and self.min is not None:
            if not self.min <= value <= self.max:
                raise ValueError(f"must be {self.min}-{self.max}{_note(self.note)}")
        elif self.min is not None and value < self.min:
            raise ValueError(f"must be at least {self.min}{_note(self.note)}")
        return value


@dataclass(frozen=True)
class Number(Kind[float]):
    """A finite number, positive (``positive=True``) or at least 0."""

    positive: bool = True
    note: str = ""

    @property
    def metavar(self) -> str:
        return "NUMBER"

    def parse(self, raw: object) -> float:
        if isinstance(raw, bool) or not isinstance(raw, int | float | str):
            raise ValueError("expected a number")
        try:
            value = float(raw)
        except ValueError:
            raise ValueError("expected a number") from None
        if self.positive and not 0 < value < math.inf:  # (NaN fails both comparisons)
            raise ValueError(f"must be positive and finite{_note(self.note)}")
        if not self.positive and not 0 <= value < math.inf:
            raise ValueError(f"must be >= 0 and finite{_note(self.note)}")
        return value

    def show(self, value: float) -> str:
        return f"{value:g}"


@dataclass(frozen=True)
class Text(Kind[str]):
    """Any string."""

    @property
    def metavar(self) -> str:
        return "TEXT"

    def parse(self, raw: object) -> str:
        if not isinstance(raw, str):
            raise ValueError("expected a string")
        return raw


@dataclass(frozen=True)
class Switch(Kind[bool]):
    """On or off: ``on``/``off`` (also true/false, yes/no, 1/0), or a TOML boolean."""

    @property
    def metavar(self) -> str:
        return "on/off"

    def parse(self, raw: object) -> bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in _SWITCH:
            return _SWITCH[raw.lower()]
        raise ValueError("use on or off")

    def show(self, value: bool) -> str:
        return "on" if value else "off"


_SWITCH = {"on": True, "true": True, "yes": True, "1": True}
_SWITCH |= {"off": False, "false": False, "no": False, "0": False}


@dataclass(frozen=True)
class Choice(Kind[str]):
    """One of ``choices``, case-insensitive, kept in upper case (log levels)."""

    choices: tuple[str, ...]

    @property
    def metavar(self) -> str:
        return "CHOICE"

    def parse(self, raw: object) -> str:
        if isinstance(raw, str) and raw.upper() in self.choices:
            return raw.upper()
        raise ValueError("use " + ", ".join(self.choices))


@dataclass(frozen=True)
class FilePath(Kind[Path]):
    """A file or directory path (``~`` expanded); whether it exists is checked by its user."""

    called: str = "FILE"  # or DIR

    @property
    def metavar(self) -> str:
        return self.called

    def parse(self, raw: object) -> Path:
        if not isinstance(raw, str | Path) or str(raw) == "":
            raise ValueError("expected a path")
        return Path(raw).expanduser()


@dataclass(frozen=True)
class Nullable(Kind[T | None], Generic[T]):
    """A value of ``kind`` or none: ``None`` as a default, one of ``off`` (or TOML ``false``)
    typed by a user (``--history off``). ``off=()`` for a value that can only be left out."""

    kind: Kind[T]
    off: tuple[str, ...] = ("off",)

    @property
    def metavar(self) -> str:
        return self.kind.metavar + ("|" + "|".join(self.off) if self.off else "")

    def parse(self, raw: object) -> T | None:
        if raw is None or (self.off and raw is False):
            return None
        if isinstance(raw, str) and raw.lower() in self.off:
            return None
        return self.kind.parse(raw)

    def show(self, value: T | None) -> str:
        return (self.off[0] if self.off else "none") if value is None else self.kind.show(value)


@dataclass(frozen=True)
class ListOf(Kind[tuple[T, ...]], Generic[T]):
    """Several values of ``kind``: a TOML array, or comma-separated in a flag or variable
    (``--operators alice,bob``). An empty string is the empty list."""

    kind: Kind[T]

    @property
    def metavar(self) -> str:
        return f"{self.kind.metavar},..."

    def parse(self, raw: object) -> tuple[T, ...]:
        if isinstance(raw, str) and raw.strip().lower() == "none":
            items: Sequence[object] = []  # what show() writes for the empty list
        elif isinstance(raw, str):
            items = [part.strip() for part in raw.split(",") if part.strip()]
        elif isinstance(raw, list | tuple):
            items = raw
        else:
            raise ValueError("expected a list")
        return tuple(self.kind.parse(item) for item in items)

    def show(self, value: tuple[T, ...]) -> str:
        return ",".join(self.kind.show(v) for v in value) if value else "none"


@dataclass(frozen=True)
class Setting(Generic[T]):
    """Everything about one setting but its name (the dataclass field's name)."""

    kind: Kind[T]
    default: T
    help: str
    unit: str = ""  # "seconds", "bytes": the flag's metavar, upper-cased
    shown_default: str = ""  # when the default is not a value: "PKI/server.pem"
    public: bool = True  # False: a field the code may set, but no flag, variable or key

    @property
    def metavar(self) -> str:
        """What the flag's value is called in ``--help`` (``SECONDS``, ``FILE``)."""
        return self.unit.upper() if self.unit else self.kind.metavar

    @property
    def default_text(self) -> str:
        """The default as shown in ``--help`` and the README."""
        return self.shown_default or self.kind.show(self.default)


def setting(
    default: T,
    kind: Kind[T],
    help: str,
    *,
    unit: str = "",
    shown_default: str = "",
    public: bool = True,
) -> T:
    """Declare a dataclass field as a setting (see the module docstring)."""
    declared = Setting(kind, default, help, unit, shown_default, public)
    field: T = dataclasses.field(default=default, metadata={_KEY: declared})
    return field


def settings_of(cls: type[Any]) -> dict[str, Setting[Any]]:
    """The settings a dataclass declares, by field name: its own first, then its bases'."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    found: dict[str, Setting[Any]] = {}
    for klass in cls.__mro__:
        for name in vars(klass).get("__annotations__", {}):
            declared = fields[name].metadata.get(_KEY) if name in fields else None
            if isinstance(declared, Setting) and name not in found:
                found[name] = declared
    return found


def public_settings(cls: type[Any]) -> dict[str, Setting[Any]]:
    """The settings of ``cls`` a user can set (flag, environment variable, file key)."""
    return {name: s for name, s in settings_of(cls).items() if s.public}


def flag(name: str) -> str:
    """The command-line flag of setting ``name``: ``--max-line``."""
    return "--" + name.replace("_", "-")


def envvar(name: str) -> str:
    """The environment variable of setting ``name``: ``MTLSCHAT_MAX_LINE``."""
    return ENV_PREFIX + name.upper()


def parse_value(name: str, declared: Setting[T], raw: object, where: str) -> T:
    """``raw`` (from ``where``: a flag, a variable, a file) as setting ``name``'s value.

    Raises :class:`ConfigError`: ``bad value 'abc' for --port: expected an integer``.
    """
    try:
        return declared.kind.parse(raw)
    except ValueError as exc:
        shown = str(raw).lower() if isinstance(raw, bool) else repr(raw)  # TOML's true, not True
        raise ConfigError(f"bad value {shown} for {where}: {exc}") from None


def settle(obj: Any) -> None:
    """Parse and check every declared field of the (frozen) dataclass ``obj`` in place, so a
    ``ValueError`` names the bad field and every value has its declared type (``"5"`` -> 5)."""
    for name, declared in settings_of(type(obj)).items():
        value = parse_value(name, declared, getattr(obj, name), name)
        object.__setattr__(obj, name, value)  # frozen: __post_init__ is the one place to set it
