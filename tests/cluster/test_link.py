"""The Redis link against a real redis-server, driven by a selectors loop like the server's."""

from __future__ import annotations

import itertools
import logging
import selectors
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from mtlschat.cluster.link import LinkBusy, LinkDown, LinkState, RedisLink
from mtlschat.cluster.resp import Reply, ReplyError
from mtlschat.cluster.url import RedisURL, load_password, tls_context

if TYPE_CHECKING:
    from conftest import RedisServer, RedisSpawner, Relay, TestPKI

DEADLINE = 15.0  # two shared cores: generous, never flaky


class Loop:
    """A minimal selectors loop: the links' sockets plus whatever else a test registers, each
    key's data having ``on_ready(mask)`` (the server's LoopParticipant dispatch), links ticked
    and flushed every round.
    """

    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self.links: list[RedisLink] = []
        self.timers: list[tuple[float, Callable[[], None]]] = []

    def link(self, url: str, name: str = "test", **options: Any) -> RedisLink:
        states: list[tuple[LinkState, str]] = []
        link = RedisLink(
            RedisURL.parse(url), name=name, on_state=lambda s, r: states.append((s, r)), **options
        )
        link.states = states  # type: ignore[attr-defined]
        link.attach(self.sel)
        self.links.append(link)
        return link

    def every(self, seconds: float, action: Callable[[], None]) -> None:
        """Run ``action`` every ``seconds`` (a timer of the loop, like the room's tick)."""

        def fire() -> None:
            action()
            self.timers.append((time.monotonic() + seconds, fire))

        self.timers.append((time.monotonic() + seconds, fire))

    def round(self, timeout: float = 0.05) -> None:
        now = time.monotonic()
        for link in self.links:
            link.tick(now)
            link.flush()
        due = [d for link in self.links if (d := link.deadline()) is not None]
        due += [t for t, _ in self.timers]
        wait = min([timeout, *(max(0.0, d - now) for d in due)])
        for key, mask in self.sel.select(wait):
            key.data.on_ready(mask)
        now = time.monotonic()
        for timer in [t for t in self.timers if t[0] <= now]:
            self.timers.remove(timer)
            timer[1]()

    def until(self, condition: Callable[[], bool], timeout: float = DEADLINE) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "timed out"
            self.round()

    def call(self, link: RedisLink, *args: Any) -> Reply:
        """One command, waited for (the loop keeps running meanwhile)."""
        replies: list[Reply] = []
        link.call(args, replies.append)
        self.until(lambda: bool(replies))
        return replies[0]

    def close(self) -> None:
        for link in self.links:
            link.close()
        self.sel.close()


@pytest.fixture
def loop() -> Any:
    loop = Loop()
    yield loop
    loop.close()


def states(link: RedisLink) -> list[LinkState]:
    return [s for s, _ in link.states]  # type: ignore[attr-defined]


def test_a_thousand_commands_go_out_in_one_write_and_come_back_in_order(
    loop: Loop, redis_server: RedisServer
) -> None:
    link = loop.link(redis_server.url)
    loop.until(lambda: link.up)
    replies: list[Reply] = []
    writes = link.writes
    for _ in range(1000):
        link.call(["INCR", "counter"], replies.append)
    link.flush()
    assert link.writes == writes + 1
    loop.until(lambda: len(replies) == 1000)
    assert replies == list(range(1, 1001))
    assert link.stalled(time.monotonic()) == 0.0


def test_what_nobody_flushed_goes_out_at_the_next_tick(
    loop: Loop, redis_server: RedisServer
) -> None:
    link = loop.link(redis_server.url)
    loop.until(lambda: link.up)
    writes = link.writes
    replies: list[Reply] = []
    link.call(["PING"], replies.append)
    link.call(["PING"], replies.append)
    assert link.writes == writes  # queued, not written: one write per round
    assert link.deadline() == pytest.approx(time.monotonic(), abs=1.0)  # (tick me now)
    link.tick(time.monotonic())
    assert link.writes == writes + 1
    loop.until(lambda: replies == [b"PONG", b"PONG"])


def test_an_error_reply_goes_to_its_callback_and_the_next_command_still_works(
    loop: Loop, redis_server: RedisServer
) -> None:
    link = loop.link(redis_server.url)
    replies: list[Reply] = []
    for args in (["SET", "s", "text"], ["INCR", "s"], ["NOSUCHCOMMAND"], ["GET", "s"]):
        link.call(args, replies.append)  # held while connecting, sent once up
    loop.until(lambda: len(replies) == 4)
    assert replies[0] == b"OK"
    assert isinstance(replies[1], ReplyError) and "not an integer" in str(replies[1])
    assert isinstance(replies[2], ReplyError) and "unknown command" in str(replies[2])
    assert replies[3] == b"text"
    assert link.up


