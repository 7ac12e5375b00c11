"""The room's relay mode (issue 13), sans-I/O: nodes joined by an in-memory ordered log."""

from __future__ import annotations

from typing import Any

import pytest

from mtlschat.chat import commands
from mtlschat.chat.room import Mode, Room, RoomSettings, Session
from mtlschat.history.store import JOIN, LEAVE, MSG, Record

from .relay_harness import EPOCH, Cluster


def lines(events: list[dict[str, Any]], *types: str) -> list[tuple[str, ...]]:
    """The events of ``types`` as short tuples, for comparing."""
    out: list[tuple[str, ...]] = []
    for e in events:
        if e["type"] not in types:
            continue
        if e["type"] in ("msg", "action"):
            out.append((e["type"], e["from"], e["text"]))
        elif e["type"] == "dm":
            out.append(("dm", e["from"], e["to"], e["text"]))
        elif e["type"] in ("join", "leave"):
            out.append((e["type"], e["name"]))
        elif e["type"] in ("info", "error"):
            out.append((e["type"], e.get("code", ""), e["text"]))
        else:
            out.append((e["type"],))
    return out


def joined(c: Cluster, *who: tuple[int, str]) -> list[Session]:
    """Open a session for each (node, name), settle, and drop everything received so far."""
    sessions = [c.nodes[i].open(name) for i, name in who]
    c.settle()
    for (i, _), s in zip(who, sessions, strict=True):
        c.nodes[i].take(s)
    return sessions


@pytest.fixture
def c() -> Cluster:
    return Cluster(3)


def test_lines_reach_every_node_in_the_logs_order_and_not_the_sender(c: Cluster) -> None:
    n0, n1, n2 = c.nodes
    alice, bob, carol = joined(c, (0, "alice"), (1, "bob"), (2, "carol"))
    n0.send(alice, "a1", "a2")
    n1.send(bob, "b1")
    n2.send(carol, "/me waves")
    # Nothing is shown before the log gives it its place, not even on the sender's node.
    assert n0.flush() == [] and n1.flush() == [] and n2.flush() == []
    c.round()
    order = [("msg", "alice", "a1"), ("msg", "alice", "a2"), ("msg", "bob", "b1")]
    order.append(("action", "carol", "waves"))
    assert lines(n0.take(alice), "msg", "action") == [order[2], order[3]]
    assert lines(n1.take(bob), "msg", "action") == [order[0], order[1], order[3]]
    assert lines(n2.take(carol), "msg", "action") == order[:3]
    # The ids are the log's offsets, the same everywhere; the mirrors agree.
    for node in c.nodes:
        assert node.room.history is not None
        assert [r.offset for r in node.room.history.last(10, "dave")] == [1, 2, 3, 4]


def test_a_node_shows_its_own_members_lines_only_once_delivered() -> None:
    c = Cluster(1)
    (n0,) = c.nodes
    alice, bob = joined(c, (0, "alice"), (0, "bob"))
    n0.send(alice, "hi")
    n0.flush()
    assert n0.take(bob) == []
    assert [o.record.kind for o in n0.room.take_outbox()] == [MSG]


def test_presence_is_global_and_joins_and_leaves_are_announced_once_per_name(c: Cluster) -> None:
    n0, n1, n2 = c.nodes
    (carol,) = joined(c, (2, "carol"))
    a0 = n0.open("alice")
    c.settle()
    welcome = n0.take(a0)[0]
    assert welcome["online"] == ["alice", "carol"] and welcome["online_count"] == 2
    assert lines(n2.take(carol), "join", "leave") == [("join", "alice")]
    a1 = n1.open("Alice")  # the same name (case-insensitively) on another node: no new join
    c.settle()
    assert lines(n2.take(carol), "join", "leave") == []
    assert lines(n0.take(a0), "join", "leave") == []
    n1.send(a1, "/who")
    c.settle()
    assert [e["online"] for e in n1.take(a1) if e["type"] == "who"] == [["alice", "carol"]]
    n0.room.end(a0, "quit", gone=True)  # alice is still on n1: not a leave
    c.settle()
    assert lines(n2.take(carol), "join", "leave") == []
    n1.room.end(a1, "quit", gone=True)
    c.settle()
    assert lines(n2.take(carol), "join", "leave") == [("leave", "alice")]
    assert c.nodes[2].room.online() == ["carol"]
    assert [r.kind for r in c.log.records].count(LEAVE) == 2  # one per node that had alice


