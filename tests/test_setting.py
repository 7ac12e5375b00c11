"""The declarations behind every setting: kinds of value, and what a declaration derives."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from mtlschat.setting import (
    ConfigError,
    FilePath,
    Integer,
    ListOf,
    Nullable,
    Text,
    envvar,
    flag,
    public_settings,
    setting,
    settle,
)


@dataclass(frozen=True, slots=True)
class Example:
    operators: tuple[str, ...] = setting((), ListOf(Text()), "Who may /kick.")
    history: Path | None = setting(None, Nullable(FilePath()), "History file; off: none.")
    port: int = setting(1, Integer(min=0, max=9), "A port.", unit="port")
    hidden: int = setting(3, Integer(min=0), "Set by code only.", public=False)

    def __post_init__(self) -> None:
        settle(self)


def test_one_declaration_gives_flag_variable_and_metavar() -> None:
    declared = public_settings(Example)
    assert list(declared) == ["operators", "history", "port"]
    assert (flag("max_line"), envvar("max_line")) == ("--max-line", "MTLSCHAT_MAX_LINE")
    assert declared["port"].metavar == "PORT"
    assert declared["operators"].metavar == "TEXT,..."
    assert declared["history"].metavar == "FILE|off"
    assert [s.default_text for s in declared.values()] == ["none", "off", "1"]


def test_lists_and_optional_values_from_strings_and_toml() -> None:
    operators = ListOf(Text())
    assert operators.parse("alice, bob,") == ("alice", "bob")  # a flag or variable
    assert operators.parse(["alice"]) == ("alice",)  # a TOML array
    assert operators.parse("") == ()
    with pytest.raises(ValueError, match="expected a list"):
        operators.parse(3)
    history = Nullable(FilePath())
    assert history.parse("off") is None and history.parse(False) is None
    assert history.parse("~/h.db") == Path("~/h.db").expanduser()


def test_construction_parses_and_checks_every_declared_field() -> None:
    example = Example(port="7", operators=["alice"], history="off")  # type: ignore[arg-type]
    assert (example.port, example.operators, example.history) == (7, ("alice",), None)
    with pytest.raises(ConfigError, match="bad value 10 for port: must be 0-9"):
        Example(port=10)
    with pytest.raises(ConfigError, match="for hidden: must be at least 0"):
        Example(hidden=-1)
