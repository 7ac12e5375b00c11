"""History end to end: real server processes, real history files, real TLS."""

from __future__ import annotations

import resource
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtlschat.history.sqlite import SQLiteStore
from mtlschat.history.store import Record

from .conftest import ChatClient, Closed, connect_as

if TYPE_CHECKING:
    from conftest import CLIRunner, ServerProcess, TestPKI

Spawn = Callable[..., "ServerProcess"]


def welcome(client: ChatClient) -> dict[str, Any]:
    return client.wait_for("welcome")


def stored(path: Path) -> list[tuple[int, str]]:
    """(offset, text) of every line in the file, read as `history export` does (no lock)."""
    store = SQLiteStore.open_reader(path)
    try:
        return [(r.offset, r.text) for r in store.export("main")]
    finally:
        store.close()


def test_late_joiner_history_and_search_in_both_modes(
    fresh_pki: TestPKI, spawn_server: Spawn, tmp_path: Path
) -> None:
    server = spawn_server(fresh_pki.dir, "--rate", "0", "--history", str(tmp_path / "h.db"))
    alice = connect_as(server.port, fresh_pki, "alice")
    welcome(alice)
    for i in range(1, 121):
        alice.send(f"deploy {i}" if i % 40 == 0 else f"line {i}")
    alice.send("/who")
    alice.wait_for("who")  # every line before it has been handled (and stored)

    bob = connect_as(server.port, fresh_pki, "bob")
    assert welcome(bob)["resume"]["offset"] == 120
    assert bob.read() == {"type": "history", "source": "join", "count": 20}
    lines = [bob.read() for _ in range(20)]
    assert [(m["id"], m["history"]) for m in lines] == [(i, "join") for i in range(101, 121)]
    bob.send("/history 100")
    assert bob.wait_for("history")["count"] == 100
    assert [bob.read()["id"] for _ in range(100)] == list(range(21, 121))
    bob.send("/search DEPLOY")
    assert bob.wait_for("history", source="search")["count"] == 3
    assert [bob.read()["text"] for _ in range(3)] == ["deploy 40", "deploy 80", "deploy 120"]

    carol = connect_as(server.port, fresh_pki, "carol", None)  # as openssl s_client would
    assert carol.read_line().startswith(b"* welcome carol.")
    assert carol.read_line() == b"* history: the last 20 lines (/history N for more)"
    first = carol.read_line()
    assert first.endswith(b"<alice> line 101") and first[:1] == b"[" and first[5:6] == b"-"
    for _ in range(19):
        carol.read_line()
    assert carol.read_line() == b"* end of history"
    carol.send("/search deploy 8")
    assert carol.read_line() == b"* search: the last line matching deploy 8"
    assert carol.read_line().endswith(b"<alice> deploy 80")
    for c in (alice, bob, carol):
        c.close()


def test_kill_9_mid_burst_then_restart_loses_nothing_anyone_saw(
    fresh_pki: TestPKI, spawn_server: Spawn, tmp_path: Path
) -> None:
    path = tmp_path / "h.db"
    server = spawn_server(fresh_pki.dir, "--rate", "0", "--history", str(path))
    receivers = [connect_as(server.port, fresh_pki, name) for name in ("bob", "carol")]
    epoch = {welcome(r)["resume"]["epoch"] for r in receivers}
    alice = connect_as(server.port, fresh_pki, "alice")
    welcome(alice)

    def burst() -> None:
        try:
            for i in range(1, 5001):
                alice.send(f"burst {i}")
        except OSError:
            pass  # the server is gone

    sender = threading.Thread(target=burst, daemon=True)
    sender.start()
    got: dict[str, list[tuple[int, str]]] = {"bob": [], "carol": []}
    # Kill once bob is well into the burst; then read whatever each receiver still gets.
    while len(got["bob"]) < 500:
        m = receivers[0].read()
        if m["type"] == "msg":
            got["bob"].append((m["id"], m["text"]))
    server.proc.kill()  # SIGKILL: no goodbye, no final commit
    server.proc.wait()
    sender.join(15)
    for r, name in zip(receivers, ("bob", "carol"), strict=True):
        try:
            while True:
                m = r.read()
                if m["type"] == "msg":
                    got[name].append((m["id"], m["text"]))
        except (Closed, TimeoutError, ValueError):
            pass

    rows = stored(path)
    offsets = [off for off, _ in rows]
    assert offsets == list(range(1, len(rows) + 1))  # dense: no gap, no duplicate
    for name, seen in got.items():
        assert seen, name
        assert set(seen) <= set(rows), f"{name} saw lines the history does not have"

    # The server stores a round before sending it, and bob may have read far behind the store
    # (under load, thousands of lines): one resume must be allowed to send them all.
    again = spawn_server(
        fresh_pki.dir, "--rate", "0", "--history", str(path), "--history-max", "5000",
        port=server.port, log=server.log_path,
    )  # fmt: skip
    bob = connect_as(again.port, fresh_pki, "bob")
    w = welcome(bob)
    assert {w["resume"]["epoch"]} == epoch  # same store, same epoch
    assert w["resume"]["offset"] == len(rows)
    last_seen = got["bob"][-1][0]
    bob.send(f"/resume {w['resume']['epoch']} {last_seen}")
    recovered = []
    while (m := bob.read())["type"] != "resumed":
        if m.get("history") == "resume":
            recovered.append((m["id"], m["text"]))
    assert m["count"] == len(recovered) and m["offset"] == len(rows)
    assert got["bob"] + recovered == rows  # every line exactly once, in order
    alice = connect_as(again.port, fresh_pki, "alice")
    welcome(alice)
    alice.send("after the restart")
    assert bob.wait_for("msg")["id"] == len(rows) + 1  # offsets continue
    for c in (alice, bob, *receivers):
        c.close()


