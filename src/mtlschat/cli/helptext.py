"""How every command's help reads, applied once to the whole command tree (:func:`polish`).

typer shows a Python type next to each option (``--force <bool>``, ``NAME <str>``) and keeps the
line breaks of a docstring's later paragraphs. Here: ``-h`` is ``--help`` everywhere, a flag shows
no value, an option shows its metavar (``--days DAYS``), an argument shows its name only, and
prose paragraphs are re-flowed so the terminal wraps them at words. A paragraph whose lines are
indented (the Examples) keeps its lines, each shown as ``$ command``.
"""

from __future__ import annotations

import inspect
from typing import Any

import typer
from rich.markup import escape

HELP_NAMES = ["-h", "--help"]


def reflow(text: str | None) -> str | None:
    """``text`` with each prose paragraph on one line; indented paragraphs (examples) kept."""
    if not text:
        return text
    paragraphs = inspect.cleandoc(text).split("\n\n")
    out = []
    for paragraph in paragraphs:
        lines = paragraph.splitlines()
        if len(lines) > 1 and all(line.startswith(" ") for line in lines[1:]):
            # "Examples:" and its indented lines, each shown as a shell command (as step does)
            out.append("\n".join([lines[0], *(f"$ {line.strip()}" for line in lines[1:])]))
        else:
            out.append(" ".join(line.strip() for line in lines))
    return "\n\n".join(out)


def _no_type(ctx: Any) -> None:
    return None


def _name_value(option: Any) -> None:
    """Give an option that has no metavar one: FILE or DIR for a path, else its flag's name
    (``--days DAYS``); a choice shows its values, or names them in the help if they are many."""
    flag = max(option.opts, key=len)
    descriptor = getattr(option, "type_descriptor", None)
    choices = [str(getattr(c, "value", c)) for c in getattr(descriptor, "choices", None) or ()]
    if choices and len("|".join(choices)) <= 20:
        option.metavar = "|".join(choices)
        return
    if choices:
        option.help = f"{option.help or ''} One of: {', '.join(choices)}.".strip()
    if getattr(descriptor, "is_path", False):
        option.metavar = "DIR" if flag == "--pki" else "FILE"
    else:
        option.metavar = flag.lstrip("-").upper()


def polish(command: Any) -> None:
    """Apply this module's rules to ``command`` (a click command from typer) and its children."""
    command.help = escape(reflow(command.help) or "")
    ctx = typer.Context(command, help_option_names=HELP_NAMES)
    help_option = command.get_help_option(ctx)  # made (and kept) now, so it can be adjusted
    if help_option is not None:
        help_option.help = "Show this help and exit."
    for param in command.params + ([help_option] if help_option is not None else []):
        if getattr(param, "help", None):
            param.help = escape(param.help)  # help is text: "[default: x]", "[server]" stay
        if param.param_type_name == "argument":
            param.display_type_rich = _no_type  # the name (NAME, CSR) says it; not "<str>"
        elif param.is_flag and param.metavar is None:
            param.metavar = ""  # a flag takes no value: not "<bool>"
        elif param.metavar is None:
            _name_value(param)
    for child in getattr(command, "commands", {}).values():
        polish(child)
