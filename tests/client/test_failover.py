"""Several server addresses: the client fails over between them on connect and on reconnect."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from mtlschat.address import Address
from mtlschat.client.config import choose_servers, load_config, remember
from mtlschat.client.connection import Link
from mtlschat.client.errors import ClientError, ExitCode
from mtlschat.client.protocol import Event
from mtlschat.client.tls import client_context

from .conftest import loopback_server

if TYPE_CHECKING:
    from conftest import TestPKI

DEADLINE = 20.0


def free_port() -> int:
    """A port nothing listens on (bound for a moment, then released): connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def chat_lines(out: list[str], sender: str) -> list[str]:
    return [line for line in out if line.startswith(f"<{sender}> ")]


def test_first_address_dead_second_used(
    pki: TestPKI, spawn_server: Any, spawn_client: Any, run_client: Any
) -> None:
    server = spawn_server(pki.dir)
    dead = free_port()
    alice = spawn_client(
        "--cert", pki.user("alice"), f"localhost:{dead}", f"localhost:{server.port}"
    )
    alice.wait_out("* welcome alice")
    alice.wait_err(f"connected to localhost:{server.port}")
    alice.close_stdin()
    assert alice.wait_exit() == ExitCode.OK
    env = {"MTLSCHAT_SERVER": f"localhost:{dead} localhost:{server.port}"}  # (no argument)
    bob = spawn_client("--cert", pki.user("bob"), env=env)
    bob.wait_out("* welcome bob")
    bob.close_stdin()
    assert bob.wait_exit() == ExitCode.OK

    # None answers: one line naming each, the code of the first failure.
    other = free_port()
    result = run_client("--cert", pki.user("alice"), f"127.0.0.1:{dead},127.0.0.1:{other}")
    assert result.returncode == ExitCode.UNREACHABLE
    assert result.stderr == (
        f"mtlschat: error: cannot reach 127.0.0.1:{dead}: connection refused (is the server "
        f"running, on this port?); cannot reach 127.0.0.1:{other}: connection refused (is the "
        "server running, on this port?)\n"
    )


def test_the_node_dies_the_client_resumes_on_the_other(
    fresh_pki: TestPKI, spawn_server: Any, spawn_client: Any, tmp_path: Path
) -> None:
    # Two nodes of one room, one after the other: the second serves the same history (as
    # nodes on one Redis do), started once the first is killed (which frees the history file).
    history = str(tmp_path / "h.db")
    first = spawn_server(fresh_pki.dir, "--history", history)
    second_port = free_port()
    servers = (f"localhost:{first.port}", f"localhost:{second_port}")
    alice = spawn_client("--cert", fresh_pki.user("alice"), *servers)
    alice.wait_out("* welcome alice")
    bob = spawn_client("--cert", fresh_pki.user("bob"), f"localhost:{first.port}")
    bob.wait_out("* welcome bob")
    bob.send("before")
    alice.wait_out("<bob> before")

    os.kill(first.proc.pid, signal.SIGKILL)
    first.proc.wait(DEADLINE)
    alice.wait_err("reconnecting in")
    bob.kill()
    second = spawn_server(fresh_pki.dir, "--history", history, port=second_port)
    bob = spawn_client("--cert", fresh_pki.user("bob"), f"localhost:{second.port}")
    bob.wait_out("* welcome bob")
    for i in range(1, 4):
        bob.send(f"on the other node {i}")
    alice.wait_err(f"reconnected to localhost:{second.port}")
    alice.send("I am back")
    bob.wait_out("<alice> I am back")
    bob.send("after")
    alice.wait_out("<bob> after")
    expected = ["<bob> before", *(f"<bob> on the other node {i}" for i in range(1, 4))]
    assert chat_lines(alice.out, "bob") == [*expected, "<bob> after"]
    assert not any("history was reset" in line for line in alice.out)
    for client in (alice, bob):
        client.close_stdin()
        assert client.wait_exit() == ExitCode.OK


class TwoAddresses(Link):
    """No name on this machine resolves to two addresses: this one stands for such a name,
    resolving ``localhost`` to ``addresses`` (the connections themselves are real)."""

    addresses: tuple[str, ...] = ()

    async def _resolve(self, server: Address) -> list[str]:
        return list(self.addresses)


def test_each_address_of_a_name_is_tried(pki: TestPKI, spawn_server: Any) -> None:
    # The first address accepts TCP and closes at once, as a dead node behind a balancer might.
    host = "127.0.0.2"
    with loopback_server(lambda conn: None, host) as port:
        _each_address_is_tried(pki, spawn_server(pki.dir, port=port), host)


def _each_address_is_tried(pki: TestPKI, server: Any, host: str) -> None:
    statuses: list[str] = []

    async def scenario() -> None:
        welcomed = asyncio.Event()

        def on_event(event: Event) -> None:
            if event.type == "welcome":
                welcomed.set()

        link = TwoAddresses(
            Address("localhost", server.port),
            client_context(pki.user("alice"), None),
            on_event,
            lambda text, error: statuses.append(text),
        )
        link.addresses = (host, "127.0.0.1")  # (the server is on the second)
        session = asyncio.create_task(link.run())
        await asyncio.wait_for(welcomed.wait(), DEADLINE)
        link.quit()
        await asyncio.wait_for(session, DEADLINE)

    asyncio.run(scenario())
    assert statuses[0] == f"connected to localhost:{server.port}"


def test_the_config_file_names_several_servers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MTLSCHAT_SERVER", raising=False)
    path = tmp_path / "client.toml"
    path.write_text('server = ["a.example:7443", "b.example"]\n')
    config = load_config(path)
    assert config.server == ("a.example:7443", "b.example")
    assert choose_servers([], config) == [Address("a.example", 7443), Address("b.example", 7443)]
    assert choose_servers(["c:1"], config) == [Address("c", 1)]  # the command line wins
    path.write_text('server = ["a", 3]\n')
    with pytest.raises(ClientError, match="server must be a string or a list of strings"):
        load_config(path)

    # Remembered as written: one server a string (as before), several a list.
    fresh = load_config(tmp_path / "new.toml")
    assert remember(fresh, tmp_path / "alice.pem", [Address("a", 1), Address("b", 2)])
    assert load_config(tmp_path / "new.toml").server == ("a:1", "b:2")
    single = load_config(tmp_path / "one.toml")
    assert remember(single, tmp_path / "alice.pem", [Address("a", 1)])
    assert 'server = "a:1"' in (tmp_path / "one.toml").read_text()
