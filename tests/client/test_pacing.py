"""Nothing sent is lost: lines paced to the room's rate, long lines split, refusals counted.

Real server processes with a rate limit on, real ``mtlschat client`` processes in pipe mode.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mtlschat.client.errors import ExitCode

if TYPE_CHECKING:
    from conftest import TestPKI


def test_a_piped_file_arrives_whole_paced_to_the_rooms_rate(
    pki: TestPKI, spawn_server: Any, spawn_client: Any, tmp_path: Any
) -> None:
    """200 lines against a limit of 100/s with a burst of 5: every one arrives, in order."""
    server = spawn_server(pki.dir, "--rate", "100", "--burst", "5")
    addr = f"localhost:{server.port}"
    bob = spawn_client("--cert", pki.user("bob"), addr)
    bob.wait_out("* welcome bob")
    lines = [f"line {i:03d} of the file" for i in range(200)]
    alice = spawn_client("--cert", pki.user("pacer"), addr)
    for line in lines:
        alice.send(line)
    alice.close_stdin()
    bob.wait_out("<pacer> line 199 of the file", timeout=60)
    assert alice.wait_exit(60) == ExitCode.OK, alice.err
    got = [line.removeprefix("<pacer> ") for line in bob.out if line.startswith("<pacer> ")]
    assert got == lines
    assert not any(line.startswith("!") for line in alice.out)  # no refusal of any kind
    bob.close_stdin()
    assert bob.wait_exit() == ExitCode.OK


def test_a_pipe_whose_lines_were_refused_exits_non_zero_saying_how_many(
    pki: TestPKI, spawn_server: Any, spawn_client: Any
) -> None:
    server = spawn_server(pki.dir)
    client = spawn_client("--cert", pki.user("refused"), f"localhost:{server.port}")
    client.send("fine")
    client.send("/frobnicate")
    client.send("/msg nobody-here hello")
    client.send("also fine")
    client.close_stdin()
    assert client.wait_exit() == ExitCode.NOT_DELIVERED
    assert client.err[-1].endswith(
        ": 2 of 4 lines were not delivered (1 unknown command, 1 unknown user)"
    )


def test_a_long_line_is_split_at_the_rooms_limit_and_arrives_whole(
    pki: TestPKI, spawn_server: Any, spawn_client: Any
) -> None:
    """A 3,000-character line against --max-line 200: parts at spaces, UTF-8 intact, none lost."""
    server = spawn_server(pki.dir, "--max-line", "200")
    addr = f"localhost:{server.port}"
    bob = spawn_client("--cert", pki.user("bob"), addr)
    bob.wait_out("* welcome bob")
    words = [f"wörd{i}✓" for i in range(300)]
    alice = spawn_client("--cert", pki.user("splitter"), addr)
    alice.send(" ".join(words))
    alice.send("/me " + " ".join(words[:60]))
    alice.close_stdin()
    assert alice.wait_exit() == ExitCode.OK, alice.err + alice.out
    bob.wait_out("* splitter left")
    parts = [line.removeprefix("<splitter> ") for line in bob.out if line.startswith("<splitter>")]
    assert len(parts) > 1
    assert all(len(part.encode()) <= 200 for part in parts)
    assert " ".join(parts).split() == words  # cut only at spaces, nothing lost
    prefix = "* splitter "
    actions = [line.removeprefix(prefix) for line in bob.out if line.startswith(prefix)]
    actions = [a for a in actions if a not in ("joined", "left (quit)")]
    assert len(actions) > 1 and " ".join(actions).split() == words[:60]
    bob.close_stdin()
    assert bob.wait_exit() == ExitCode.OK