def test_the_joiner_is_listed_in_its_welcome_before_its_join_is_delivered(c: Cluster) -> None:
    n0, n1, _ = c.nodes
    a = n0.open("alice")
    n0.flush()
    welcome = n0.take(a)[0]
    assert welcome["online"] == ["alice"] and welcome["online_count"] == 1
    a2 = n0.open("alice")  # before the join came back
    a3 = n1.open("ALICE")  # on another node, before the join came back
    c.settle()
    for node, s in ((n0, a), (n0, a2), (n1, a3)):  # none is told of its own arrival
        assert lines(node.take(s), "join") == []


def test_members_of_a_dead_node_are_announced_as_left(c: Cluster) -> None:
    n0, n1, _ = c.nodes
    alice, _bob, _bob2 = joined(c, (0, "alice"), (1, "bob"), (0, "bob"))
    (_carol,) = joined(c, (1, "carol"))
    n0.take(alice)
    # n1 dies: the reap script publishes a leave for each of its members (node = n1).
    for name in ("bob", "carol"):
        c.log.append(Record(0, c.clock.now, LEAVE, name, "node lost", "", 0, "n1"))
    c.nodes.remove(n1)
    c.settle()
    # bob is still on n0: only carol left.
    assert lines(n0.take(alice), "join", "leave") == [("leave", "carol")]
    assert n0.room.online() == ["alice", "bob"]


def test_dms_reach_every_session_of_both_on_every_node_and_nobody_else(c: Cluster) -> None:
    n0, n1, n2 = c.nodes
    a0, a1, b1, b2, carol = joined(
        c, (0, "alice"), (1, "alice"), (1, "bob"), (2, "bob"), (0, "carol")
    )
    n0.send(a0, "/msg BOB psst")
    c.settle()
    dm = ("dm", "alice", "bob", "psst")
    for node, s in ((n0, a0), (n1, a1), (n1, b1), (n2, b2)):
        assert lines(node.take(s), "dm", "msg") == [dm], s
    assert n0.take(carol) == []
    # The mirrors keep it for the two of them only: history, search, resume.
    n2.send(b2, "/history 5", "/search psst")
    n0.send(carol, "/history 5", "/search psst", f"/resume {EPOCH} 0")
    c.settle()
    got = n2.take(b2)
    assert [e["text"] for e in got if e.get("history")] == ["psst", "psst"]
    assert not any(e.get("history") for e in n0.take(carol))


def test_an_unknown_name_is_refused_and_a_remote_one_is_not(c: Cluster) -> None:
    n0, _, _n2 = c.nodes
    alice, _bob = joined(c, (0, "alice"), (2, "bob"))
    n0.send(alice, "/msg nobody hi", "/msg bob hi")
    c.settle()
    got = n0.take(alice)
    assert [e["code"] for e in got if e["type"] == "error"] == ["unknown_user"]
    assert lines(got, "dm") == [("dm", "alice", "bob", "hi")]


def test_kick_and_ban_apply_on_every_node(c: Cluster) -> None:
    n0, n1, n2 = c.nodes
    op, bob, bob2, carol = joined(c, (0, "op"), (1, "bob"), (2, "bob"), (2, "carol"))
    n0.send(op, "/kick bob spam")
    c.settle()
    for node, s in ((n1, bob), (n2, bob2)):
        got = node.take(s)
        assert got[-1] == {"type": "bye", "reason": "kicked by op: spam"}
        assert s.closing == "kicked by op: spam"
    said = lines(n2.take(carol), "info", "leave")
    assert said == [("info", "", "op kicked bob (spam)"), ("leave", "bob")]
    assert lines(n0.take(op), "info", "leave") == said
    n0.send(op, "/ban carol 1h rude")
    c.settle()
    assert carol.closing == "banned by op: rude"
    refused = n1.open("carol")
    n1.flush()
    assert refused.refused is not None and refused.refused.code == "banned"
    assert all(node.room.moderation.banned("carol", c.clock.now) for node in c.nodes)
    n0.send(op, "/unban carol")
    c.settle()
    assert not any(node.room.moderation.banned("carol", c.clock.now) for node in c.nodes)


def test_mute_and_topic_apply_on_every_node(c: Cluster) -> None:
    n0, n1, _ = c.nodes
    op, bob = joined(c, (0, "op"), (1, "bob"))
    n0.send(op, "/mute bob 10m", "/topic relays")
    c.settle()
    n1.send(bob, "hi", "/topic")
    c.settle()
    got = n1.take(bob)
    assert [e["code"] for e in got if e["type"] == "error"] == ["muted"]
    assert ("info", "", "topic: relays (set by op)") in lines(got, "info")
    assert lines(n0.take(op), "msg") == []
    n0.send(op, "/unmute bob")
    c.settle()
    n1.send(bob, "back")
    c.settle()
    assert lines(n0.take(op), "msg") == [("msg", "bob", "back")]


