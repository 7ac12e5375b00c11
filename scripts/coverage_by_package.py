"""Print line coverage per mtlschat package from a ``coverage json`` report.

Usage: python scripts/coverage_by_package.py coverage.json
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path, PurePath


def package_of(path: str) -> str:
    """``src/mtlschat/net/server.py`` -> ``net``; a top-level module -> ``(top)``."""
    parts = PurePath(path).parts
    index = len(parts) - 1 - parts[::-1].index("mtlschat")
    rest = parts[index + 1 :]
    return rest[0] if len(rest) > 1 else "(top)"


def main(report_path: str) -> None:
    """Sum statements and covered lines per package; print a table and the total."""
    files = json.loads(Path(report_path).read_text(encoding="utf-8"))["files"]
    statements: dict[str, int] = defaultdict(int)
    covered: dict[str, int] = defaultdict(int)
    for path, data in files.items():
        summary = data["summary"]
        package = package_of(path)
        statements[package] += summary["num_statements"]
        covered[package] += summary["covered_lines"]
    print(f"{'package':<10} {'stmts':>6} {'miss':>6} {'cover':>7}")
    for package in sorted(statements):
        total, hit = statements[package], covered[package]
        print(f"{package:<10} {total:>6} {total - hit:>6} {100 * hit / total:>6.1f}%")
    total, hit = sum(statements.values()), sum(covered.values())
    print(f"{'TOTAL':<10} {total:>6} {total - hit:>6} {100 * hit / total:>6.1f}%")


if __name__ == "__main__":
    main(sys.argv[1])