def test_hello_names_the_connection_and_selects_the_database(
    loop: Loop, redis_server: RedisServer
) -> None:
    link = loop.link(redis_server.url.replace("/0", "/3"), name="node a:cmd")
    assert loop.call(link, "SET", "where", "db3") == b"OK"
    assert redis_server.client(db=3).get("where") == b"db3"
    assert redis_server.client().get("where") is None
    names = [c["name"] for c in redis_server.client().client_list()]
    assert "node_a:cmd" in names  # (no spaces in a client name)


def test_reconnects_after_redis_restarts_empty(loop: Loop, redis_server: RedisServer) -> None:
    link = loop.link(redis_server.url)
    assert loop.call(link, "SET", "k", "v") == b"OK"
    redis_server.restart()
    loop.until(lambda: states(link) == ["up", "down", "up"])
    assert "redis closed the connection" in link.states[1][1]  # type: ignore[attr-defined]
    assert loop.call(link, "GET", "k") is None  # empty: a new epoch for the engine
    assert link.connects == 2


def test_every_command_gets_exactly_one_answer_across_a_restart(
    loop: Loop, redis_server: RedisServer
) -> None:
    """Redis restarts with 2,000 INCRs in flight: each callback is called once, with the reply
    or with LinkDown (never both, never twice, never lost), and the replies that came are in order.
    """
    link = loop.link(redis_server.url)
    loop.until(lambda: link.up)
    answers: dict[int, list[Reply]] = {i: [] for i in range(2000)}
    for i in range(2000):
        link.call(["INCR", "n"], answers[i].append)
        if i == 1000:
            link.flush()
            loop.round(0)
            redis_server.restart()
    loop.until(lambda: all(answers.values()) and link.up)
    assert all(len(a) == 1 for a in answers.values())
    got = [a[0] for a in answers.values() if not isinstance(a[0], LinkDown)]
    assert got == list(range(1, len(got) + 1)) and 0 < len(got) < 2000
    assert loop.call(link, "INCR", "n") == 1  # the new (empty) Redis got nothing replayed


def test_a_subscribing_link_gets_its_messages_in_order_with_its_replies(
    loop: Loop, redis_server: RedisServer
) -> None:
    """On one RESP3 connection a message published before a command ran arrives before that
    command's reply, and one published after it, after: what the engine's catch-up relies on."""
    pushes: list[Any] = []
    events: list[Any] = []
    link = loop.link(
        redis_server.url.replace("/0", "/2"),
        name="sub",
        subscribe=["ch"],
        on_push=lambda p: (pushes.append(list(p)), events.append(("push", p[2]))),
    )
    loop.until(lambda: link.up)  # (up: the subscription is confirmed, not just sent)
    other = redis_server.client(db=2)
    assert other.publish("ch", "before") == 1
    loop.until(lambda: len(pushes) == 1)
    for i in range(3):  # published by a script on this connection: message, then reply
        link.call(
            ["EVAL", "redis.call('PUBLISH', 'ch', ARGV[1]); return 'r' .. ARGV[1]", 0, i],
            lambda r: events.append(("reply", r)),
        )
    link.call(["HSET", "h", "f", "v"], lambda r: events.append(("reply", r)))
    link.call(["HGETALL", "h"], lambda r: events.append(("reply", r)))
    loop.until(lambda: len(events) == 9)
    assert events[1:] == [
        *[(kind, v) for i in range(3) for kind, v in (("push", b"%d" % i), ("reply", b"r%d" % i))],
        ("reply", 1),
        ("reply", {b"f": b"v"}),  # (RESP3: a map is a dict)
    ]
    assert pushes[0] == [b"message", b"ch", b"before"]
    redis_server.restart()  # the subscription is made again at every connection
    loop.until(lambda: states(link) == ["up", "down", "up"])
    loop.until(lambda: redis_server.client(db=2).publish("ch", "after") == 1)
    loop.until(lambda: pushes[-1] == [b"message", b"ch", b"after"])


def test_a_host_name_is_resolved_off_the_loop(loop: Loop, redis_server: RedisServer) -> None:
    """``localhost`` is looked up in a thread; if it is ::1 first, 127.0.0.1 is tried next."""
    link = loop.link(f"redis://localhost:{redis_server.port}/0")
    assert loop.call(link, "PING") == b"PONG"
    bad = loop.link("redis://no-such-host.invalid:6379/0", name="bad")
    loop.until(lambda: states(bad) == ["down"])
    assert bad.reason.startswith("cannot resolve no-such-host.invalid: ")


