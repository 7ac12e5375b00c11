"""One room over several real server processes and a real redis-server (issue 13).

Each test checks several things, to keep the suite cheap: every end-to-end test here starts
real processes.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from tests.net.conftest import ChatClient, client_context

if TYPE_CHECKING:
    from conftest import ServerProcess, ServerSpawner, TestPKI

DEADLINE = 15.0

Spawn = Callable[..., "ServerProcess"]


@pytest.fixture
def spawn_node(
    tmp_path_factory: pytest.TempPathFactory,
    server_process_pool: Callable[..., contextlib.AbstractContextManager[ServerSpawner]],
    redis_server: Any,
) -> Iterator[Spawn]:
    """``spawn_node(pki_dir, *flags)``: a server process on the test's Redis."""
    with server_process_pool(tmp_path_factory, deadline=DEADLINE) as spawn:

        def node(pki_dir: Path, *flags: str, redis_url: str = "", **kw: Any) -> ServerProcess:
            server = spawn(pki_dir, "--redis", redis_url or redis_server.url, *flags, **kw)
            server.wait_log(r"redis: epoch \w+")
            return server

        yield node


def join(server: ServerProcess, pki: TestPKI, name: str) -> ChatClient:
    client = ChatClient(server.port, client_context(pki.user(name), pki.ca_cert))
    client.wait_for("welcome", name=name)
    return client


def lines(client: ChatClient, count: int) -> list[tuple[int, str, str]]:
    """The next ``count`` room lines ``client`` receives: (id, from, text)."""
    out = []
    while len(out) < count:
        m = client.wait_for("msg")
        out.append((m["id"], m["from"], m["text"]))
    return out


def test_two_nodes_serve_one_room(fresh_pki: TestPKI, spawn_node: Spawn) -> None:
    a = spawn_node(fresh_pki.dir, "--operators", "alice", "--rate", "0")
    b = spawn_node(fresh_pki.dir, "--operators", "alice", "--rate", "0", "--metrics", "127.0.0.1:0")
    alice = join(a, fresh_pki, "alice")
    bob, carol = join(b, fresh_pki, "bob"), join(b, fresh_pki, "carol")
    alice.wait_for("join", name="carol")
    # One order: lines said at once on both nodes reach everyone in the same order.
    for i in range(20):
        alice.send(f"a{i}")
        bob.send(f"b{i}")
    seen_by_carol = lines(carol, 40)
    assert [m for m in seen_by_carol if m[1] == "alice"] == [
        m for m in lines(bob, 20) if m[1] == "alice"
    ]
    assert [m[0] for m in seen_by_carol] == list(range(1, 41))  # offsets dense, in order
    assert lines(alice, 20) == [m for m in seen_by_carol if m[1] == "bob"]
    # Presence is global; a DM reaches the recipient on the other node, echoed to the sender.
    bob.send("/who")
    assert bob.wait_for("who")["online"] == ["alice", "bob", "carol"]
    bob.send("/msg alice psst")
    assert alice.wait_for("dm")["text"] == "psst"
    assert bob.wait_for("dm")["to"] == "alice"
    # A kick on node A ends carol's session on node B; everyone hears it once.
    alice.send("/kick carol enough")
    assert any(m.get("type") == "bye" for m in carol.wait_closed())
    bob.wait_for("leave", name="carol")
    # History lives in Redis: a member joining node B later recovers lines said on node A.
    dave = ChatClient(b.port, client_context(fresh_pki.user("dave"), fresh_pki.ca_cert))
    welcome = dave.wait_for("welcome")
    assert welcome["resume"]["offset"] == 41
    dave.send(f"/resume {welcome['resume']['epoch']} 35")
    replayed = []
    while (m := dave.read())["type"] != "resumed":
        if m["type"] in ("msg", "dm") and m.get("history") == "resume":
            replayed.append(m["id"])
    assert replayed == [36, 37, 38, 39, 40]  # (the DM, 41, is not dave's to read)
    # Each node's metrics say whether it delivers through Redis, and what it relayed.
    where = re.search(r"metrics on (http://\S+/metrics)", b.log())
    assert where is not None
    with urllib.request.urlopen(where.group(1), timeout=DEADLINE) as page:
        metrics = page.read().decode()
    assert re.search(r'^mtlschat_redis_up\{node="[^"]+"\} 1\.0$', metrics, re.M)
    delivered = re.search(r"^mtlschat_redis_delivered_records_total\{.*\} (\S+)$", metrics, re.M)
    assert delivered is not None and float(delivered.group(1)) >= 41
    pushed = re.search(r"^mtlschat_redis_pushed_entries_total\{.*\} (\S+)$", metrics, re.M)
    reads = re.search(r"^mtlschat_redis_catch_up_reads_total\{.*\} (\S+)$", metrics, re.M)
    assert pushed is not None and float(pushed.group(1)) > 0  # (caught up: lines are pushed)
    assert reads is not None and float(reads.group(1)) >= 1  # (at least the one at connect)