def test_a_degraded_room_refuses_lines_visibly_and_says_so_once(c: Cluster) -> None:
    n0, n1, _ = c.nodes
    alice, bob = joined(c, (0, "alice"), (1, "bob"))
    n0.room.set_degraded("redis down")
    n0.room.set_degraded("redis still down")
    n0.send(alice, "lost?", "/me too", "/msg bob x")
    c.settle()
    got = lines(n0.take(alice), "info", "error")
    assert [g[0] for g in got] == ["info", "error", "error", "error"]
    assert "cannot deliver" in got[0][2]
    assert {g[1] for g in got[1:]} == {"not_delivered"}
    assert lines(n1.take(bob), "msg", "action", "dm") == []
    late = n0.open("carol")  # a member who joins while degraded is told too
    n0.flush()
    assert any("cannot deliver" in e.get("text", "") for e in n0.take(late))
    n0.send(alice, "/kick bob")  # not an operator anyway; operators are refused the same way
    n0.room.set_degraded(None)
    n0.send(alice, "back")
    c.settle()
    assert ("info", "", "the room is back: lines are delivered again") in lines(
        n0.take(alice), "info"
    )
    assert lines(n1.take(bob), "msg") == [("msg", "alice", "back")]


def test_moderation_is_refused_while_degraded(c: Cluster) -> None:
    n0, _n1, _ = c.nodes
    op, bob = joined(c, (0, "op"), (1, "bob"))
    n0.room.set_degraded("redis down")
    n0.send(op, "/kick bob")
    c.settle()
    assert [e["code"] for e in n0.take(op) if e["type"] == "error"] == ["bad_usage"]
    assert bob.closing is None


def test_refused_items_are_told_to_their_sender(c: Cluster) -> None:
    n0, n1, _ = c.nodes
    alice, bob = joined(c, (0, "alice"), (1, "bob"))
    n0.send(alice, "one", "two")
    items = n0.room.take_outbox()
    n0.room.refuse(items, "rate_limited", "rate limited across nodes: not delivered")
    c.settle()
    assert lines(n0.take(alice), "error") == [
        ("error", "rate_limited", "rate limited across nodes: not delivered (2 lines)")
    ]
    assert lines(n1.take(bob), "msg") == []


def test_an_epoch_reset_is_told_and_new_sessions_get_the_new_epoch(c: Cluster) -> None:
    n0, _, _ = c.nodes
    (alice,) = joined(c, (0, "alice"))
    n0.send(alice, "old")
    c.settle()
    n0.room.reset_epoch("e2", 0)
    # Redis lost who is where too: n0 says again who it has (no one sees a new join).
    assert [(o.record.kind, o.record.sender) for o in n0.room.take_outbox()] == [(JOIN, "alice")]
    n0.flush()
    assert [e["text"] for e in n0.take(alice) if e["type"] == "info"] == [
        "history was reset: earlier lines are gone (new epoch)"
    ]
    bob = n0.open("bob")
    n0.send(bob, f"/resume {EPOCH} 1", "/history")
    c.settle()
    got = n0.take(bob)
    assert got[0]["resume"]["epoch"] == "e2" and got[0]["resume"]["offset"] == 0
    assert [e["reset"] for e in got if e["type"] == "resumed"] == [True]
    assert not any(e.get("history") for e in got)
    # Offsets start again in the new epoch (the log restarted empty).
    c.log.offset = 0
    n0.send(alice, "new")
    c.settle()
    assert n0.room.history is not None
    assert [(r.offset, r.text) for r in n0.room.history.last(5, "bob")] == [(1, "new")]


def test_history_replays_lines_said_on_other_nodes(c: Cluster) -> None:
    n0, n1, _ = c.nodes
    (alice,) = joined(c, (0, "alice"))
    n0.send(alice, "said on n0")
    c.settle()
    bob = n1.open("bob")
    n1.send(bob, "/history 5")
    c.settle()
    assert [e["text"] for e in n1.take(bob) if e.get("history")] == ["said on n0"]


def test_presence_snapshot_and_republish() -> None:
    c = Cluster(2)
    n0, n1 = c.nodes
    (_alice,) = joined(c, (0, "alice"))
    n1.room.load_presence({"n0": {"alice"}, "n9": {"zed"}})
    assert n1.room.online() == ["alice", "zed"]
    n0.room.load_presence({"n9": {"zed"}})  # a snapshot without n0's own members: they stay
    assert n0.room.online() == ["alice", "zed"]
    assert n0.room.local_names() == ["alice"]
    n0.room.republish_presence()
    assert [(o.record.kind, o.record.sender) for o in n0.room.take_outbox()] == [(JOIN, "alice")]