def test_down_while_stopped_and_up_again_after(loop: Loop, redis_server: RedisServer) -> None:
    link = loop.link(redis_server.url)
    loop.until(lambda: link.up)
    outstanding: list[Reply] = []
    link.call(["BLPOP", "nothing", 0], outstanding.append)  # (blocks until Redis goes)
    link.flush()
    loop.until(lambda: redis_server.client().info("clients")["blocked_clients"] == 1)
    redis_server.stop()
    loop.until(lambda: states(link) == ["up", "down"])
    assert len(outstanding) == 1 and isinstance(outstanding[0], LinkDown)
    # While down, a command fails at once (the engine refuses the line visibly).
    refused: list[Reply] = []
    link.call(["PING"], refused.append)
    assert len(refused) == 1 and isinstance(refused[0], LinkDown)
    assert "Connection refused" in refused[0].reason or "closed" in refused[0].reason
    # It keeps retrying (backoff from 0.1 s) but reports "down" only once.
    loop.until(lambda: link.connects >= 3)
    assert states(link) == ["up", "down"]
    redis_server.start()
    loop.until(lambda: link.up)
    assert states(link) == ["up", "down", "up"]
    assert loop.call(link, "PING") == b"PONG"


def test_unreachable_at_startup_is_said_once_then_retried(
    loop: Loop, start_redis: RedisSpawner, caplog: pytest.LogCaptureFixture
) -> None:
    redis_server = start_redis()
    redis_server.stop()
    with caplog.at_level(logging.INFO, logger="mtlschat.cluster.link"):
        link = loop.link(redis_server.url, name="cmd")
        loop.until(lambda: link.connects >= 3)
        assert states(link) == ["down"]
        assert "Connection refused" in link.reason
        redis_server.start()
        loop.until(lambda: link.up)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines  # one line per change, not one per attempt
    assert lines[0].startswith("redis link cmd: down, Connection refused (redis://127.0.0.1:")
    assert lines[1].startswith("redis link cmd: up, connected to redis://127.0.0.1:")


def test_a_stopped_redis_does_not_block_the_loop(loop: Loop, redis_server: RedisServer) -> None:
    """SIGSTOP Redis for 2 s: a timer and another socket are still served every few ms."""
    link = loop.link(redis_server.url)
    loop.until(lambda: link.up)
    mine, theirs = socket.socketpair()
    served: list[float] = []

    class Echo:  # another participant of the loop, like a member's connection
        def on_ready(self, mask: int) -> None:
            mine.recv(100)
            served.append(time.monotonic())

    loop.sel.register(mine, selectors.EVENT_READ, Echo())
    loop.every(0.02, lambda: theirs.send(b"x"))
    redis_server.pause()
    replies: list[Reply] = []
    started = time.monotonic()
    for i in range(100):
        link.call(["SET", f"k{i}", "v" * 1000], replies.append)
    loop.until(lambda: time.monotonic() - started >= 2.0)
    assert not replies
    assert link.stalled(time.monotonic()) >= 2.0
    gaps = [b - a for a, b in itertools.pairwise(served)]
    assert len(served) >= 20 and max(gaps) < 0.5, (len(served), max(gaps))
    redis_server.resume()
    loop.until(lambda: len(replies) == 100)
    assert set(replies) == {b"OK"} and link.stalled(time.monotonic()) == 0.0
    mine.close()
    theirs.close()


def test_a_redis_that_stops_reading_cannot_grow_the_queue_without_bound(
    loop: Loop, redis_server: RedisServer
) -> None:
    cap = 1024 * 1024
    link = loop.link(redis_server.url, max_queued_bytes=cap)
    loop.until(lambda: link.up)
    redis_server.pause()
    replies: list[Reply] = []
    value = "v" * 256 * 1024
    for i in range(200):  # up to 50 MB: more than the kernel's buffers and the cap
        link.call(["SET", f"k{i}", value], replies.append)
        link.flush()
        if replies:
            break
    assert len(replies) == 1 and isinstance(replies[0], LinkBusy), replies
    assert "not keeping up" in replies[0].reason
    accepted = link.pending
    redis_server.resume()
    loop.until(lambda: len(replies) == 1 + accepted)
    assert set(replies[1:]) == {b"OK"}
    assert link.up


def test_max_pending_refuses_at_once(loop: Loop, redis_server: RedisServer) -> None:
    link = loop.link(redis_server.url, max_pending=3)
    replies: list[Reply] = []
    for _ in range(4):
        link.call(["PING"], replies.append)
    assert len(replies) == 1 and isinstance(replies[0], LinkBusy)
    loop.until(lambda: len(replies) == 4)
    assert replies[1:] == [b"PONG"] * 3