def test_a_node_killed_its_members_leave_and_resume_elsewhere(
    fresh_pki: TestPKI, spawn_node: Spawn
) -> None:
    a = spawn_node(fresh_pki.dir, "--rate", "0")
    b = spawn_node(fresh_pki.dir, "--rate", "0")
    alice, bob = join(a, fresh_pki, "alice"), join(b, fresh_pki, "bob")
    alice.wait_for("join", name="bob")
    bob.send("before")
    mark = alice.wait_for("msg", text="before")["id"]
    epoch = alice.seen[0]["resume"]["epoch"]
    a.proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    bob.send("while alice was away")
    assert bob.wait_for("leave", name="alice", timeout=20)["reason"] == "node lost"
    assert time.monotonic() - killed < 15.0
    # alice comes back on node B and recovers exactly what she missed.
    alice = ChatClient(b.port, client_context(fresh_pki.user("alice"), fresh_pki.ca_cert))
    alice.wait_for("welcome")
    alice.send(f"/resume {epoch} {mark}")
    missed = []
    while (m := alice.read())["type"] != "resumed":
        if m["type"] == "msg" and m.get("history") == "resume":
            missed.append(m["text"])
        assert m["type"] != "gap"
    assert missed == ["while alice was away"]


def test_redis_faults_are_seen_and_heal(
    fresh_pki: TestPKI, spawn_node: Spawn, redis_server: Any
) -> None:
    a = spawn_node(fresh_pki.dir, "--rate", "0")
    b = spawn_node(fresh_pki.dir, "--rate", "0")
    alice, bob = join(a, fresh_pki, "alice"), join(b, fresh_pki, "bob")
    alice.wait_for("join", name="bob")
    # Redis stalls (SIGSTOP): local handshakes, /who and pings are not delayed by it.
    fresh_pki.user("carol")  # (issued now: the timing below is the node's alone)
    redis_server.pause()
    try:
        alice.send("said as it stalled")
        started = time.monotonic()
        carol = join(a, fresh_pki, "carol")
        carol.send("/who")
        carol.wait_for("who")
        carol.send("/help")
        carol.wait_for("info")
        assert time.monotonic() - started < 2.0  # (Redis answers nothing for 5 s and more)
        info = alice.wait_for("info", timeout=10)  # after ~3 s: degraded, and said so
        assert "cannot deliver" in info["text"]
        alice.send("refused while stalled")
        assert alice.wait_for("error")["code"] == "not_delivered"
    finally:
        redis_server.resume()
    alice.wait_for("info", text="the room is back: lines are delivered again")
    # The line said before the stall was detected arrives once; the refused one never.
    assert bob.wait_for("msg")["text"] == "said as it stalled"
    alice.send("after the stall")
    assert bob.wait_for("msg")["text"] == "after the stall"
    # Redis restarts empty: a new epoch; members are told; new sessions get the new epoch.
    old_epoch = alice.seen[0]["resume"]["epoch"]
    redis_server.restart()
    alice.wait_for("info", text="history was reset: earlier lines are gone (new epoch)")
    bob.wait_for("info", text="history was reset: earlier lines are gone (new epoch)")
    dave = join(b, fresh_pki, "dave")
    assert dave.seen[-1]["resume"]["epoch"] != old_epoch
    alice.send("in the new epoch")
    msg = bob.wait_for("msg")
    assert (msg["text"], msg["id"]) == ("in the new epoch", 1)
    # Redis gone: lines refused visibly, not lost silently; back: delivered again.
    redis_server.stop()
    alice.wait_for("info", timeout=10)
    alice.send("nobody hears this")
    assert alice.wait_for("error")["code"] == "not_delivered"
    redis_server.start()
    alice.wait_for("info", text="the room is back: lines are delivered again", timeout=10)
    alice.send("heard again")
    assert bob.wait_for("msg")["text"] == "heard again"
    texts = [m["text"] for m in bob.seen if m.get("type") == "msg"]
    assert len(texts) == len(set(texts))  # nothing twice