def test_relay_mode_is_chosen_before_sessions_open() -> None:
    room = Room(RoomSettings())
    room.open("alice", Mode.JSON)
    with pytest.raises(ValueError):
        room.relay = True


def test_a_malformed_mod_record_is_skipped(c: Cluster) -> None:
    n0 = c.nodes[0]
    (alice,) = joined(c, (0, "alice"))
    c.log.append(Record(0, c.clock.now, "mod", "x", "{not json", "", 0, "n1"))
    c.log.append(Record(0, c.clock.now, "mod", "x", '{"op":"ban"}', "", 0, "n1"))
    c.log.append(Record(0, c.clock.now, "mod", "x", "[1]", "", 0, "n1"))
    n0.send(alice, "still here")
    c.settle()
    assert alice.closing is None


def test_two_sessions_of_one_name_each_miss_only_their_own_line() -> None:
    # Two lines in one round from two sessions of one name: each is skipped only for its sender.
    c = Cluster(1)
    n0 = c.nodes[0]
    a, b = joined(c, (0, "alice"), (0, "alice"))
    n0.send(a, "from a")
    n0.send(b, "from b")
    c.settle()
    assert lines(n0.take(a), "msg") == [("msg", "alice", "from b")]
    assert lines(n0.take(b), "msg") == [("msg", "alice", "from a")]


def test_load_history_fills_the_mirror_and_deliveries_follow_it() -> None:
    c = Cluster(1)
    (n0,) = c.nodes
    tail = [Record(i, c.clock.now, MSG, "zed", f"line {i}", "", 0, "n9") for i in (7, 8, 9)]
    tail.insert(1, Record(0, c.clock.now, JOIN, "zed", "", "", 0, "n9"))  # not a line: skipped
    n0.room.load_history("e7", tail, 9)
    c.log.offset = 9
    alice = n0.open("alice")
    c.settle()
    welcome = n0.take(alice)[0]
    assert welcome["resume"]["epoch"] == "e7" and welcome["resume"]["offset"] == 9
    # A record the mirror has already (the engine's load overlapped the feed) is not kept twice.
    n0.room.deliver([tail[-1]])
    n0.send(alice, "/history 10")
    n0.flush()
    c.settle()
    got = [e["text"] for e in n0.take(alice) if e.get("history")]
    assert got == ["line 7", "line 8", "line 9"]


def test_a_client_resumes_on_another_node_with_exactly_what_it_missed(c: Cluster) -> None:
    n0, n1, n2 = c.nodes
    bob_n0, alice, _carol = joined(c, (0, "bob"), (1, "alice"), (2, "carol"))
    n0.send(bob_n0, "mine")  # the client showed this itself: not replayed
    c.settle()
    n0.room.end(bob_n0, "connection lost", gone=True)  # n0 dies with bob on it
    n1.send(alice, "while you were away", "/msg bob psst", "/msg carol not yours")
    c.settle()
    bob = n2.open("bob")
    n2.send(bob, f"/resume {EPOCH} 0 {bob_n0.origin}")
    c.settle()
    got = n2.take(bob)
    replayed = [(e["type"], e["text"]) for e in got if e.get("history") == "resume"]
    assert replayed == [("msg", "while you were away"), ("dm", "psst")]
    assert [e["offset"] for e in got if e["type"] == "resumed"] == [c.log.offset]


def test_operator_actions_from_outside_the_room_go_through_the_log(c: Cluster) -> None:
    n0, _n1, _ = c.nodes
    (bob,) = joined(c, (1, "bob"))
    commands.kick(n0.room, "admin(shell)", "bob", "bye")  # as `mtlschat admin` does
    assert bob.closing is None  # nothing happens before the log gives it its place
    c.settle()
    assert bob.closing == "kicked by admin(shell): bye"
    n0.room.set_degraded("redis down")
    with pytest.raises(commands.ModerationRefused, match="redis down"):
        commands.ban(n0.room, "admin(shell)", "bob", None)
    assert n0.room.take_outbox() == []


def test_joins_and_leaves_are_not_announced_above_the_limit_anywhere() -> None:
    c = Cluster(2, RoomSettings(announce_limit=2, join_rate=0, history_join=0))
    n0, n1 = c.nodes
    (alice,) = joined(c, (0, "alice"))
    n1.open("bob")  # 2 online: announced
    c.settle()
    n1.open("carol")  # 3 online: over the limit, on every node
    c.settle()
    assert lines(n0.take(alice), "join") == [("join", "bob")]
    assert n0.room.online() == n1.room.online() == ["alice", "bob", "carol"]
