"""The package dependency rules, read from the source (lazy and TYPE_CHECKING imports too).

The room is sans-I/O: ``mtlschat.chat`` never imports ``mtlschat.net`` (the event loop uses the
room, never the reverse), and no two packages depend on each other in a cycle.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

import mtlschat

SRC = Path(mtlschat.__file__).parent


def package_of(module: str) -> str | None:
    """``mtlschat.chat.room`` -> ``chat``; ``mtlschat`` -> ``mtlschat``; None outside mtlschat."""
    parts = module.split(".")
    if parts[0] != "mtlschat":
        return None
    return parts[1] if len(parts) > 1 else "mtlschat"


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute names (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module_name(path).split(".")
    if path.name != "__init__.py":
        here.pop()  # a module's relative imports start from its package
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                prefix = here[: len(here) - (node.level - 1)]
                base = ".".join([*prefix, base] if base else prefix)
            found.add(base)
            # `from mtlschat import chat` imports the package mtlschat.chat
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def package_graph() -> dict[str, set[str]]:
    """Package -> the other mtlschat packages its modules import."""
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        pkg = package_of(module_name(path))
        assert pkg is not None
        deps = graph.setdefault(pkg, set())
        for name in imports_of(path):
            target = package_of(name)
            if target is None or target == pkg:
                continue
            if not (SRC / target).is_dir() and not (SRC / f"{target}.py").is_file():
                target = "mtlschat"  # `from mtlschat import __version__`: a name, not a module
            deps.add(target)
    return graph


def test_the_graph_is_read_from_the_source() -> None:
    graph = package_graph()
    # Known arrows: if these vanish, the parser broke and the rules below prove nothing.
    assert "chat" in graph["net"]
    assert "ca" in graph["chat"]
    assert {"net", "ca", "client"} <= graph["cli"]  # lazy imports inside functions count too


def test_chat_never_imports_net() -> None:
    offenders = sorted(
        f"{path.relative_to(SRC.parent)} imports {name}"
        for path in (SRC / "chat").rglob("*.py")
        for name in imports_of(path)
        if package_of(name) == "net"
    )
    assert not offenders, "the room is sans-I/O:\n" + "\n".join(offenders)


def test_no_import_cycle_between_packages() -> None:
    graph = package_graph()
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle between packages: {' -> '.join(exc.args[1])}")
    assert order.index("chat") < order.index("net")


def test_cluster_never_imports_net() -> None:
    """The loop (net) drives the Redis link and the engine (cluster), never the reverse."""
    offenders = sorted(
        f"{path.relative_to(SRC.parent)} imports {name}"
        for path in (SRC / "cluster").rglob("*.py")
        for name in imports_of(path)
        if package_of(name) in ("net", "client", "cli")
    )
    assert not offenders, "cluster is driven by the loop:\n" + "\n".join(offenders)