def test_redis_unreachable_at_startup(
    fresh_pki: TestPKI,
    server_process_pool: Callable[..., contextlib.AbstractContextManager[ServerSpawner]],
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: Any,
) -> None:
    redis_server.stop()
    with server_process_pool(tmp_path_factory, deadline=DEADLINE) as spawn:
        a = spawn(fresh_pki.dir, "--redis", redis_server.url)
        line = a.wait_log(r"redis link .*/redis: down")
        assert "retrying" in line and "127.0.0.1" in line
        assert "their lines are refused" in a.wait_log(r"redis: unreachable at startup")
        alice = join(a, fresh_pki, "alice")
        alice.send("too early")
        assert alice.wait_for("error")["code"] == "not_delivered"
        redis_server.start()
        alice.wait_for("info", text="the room is back: lines are delivered again", timeout=10)
        alice.send("/who")
        assert alice.wait_for("who")["online"] == ["alice"]


def test_bad_redis_settings_are_one_line_errors(
    fresh_pki: TestPKI, mtlschat_cli: Any, tmp_path: Path
) -> None:
    r = mtlschat_cli("server", "--pki", str(fresh_pki.dir), "--redis", "redis://u:secret@h/0")
    assert r.returncode != 0 and "secret" not in r.stderr
    assert "never in the URL" in r.stderr and "Traceback" not in r.stderr
    missing = tmp_path / "nope"
    r = mtlschat_cli(
        "server",
        "--pki",
        str(fresh_pki.dir),
        "--redis",
        "redis://127.0.0.1:1/0",
        "--redis-password-file",
        str(missing),
    )
    assert r.returncode != 0 and str(missing) in r.stderr and "Traceback" not in r.stderr
    r = mtlschat_cli(
        "server", "--pki", str(fresh_pki.dir), "--redis", "rediss://127.0.0.1:1/0",
        "--redis-ca", str(missing), "--check",
    )  # fmt: skip
    assert r.returncode != 0 and "Redis CA file not found" in r.stderr


def test_a_crl_loaded_on_one_node_revokes_everywhere(
    fresh_pki: TestPKI, spawn_node: Spawn, tmp_path: Path
) -> None:
    # Node B has its own copy of the PKI files (no CA key): nobody rewrites its crl.pem but
    # the engine, with what node A published through Redis.
    b_pki = tmp_path / "b-pki"
    b_pki.mkdir()
    for name in ("ca.crt", "server.pem", "crl.pem"):
        shutil.copy(fresh_pki.dir / name, b_pki / name)
    a = spawn_node(fresh_pki.dir)
    b = spawn_node(b_pki)
    bob = join(b, fresh_pki, "bob")
    fresh_pki.revoke("bob")  # node A's PKI: A reloads it (file watch) and publishes it
    bye = [m for m in bob.wait_closed(timeout=20) if m.get("type") == "bye"]
    assert bye and "revoked" in bye[0]["reason"]
    b.wait_log(r"installed CRL number \d+ published by another node")
    assert (b_pki / "crl.pem").read_bytes() == (fresh_pki.dir / "crl.pem").read_bytes()
    assert a.proc.poll() is None


