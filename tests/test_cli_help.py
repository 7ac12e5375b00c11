"""Every command's help, read as step's: -h, an Examples section, no Python types, no word cut
in two. Each help is the real ``mtlschat ... -h`` (all run at once, as real processes)."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import pytest
import typer

from mtlschat.cli.main import app

try:
    from conftest import clean_env
except ImportError:  # pragma: no cover - run from another directory
    from tests.conftest import clean_env  # type: ignore[no-redef]


def command_paths(command: Any = None, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group of ``mtlschat``, as argument lists (``("ca", "issue")``)."""
    command = command or typer.main.get_command(app)
    found = [path]
    for name, child in sorted(getattr(command, "commands", {}).items()):
        found += command_paths(child, (*path, name))
    return found


@pytest.fixture(scope="module")
def helps() -> dict[tuple[str, ...], subprocess.CompletedProcess[str]]:
    env = clean_env({"COLUMNS": "80"})
    procs = {
        path: subprocess.Popen(
            [sys.executable, "-m", "mtlschat", *path, "-h"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for path in command_paths()
    }
    results = {}
    for path, proc in procs.items():
        out, err = proc.communicate(timeout=60)
        results[path] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return results


PYTHON_TYPE = re.compile(r"<(bool|str|int|float|path|list\[\w+\]|[\w-]+(\|[\w-]+)+)>")


def test_dash_h_is_help_and_shows_no_python_types(
    helps: dict[tuple[str, ...], subprocess.CompletedProcess[str]],
) -> None:
    assert len(helps) > 10
    for path, r in helps.items():
        assert r.returncode == 0 and r.stderr == "", path
        assert "Usage: mtlschat" in r.stdout, path
        assert not PYTHON_TYPE.search(r.stdout), (path, PYTHON_TYPE.search(r.stdout))


def test_defaults_are_shown_one_way(
    helps: dict[tuple[str, ...], subprocess.CompletedProcess[str]],
) -> None:
    """As typer shows a value's default, "[default: X]", also for defaults that are a rule."""
    for path, r in helps.items():
        text = " ".join(r.stdout.replace("│", " ").split())
        assert not re.search(r"\(default[: ]", text), (path, text)


def test_every_command_has_examples(
    helps: dict[tuple[str, ...], subprocess.CompletedProcess[str]],
) -> None:
    missing = [" ".join(p) for p, r in helps.items() if "Examples:" not in r.stdout]
    assert missing == []
    for path, r in helps.items():  # each example on its own line, indented, ready to copy
        after = r.stdout.split("Examples:")[1].splitlines()[1]
        assert re.match(r" \$ (mtlschat|MTLSCHAT_|echo) ", after), path


def _words(text: str) -> set[str]:
    return {w.rstrip(".:,") for w in re.findall(r"[\w.@:/#+-]{4,}", text)}


def test_no_word_is_cut_by_wrapping(
    helps: dict[tuple[str, ...], subprocess.CompletedProcess[str]],
) -> None:
    """Each word of a command's own help text and its options' help appears whole."""
    root = typer.main.get_command(app)
    for path, r in helps.items():
        command: Any = root
        for name in path:
            command = command.commands[name]
        shown = _words(r.stdout.replace("│", " "))
        texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
        choices = [getattr(p, "type_descriptor", None) for p in command.params]
        for descriptor in choices:
            texts += [str(getattr(c, "value", c)) for c in getattr(descriptor, "choices", ()) or ()]
        wanted = set().union(*(_words(t) for t in texts)) - {"Examples"}
        assert wanted - shown == set(), path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["server", "--bogus"], "No such option: --bogus"),
        (["ca", "issue"], "Missing argument 'NAME | --server HOST...'"),
        (["ca", "revoke", "--reason", "bored", "bob"], "Invalid value for '--reason'"),
        (["nosuch"], "No such command 'nosuch'"),
    ],
)
def test_usage_errors_are_one_line_exit_2(args: list[str], message: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "mtlschat", *args],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 2
    assert r.stderr.startswith(f"mtlschat: error: {message}") and r.stderr.count("\n") == 1
    assert f"(see 'mtlschat {args[0]}" in r.stderr or "(see 'mtlschat --help')" in r.stderr
