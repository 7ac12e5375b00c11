"""Old server vs new server, alternating run by run, with the same bench client: medians, ratios.

``mtlschat bench --compare`` puts mtlschat against the asyncio reference; this puts two versions
(or two settings) of mtlschat against each other, which is how a change to the hot path is
measured on a shared, noisy machine: each run starts a fresh server from one source tree (the
other side's tree next, the order swapped every repeat), runs one ``mtlschat bench`` against
it (the client of *this* tree for both), and the report gives each side's median and the median
of the per-pair ratios (new / old) of every figure.

    python bench/ab.py --base main --repeat 7 -- -w burst -n 200 -m 5000 --write-size 1024
    python bench/ab.py --base 5c5e7ba --new-args "--send-buffer 262144" -- -w paced -n 200

``--base`` and ``--new`` are git revisions (extracted with ``git archive`` into a temporary
directory) or source-tree directories; ``--new`` defaults to this tree. Arguments after ``--``
go to ``mtlschat bench``; ``--base-args``/``--new-args`` to the servers (as one string each).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mtlschat.bench.pki import BenchPKI, prepare_pki
from mtlschat.bench.spawn import spawn_server

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

FIGURES: dict[str, Callable[[dict[str, Any]], float | None]] = {
    "server CPU per delivery (us)": lambda r: r["server"]["cpu_per_delivery_us"] or None,
    "server CPU (s)": lambda r: r["server"]["cpu_s"] or None,
    "server CPU per handshake (ms)": lambda r: r["server"]["cpu_per_handshake_ms"] or None,
    "deliveries/s": lambda r: r["deliveries_per_s"] or None,
    "latency p50 (ms)": lambda r: r["latency_ms"]["p50"] or None,
    "latency p99 (ms)": lambda r: r["latency_ms"]["p99"] or None,
    "lost": lambda r: float(r["lost"]),
}


def source_tree(spec: str, dest: Path) -> Path:
    """A directory holding ``src/mtlschat`` for ``spec`` (a directory, or a git revision
    extracted into ``dest``)."""
    path = Path(spec)
    if (path / "src" / "mtlschat").is_dir():
        return path.resolve()
    dest.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", spec, "src"],
        check=True,
        capture_output=True,
    ).stdout
    tar_path = dest / "src.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(dest, filter="data")
    return dest


def one_run(tree: Path, pki: BenchPKI, extra: list[str], bench: list[str]) -> dict[str, Any]:
    """One fresh server from ``tree`` (started as ``--spawn`` starts it), one bench run against
    it; the bench's JSON run record."""
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    server = spawn_server("mtlschat", pki, extra=extra, env=env)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "mtlschat", "bench", f"{server.host}:{server.port}",
             "--pki", str(pki.dir), "--server-pid", str(server.pid), "--json", *bench],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    finally:
        server.stop()
    if not out.stdout.strip():
        raise SystemExit(f"bench failed: {out.stderr.strip()[-500:]}")
    run: dict[str, Any] = json.loads(out.stdout)["runs"][0]
    return run


def main() -> None:
    """Run the pairs, print every run and the medians."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="git revision or source tree (the 'old')")
    ap.add_argument("--new", default=str(ROOT), help="git revision or source tree (this one)")
    ap.add_argument("--base-args", default="", help="extra server arguments for the old side")
    ap.add_argument("--new-args", default="", help="extra server arguments for the new side")
    ap.add_argument("--repeat", type=int, default=5, help="pairs of runs")
    ap.add_argument("--pki", type=Path, help="bench PKI to keep and reuse (default: temporary)")
    ap.add_argument("--json", type=Path, help="write every run record here")
    ap.add_argument("bench", nargs="*", help="mtlschat bench arguments (after --)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mtlschat-ab-") as tmp_name:
        tmp = Path(tmp_name)
        # The CA and the server's certificate; the bench issues its users' certificates.
        pki = prepare_pki(args.pki or tmp / "pki", 0, 0)
        sides = {
            "old": (source_tree(args.base, tmp / "old"), shlex.split(args.base_args)),
            "new": (source_tree(args.new, tmp / "new"), shlex.split(args.new_args)),
        }
        runs: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
        for i in range(args.repeat):
            order = ["old", "new"] if i % 2 == 0 else ["new", "old"]
            for side in order:
                tree, extra = sides[side]
                run = one_run(tree, pki, extra, args.bench)
                runs[side].append(run)
                cpu = FIGURES["server CPU per delivery (us)"](run)
                load = os.getloadavg()[0]
                print(
                    f"pair {i + 1} {side}: CPU/delivery {cpu} us, lost {run['lost']}, "
                    f"{run['deliveries_per_s']:,.0f}/s, load {load:.1f}",
                    flush=True,
                )
                time.sleep(0.5)
        if args.json:
            args.json.write_text(json.dumps(runs, indent=1))
    print(f"\n{args.repeat} pairs, medians (old = {args.base}, new = {args.new})")
    for label, get in FIGURES.items():
        old = [get(r) for r in runs["old"]]
        new = [get(r) for r in runs["new"]]
        if not any(v is not None for v in old + new):
            continue
        mo = statistics.median(v for v in old if v is not None) if any(old) else 0.0
        mn = statistics.median(v for v in new if v is not None) if any(new) else 0.0
        ratios = [n / o for o, n in zip(old, new, strict=True) if o and n is not None]
        ratio = f"  pairwise new/old median {statistics.median(ratios):.3f}" if ratios else ""
        print(f"  {label:32} old {mo:,.4g}  new {mn:,.4g}{ratio}")


if __name__ == "__main__":
    main()