def test_a_reply_that_never_comes_takes_the_link_down(
    loop: Loop, redis_server: RedisServer
) -> None:
    """A peer that stops answering (a network dropping packets) is given up after reply_timeout."""
    link = loop.link(redis_server.url, reply_timeout=0.5)
    loop.until(lambda: link.up)
    redis_server.pause()
    replies: list[Reply] = []
    link.call(["PING"], replies.append)
    loop.until(lambda: bool(replies))
    assert isinstance(replies[0], LinkDown) and "no reply from redis for 0.5 s" in replies[0].reason
    redis_server.resume()
    loop.until(lambda: link.up)
    assert loop.call(link, "PING") == b"PONG"


def test_a_redis_that_accepts_but_never_answers_the_hello_is_given_up(
    loop: Loop, redis_server: RedisServer
) -> None:
    """SIGSTOPped at connect time: the kernel accepts the TCP connection, the hello gets no
    reply; after connect_timeout the attempt is abandoned (held commands fail) and retried.
    """
    redis_server.pause()
    link = loop.link(redis_server.url, connect_timeout=0.5)
    held: list[Reply] = []
    link.call(["PING"], held.append)
    loop.until(lambda: bool(held))
    assert isinstance(held[0], LinkDown) and "no connection within 0.5 s (hello)" in held[0].reason
    assert states(link) == ["down"]
    redis_server.resume()
    loop.until(lambda: link.up)
    assert loop.call(link, "PING") == b"PONG"


def test_a_cut_network_takes_it_down_and_heals(
    loop: Loop, redis_server: RedisServer, tcp_relay: Callable[[int], Relay]
) -> None:
    relay = tcp_relay(redis_server.port)
    link = loop.link(f"redis://127.0.0.1:{relay.port}/0")
    assert loop.call(link, "SET", "k", "v") == b"OK"
    relay.cut()
    loop.until(lambda: states(link) == ["up", "down"])
    loop.until(lambda: link.connects >= 3)  # retries are refused while cut
    relay.heal()
    loop.until(lambda: link.up)
    assert loop.call(link, "GET", "k") == b"v"  # same Redis: nothing lost


def test_auth_with_a_password_from_a_file(
    loop: Loop, start_redis: RedisSpawner, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    redis_server = start_redis(password="pw-from-file-123")
    file = tmp_path / "redis.pass"
    file.write_text("pw-from-file-123\n")
    link = loop.link(redis_server.url, password=load_password(file))
    assert loop.call(link, "PING") == b"PONG"
    with caplog.at_level(logging.INFO, logger="mtlschat.cluster.link"):
        wrong = loop.link(redis_server.url, name="wrong", password="not-it-456")
        loop.until(lambda: states(wrong) == ["down"])
    assert "redis refused the connection: WRONGPASS" in wrong.reason
    assert "not-it-456" not in caplog.text and "not-it-456" not in wrong.reason
    sub = loop.link(redis_server.url, name="sub", password=load_password(file), subscribe=["c"])
    assert loop.call(sub, "PING") == b"PONG"  # (HELLO 3 AUTH default ...)
    wrong_sub = loop.link(redis_server.url, name="wrong-sub", password="no-789", subscribe=["c"])
    loop.until(lambda: states(wrong_sub) == ["down"])
    assert "redis refused the connection: WRONGPASS" in wrong_sub.reason
    nopass = loop.link(redis_server.url, name="none")
    replies: list[Reply] = []
    nopass.call(["PING"], replies.append)
    loop.until(lambda: bool(replies))
    assert isinstance(replies[0], LinkDown)  # (its hello failed: no link without a password)
    assert "redis refused the connection: NOAUTH" in replies[0].reason


def test_tls_to_a_redis_behind_tls(loop: Loop, start_redis: RedisSpawner, pki: TestPKI) -> None:
    redis_server = start_redis(tls=(pki.server_bundle, pki.ca_cert))
    assert redis_server.url.startswith("rediss://")
    link = loop.link(redis_server.url, tls=tls_context(pki.ca_cert))
    replies: list[Reply] = []
    for i in range(500):
        link.call(["SET", f"k{i}", "x" * 2000], replies.append)
    link.call(["DBSIZE"], replies.append)
    loop.until(lambda: len(replies) == 501)
    assert replies[-1] == 500
    redis_server.restart()
    loop.until(lambda: states(link) == ["up", "down", "up"])


def test_tls_refuses_a_redis_it_cannot_verify(
    loop: Loop, start_redis: RedisSpawner, pki: TestPKI, fresh_pki: TestPKI
) -> None:
    redis_server = start_redis(tls=(pki.server_bundle, pki.ca_cert))
    link = loop.link(redis_server.url, tls=tls_context(fresh_pki.ca_cert))
    loop.until(lambda: states(link) == ["down"])
    assert "TLS handshake failed: certificate verify failed: self-signed" in link.reason