def test_a_second_server_on_the_same_history_is_refused(
    fresh_pki: TestPKI, spawn_server: Spawn, mtlschat_cli: CLIRunner, tmp_path: Path
) -> None:
    path = tmp_path / "h.db"
    server = spawn_server(fresh_pki.dir, "--rate", "0", "--history", str(path))
    r = mtlschat_cli("server", "--pki", fresh_pki.dir, "--port", "0", "--history", path)
    assert r.returncode == 1
    assert r.stderr == (
        f"mtlschat: error: history file {path} is in use by another mtlschat server"
        f" (pid {server.proc.pid}); one server per history file\n"
    )


def test_bad_history_files_are_refused_with_one_line_naming_them(
    fresh_pki: TestPKI, mtlschat_cli: CLIRunner, tmp_path: Path
) -> None:
    junk = tmp_path / "junk.db"
    junk.write_text("not a database\n" * 50)
    truncated = tmp_path / "truncated.db"
    store = SQLiteStore.open(truncated)

    for first in range(1, 2001, 100):
        store.append(
            "main", [Record(i, 1.0, "msg", "a", f"text {i}") for i in range(first, first + 100)]
        )
    store.close()
    with truncated.open("r+b") as f:
        f.truncate(truncated.stat().st_size // 2)
    cases = {
        junk: f"{junk} is not an mtlschat history file (not an SQLite database)",
        truncated: f"history file {truncated} is damaged",
        tmp_path / "missing" / "h.db": "does not exist",
    }
    for path, message in cases.items():
        r = mtlschat_cli("server", "--pki", fresh_pki.dir, "--port", "0", "--history", path)
        assert r.returncode == 1, r.stderr
        assert r.stderr.startswith(f"mtlschat: error: {message}") or message in r.stderr
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert junk.read_text().startswith("not a database")  # untouched


def test_a_full_disk_degrades_history_but_not_the_room_and_it_recovers(
    fresh_pki: TestPKI, spawn_server: Spawn, tmp_path: Path
) -> None:
    path = tmp_path / "h.db"
    server = spawn_server(fresh_pki.dir, "--rate", "0", "--history", str(path))
    alice, bob = (
        connect_as(server.port, fresh_pki, "alice"),
        connect_as(server.port, fresh_pki, "bob"),
    )
    welcome(alice)
    welcome(bob)
    alice.send("before")
    bob.wait_for("msg", text="before")
    # The kernel now refuses to let the server's files grow (EFBIG, as a full disk would).
    wal = Path(str(path) + "-wal")
    limit = wal.stat().st_size
    unlimited = resource.RLIM_INFINITY
    resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE, (limit, unlimited))  # (soft)
    n = 0
    while "history degraded" not in server.log():
        n += 1
        alice.send(f"during {n}")
        bob.wait_for("msg", text=f"during {n}")  # live all the same
        assert n < 2000, server.log()
    bob.wait_for("info", text="history: lines are not being saved right now; chat goes on")
    carol = connect_as(server.port, fresh_pki, "carol")  # joining meanwhile: told too
    carol.wait_for("info", text="history: lines are not being saved right now; chat goes on")
    carol.close()
    resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE, (unlimited, unlimited))
    while "history recovered" not in server.log():
        n += 1
        alice.send(f"during {n}")
        bob.wait_for("msg", text=f"during {n}")
        assert n < 100_000, server.log()
    bob.wait_for("info", text="history: saving again")
    alice.send("/who")
    alice.wait_for("who")
    assert server.log().count("history degraded") == 1  # logged once
    texts = [text for _, text in stored(path)]
    assert texts == ["before", *(f"during {i}" for i in range(1, n + 1))]  # nothing lost
    alice.close()
    bob.close()


def test_deleting_the_history_gives_a_new_epoch(
    fresh_pki: TestPKI, spawn_server: Spawn, tmp_path: Path
) -> None:
    path = tmp_path / "h.db"
    server = spawn_server(fresh_pki.dir, "--rate", "0", "--history", str(path))
    alice = connect_as(server.port, fresh_pki, "alice")
    old = welcome(alice)["resume"]
    alice.close()
    assert server.stop() == 0
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    # The server stores a round before sending it, and bob may have read far behind the store
    # (under load, thousands of lines): one resume must be allowed to send them all.
    again = spawn_server(
        fresh_pki.dir, "--rate", "0", "--history", str(path), "--history-max", "5000",
        port=server.port, log=server.log_path,
    )  # fmt: skip
    alice = connect_as(again.port, fresh_pki, "alice")
    new = welcome(alice)["resume"]
    assert new["epoch"] != old["epoch"] and new["offset"] == 0
    alice.send(f"/resume {old['epoch']} {old['offset']}")
    assert alice.wait_for("resumed")["reset"] is True
    alice.close()
