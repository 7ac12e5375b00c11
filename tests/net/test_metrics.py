"""``--metrics``, ``--pidfile`` and ``--log-format json`` on a real server process."""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from mtlschat.address import Address
from mtlschat.net.metrics import MetricsServer

from .conftest import DEADLINE, ChatClient, RunningServer, assert_refused, client_context

if TYPE_CHECKING:
    from conftest import ServerProcess, TestPKI

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=15) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _scrape(base: str) -> Samples:
    status, text = _get(base + "/metrics")
    assert status == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def _value(samples: Samples, name: str, **labels: str) -> float:
    wanted = {"node": "room-1", **labels}
    return samples[(name, frozenset(wanted.items()))]


def test_metrics_over_http(
    tmp_path: Path, pki: TestPKI, spawn_server: Callable[..., ServerProcess]
) -> None:
    flags = ["--metrics", "0", "--node", "room-1", "--max-line", "64"]
    server = spawn_server(pki.dir, *flags, "--history", str(tmp_path / "history.db"))
    line = server.wait_log(r"metrics on http://127\.0\.0\.1:\d+/metrics")
    match = re.search(r"(http://127\.0\.0\.1:\d+)/metrics", line)
    assert match is not None
    base = match.group(1)

    alice = ChatClient(server.port, client_context(pki.user("alice"), pki.ca_cert))
    alice.wait_for("welcome")
    bob = ChatClient(server.port, client_context(pki.user("bob"), pki.ca_cert))
    bob.wait_for("welcome")
    alice.send("hello bob")
    bob.wait_for("msg", text="hello bob")
    alice.send("x" * 100)  # over --max-line
    alice.wait_for("error", code="line_too_long")
    assert_refused(server.port, client_context(pki.other_ca_user("eve"), pki.ca_cert))
    server.wait_log(r"rejected handshake from .*")

    # The refused connection stays open a moment after that log line: the server drains it so
    # that eve gets the TLS alert (issue 9). Wait for it to go, as a scraper would see it go.
    deadline = time.monotonic() + DEADLINE
    samples = _scrape(base)
    while _value(samples, "mtlschat_connections_open") != 2:
        assert time.monotonic() < deadline, "the refused connection was never closed"
        time.sleep(0.05)
        samples = _scrape(base)
    assert _value(samples, "mtlschat_members_online") == 2
    assert _value(samples, "mtlschat_handshakes_total", result="ok", reason="") == 2
    refused = [
        value
        for (name, labels), value in samples.items()
        if name == "mtlschat_handshakes_total" and ("result", "refused") in labels
    ]
    assert sum(refused) == 1
    assert _value(samples, "mtlschat_lines_in_total") == 1
    assert _value(samples, "mtlschat_deliveries_total") >= 1
    assert _value(samples, "mtlschat_bytes_in_total") >= len("hello bob\n") + 101
    assert _value(samples, "mtlschat_bytes_out_total") > 0
    assert _value(samples, "mtlschat_bad_lines_total", code="line_too_long") == 1
    assert _value(samples, "mtlschat_slow_consumer_drops_total") == 0
    assert _value(samples, "mtlschat_crl_expired") == 0
    cert = x509.load_pem_x509_certificates(pki.server_bundle.read_bytes())[0]
    expiry = _value(samples, "mtlschat_expiry_timestamp_seconds", what="server_certificate")
    assert expiry == cert.not_valid_after_utc.timestamp()
    assert _value(samples, "mtlschat_expiry_timestamp_seconds", what="crl") > expiry - 400 * 86400
    assert _value(samples, "mtlschat_history_enabled") == 1
    assert _value(samples, "mtlschat_history_up") == 1
    assert _value(samples, "mtlschat_history_saved_lines_total") >= 1
    assert _value(samples, "mtlschat_history_store_bytes") > 0

    assert _get(base + "/healthz") == (200, "ok\n")
    assert _get(base + "/nothing")[0] == 404


def test_metrics_stay_off_by_default(
    pki: TestPKI, spawn_server: Callable[..., ServerProcess]
) -> None:
    server = spawn_server(pki.dir)
    assert "metrics on" not in server.log()


def test_pidfile_is_written_and_removed(
    tmp_path: os.PathLike[str], pki: TestPKI, spawn_server: Callable[..., ServerProcess]
) -> None:
    pidfile = os.path.join(tmp_path, "mtlschat.pid")
    server = spawn_server(pki.dir, "--pidfile", pidfile)
    with open(pidfile) as f:
        assert int(f.read()) == server.proc.pid
    assert server.stop() == 0
    assert not os.path.exists(pidfile)


def test_json_log_has_the_text_log_fields(
    pki: TestPKI, spawn_server: Callable[..., ServerProcess]
) -> None:
    server = spawn_server(pki.dir, "--log-format", "json")
    ChatClient(server.port, client_context(pki.user("alice"), pki.ca_cert)).wait_for("welcome")
    server.wait_log(r'"message": "connect alice from')
    server.stop()
    records = [json.loads(line) for line in server.log().splitlines()]
    assert all(set(r) == {"time", "level", "message"} for r in records)
    assert any(r["message"].startswith("listening on 127.0.0.1:") for r in records)
    assert {r["level"] for r in records} >= {"INFO"}


def test_metrics_close_without_start_releases_the_port(chat_server: RunningServer) -> None:
    """A start-up that fails after the exporter bound its port (e.g. a bad --pidfile) closes it
    without ever having served: close() must neither hang nor leave the port taken."""
    exporter = MetricsServer(chat_server.server, Address("127.0.0.1", 0), "room-1")
    port = exporter.address.port
    done = threading.Thread(target=exporter.close, daemon=True)
    done.start()
    done.join(DEADLINE)
    assert not done.is_alive(), "close() hung although start() never ran"
    with socket.create_server(("127.0.0.1", port)):  # the port is free again
        pass