def test_a_node_cut_off_from_redis_refuses_lines_and_heals(
    fresh_pki: TestPKI, spawn_node: Spawn, redis_server: Any, tcp_relay: Any
) -> None:
    relay = tcp_relay(redis_server.port)
    a = spawn_node(fresh_pki.dir, "--rate", "0", redis_url=f"redis://127.0.0.1:{relay.port}/0")
    b = spawn_node(fresh_pki.dir, "--rate", "0")
    alice, bob = join(a, fresh_pki, "alice"), join(b, fresh_pki, "bob")
    alice.wait_for("join", name="bob")
    alice.send("before the cut")
    assert bob.wait_for("msg")["text"] == "before the cut"
    relay.cut()  # node A's network to Redis fails; node B and Redis are fine
    assert "cannot deliver" in alice.wait_for("info")["text"]
    alice.send("lost in the cut")
    assert alice.wait_for("error")["code"] == "not_delivered"
    bob.send("/who")  # node B goes on as usual
    assert bob.wait_for("who")["online"] == ["alice", "bob"]
    relay.heal()
    alice.wait_for("info", text="the room is back: lines are delivered again", timeout=10)
    alice.send("after the cut")
    assert bob.wait_for("msg")["text"] == "after the cut"
    assert [m["text"] for m in bob.seen if m.get("type") == "msg"] == [
        "before the cut",
        "after the cut",
    ]


def test_the_rate_limit_is_per_name_across_nodes(fresh_pki: TestPKI, spawn_node: Spawn) -> None:
    # Each node alone would let alice say 2 lines at once (burst 2); together they let 2 through.
    a = spawn_node(fresh_pki.dir, "--rate", "0.01", "--burst", "2")
    b = spawn_node(fresh_pki.dir, "--rate", "0.01", "--burst", "2")
    on_a, on_b = join(a, fresh_pki, "alice"), join(b, fresh_pki, "alice")
    bob = join(b, fresh_pki, "bob")
    on_a.send("a1")
    assert bob.wait_for("msg")["text"] == "a1"
    on_a.send("a2")
    assert bob.wait_for("msg")["text"] == "a2"
    on_b.send("b1")
    on_b.send("b2")
    error = on_b.wait_for("error")
    assert error["code"] == "rate_limited"
    bob.send("/who")  # (a round trip after the refusals: nothing else came)
    bob.wait_for("who")
    assert [m["text"] for m in bob.seen if m.get("type") == "msg"] == ["a1", "a2"]


@pytest.mark.slow
def test_a_node_cut_off_long_is_reaped_and_comes_back(
    fresh_pki: TestPKI, spawn_node: Spawn, redis_server: Any, tcp_relay: Any
) -> None:
    relay = tcp_relay(redis_server.port)
    a = spawn_node(fresh_pki.dir, redis_url=f"redis://127.0.0.1:{relay.port}/0")
    b = spawn_node(fresh_pki.dir)
    alice, bob = join(a, fresh_pki, "alice"), join(b, fresh_pki, "bob")
    alice.wait_for("join", name="bob")
    relay.cut()
    # Node B no longer hears from node A: after ~10 s alice is shown as gone there.
    assert bob.wait_for("leave", name="alice", timeout=20)["reason"] == "node lost"
    relay.heal()
    # Node A reconnects, says hello again: alice is back for everyone, and can speak.
    bob.wait_for("join", name="alice", timeout=20)
    alice.wait_for("info", text="the room is back: lines are delivered again", timeout=10)
    alice.send("back again")
    assert bob.wait_for("msg")["text"] == "back again"
    bob.send("/who")
    assert bob.wait_for("who")["online"] == ["alice", "bob"]
