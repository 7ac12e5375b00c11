"""``--metrics HOST:PORT``: Prometheus text exposition (``/metrics``) and ``/healthz``.

The event loop never does metrics work: it bumps plain integers (:class:`~mtlschat.net.stats.
LoopStats`, :class:`~mtlschat.chat.settings.RoomCounters`) as it goes, and the collector below
reads them at scrape time, in prometheus_client's HTTP thread. Reading an int or copying a
dict is atomic under the GIL, so no lock is taken and the loop pays nothing per scrape.

Every sample carries a ``node`` label, so several nodes can be scraped into one series set.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from mtlschat import __version__
from mtlschat.address import Address, parse_address

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIEnvironment

    from mtlschat.net.server import ChatServer

log = logging.getLogger("mtlschat.server")

HEALTHY_WITHIN = 10.0  # /healthz fails when the loop has not ticked for this many seconds


def metrics_address(text: str) -> Address:
    """``PORT`` (on 127.0.0.1: metrics stay local unless asked), ``HOST:PORT`` or ``[V6]:PORT``.

    Raises :class:`ValueError` with a one-line message.
    """
    if text.isdigit():
        port = int(text)
        if port > 65535:
            raise ValueError(f"bad metrics port {text!r}: use 0-65535")
        return Address("127.0.0.1", port)
    if text.endswith(":0"):  # (parse_address refuses port 0, which tests use to pick one)
        return Address(parse_address(text[:-2] + ":1").host, 0)
    return parse_address(text)


class ServerCollector(Collector):
    """Reads one server's counters at scrape time."""

    def __init__(self, server: ChatServer, node: str) -> None:
        self.server = server
        self.node = node

    def collect(self) -> Iterator[Metric]:
        """One family per metric, built from a snapshot of plain counters."""
        server, node = self.server, self.node
        stats, room = server.stats, server.room
        counters = room.counters
        labels = ["node"]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(f"mtlschat_{name}", doc, labels=labels)
            family.add_metric([node], value)
            return family

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(f"mtlschat_{name}", doc, labels=labels)
            family.add_metric([node], value)
            return family

        def by(name: str, doc: str, label: str, counts: dict[str, int]) -> CounterMetricFamily:
            family = CounterMetricFamily(f"mtlschat_{name}", doc, labels=[*labels, label])
            for key, value in sorted(dict(counts).items()):  # dict(): an atomic copy
                family.add_metric([node, key], value)
            return family

        info = GaugeMetricFamily(
            "mtlschat_info", "The server's version.", labels=[*labels, "version"]
        )
        info.add_metric([node, __version__], 1)
        yield info
        yield gauge(
            "connections_open",
            "TCP connections, handshaking ones included.",
            server.connection_count,
        )
        yield gauge(
            "handshakes_pending",
            "Connections still in their TLS handshake.",
            server.handshakes_pending,
        )
        yield gauge("members_online", "Distinct names in the room.", len(room.online()))
        handshakes = CounterMetricFamily(
            "mtlschat_handshakes",
            "TLS handshakes by result, and refusals by reason.",
            labels=[*labels, "result", "reason"],
        )
        handshakes.add_metric([node, "ok", ""], stats.handshakes_ok)
        for reason, value in sorted(dict(stats.handshakes_refused).items()):
            handshakes.add_metric([node, "refused", reason], value)
        yield handshakes
        yield by(
            "joins_refused",
            "Verified sessions the room refused, by error code.",
            "code",
            counters.refused,
        )
        yield counter(
            "over_capacity",
            "Connections closed at once: max-connections reached.",
            stats.over_capacity,
        )
        yield counter(
            "lines_in", "Chat lines accepted (messages, actions, private).", counters.messages
        )
        yield counter(
            "deliveries", "Lines handed to clients (one per recipient).", counters.deliveries
        )
        yield counter("bytes_in", "Plaintext bytes read from clients.", stats.bytes_in)
        yield counter("bytes_out", "Plaintext bytes written to clients.", stats.bytes_out)
        yield counter(
            "slow_consumer_drops", "Clients cut off for not reading.", stats.slow_consumers
        )
        yield counter(
            "rate_limited_lines", "Lines dropped by the rate limit.", counters.rate_limited
        )
        yield by(
            "bad_lines", "Lines refused (line_too_long, bad_utf8).", "code", counters.bad_lines
        )
        reloads = CounterMetricFamily(
            "mtlschat_reloads", "PKI reloads by result.", labels=[*labels, "result"]
        )
        reloads.add_metric([node, "ok"], stats.reloads_ok)
        reloads.add_metric([node, "failed"], stats.reloads_failed)
        yield reloads
        yield from self._trust(gauge)
        yield from self._history(gauge, counter)
        yield from self._redis(gauge, counter)

    def _trust(self, gauge: Callable[[str, str, float], GaugeMetricFamily]) -> Iterable[Metric]:
        trust = self.server.trust
        expiry = GaugeMetricFamily(
            "mtlschat_expiry_timestamp_seconds",
            "When the server certificate, the CA certificate and the CRL (nextUpdate) expire.",
            labels=["node", "what"],
        )
        expiry.add_metric([self.node, "server_certificate"], trust.server.not_after.timestamp())
        ca_end = min(ca.not_valid_after_utc for ca in trust.ca_certs)
        expiry.add_metric([self.node, "ca_certificate"], ca_end.timestamp())
        if trust.crl is not None and trust.crl.next_update is not None:
            expiry.add_metric([self.node, "crl"], trust.crl.next_update.timestamp())
        yield expiry
        yield gauge(
            "crl_expired",
            "1 while the CRL is past its nextUpdate: run `mtlschat ca crl` (revocation is then "
            "checked by the server against it).",
            1 if trust.stale_crl else 0,
        )

    def _history(
        self,
        gauge: Callable[[str, str, float], GaugeMetricFamily],
        counter: Callable[[str, str, float], CounterMetricFamily],
    ) -> Iterable[Metric]:
        journal = self.server.history
        yield gauge(
            "history_enabled", "1 if the server keeps a history.", 0 if journal is None else 1
        )
        if journal is None:
            return
        yield gauge(
            "history_up",
            "1 while lines are being saved; 0 while the store fails (they wait in memory).",
            1 if journal.degraded is None else 0,
        )
        yield counter("history_saved_lines", "Lines saved to the history store.", journal.saved)
        yield counter("history_lost_lines", "Lines that never reached the store.", journal.dropped)
        location = journal.store.location
        try:
            size = os.stat(location).st_size
        except (OSError, ValueError):
            return
        yield gauge("history_store_bytes", "Size of the history file.", size)

    def _redis(
        self,
        gauge: Callable[[str, str, float], GaugeMetricFamily],
        counter: Callable[[str, str, float], CounterMetricFamily],
    ) -> Iterable[Metric]:
        engine = self.server.engine
        if engine is None:
            return
        c = engine.counters
        yield gauge(
            "redis_up",
            "1 while the room delivers through Redis; 0 while it is degraded (lines refused).",
            1 if engine.ready and self.server.room.degraded is None else 0,
        )
        yield counter("redis_batches", "Publish scripts sent to Redis (one per round).", c.batches)
        yield counter("redis_published_records", "Records published to Redis.", c.published)
        yield counter(
            "redis_delivered_records", "Records of the room's log delivered here.", c.delivered
        )
        yield counter(
            "redis_pushed_entries",
            "Log entries taken as Redis pushed them (this node was caught up).",
            c.pushed,
        )
        yield counter(
            "redis_catch_up_reads",
            "Reads of the room's log while behind (connecting, reconnecting, members lagging).",
            c.reads,
        )
        yield counter(
            "redis_refused_records",
            "Records refused (shared rate limit, Redis away, history reset): senders were told.",
            c.refused,
        )
        yield counter("redis_resent_batches", "Batches re-sent after a lost reply.", c.resent)
        yield counter(
            "redis_epoch_changes", "Times Redis was found to have lost its data.", c.epochs
        )


def snapshot(server: ChatServer) -> dict[str, float]:
    """The metrics' numbers now, by sample name and labels (node left out), for ``mtlschat
    admin stats``: ``{"lines_in_total": 12, "handshakes_total{reason=,result=ok}": 3, ...}``.
    """
    numbers: dict[str, float] = {}
    for family in ServerCollector(server, "").collect():
        for sample in family.samples:
            name = sample.name.removeprefix("mtlschat_")
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()) if k != "node")
            numbers[f"{name}{{{labels}}}" if labels else name] = sample.value
    return numbers


class MetricsServer:
    """The HTTP endpoint, on a daemon thread of its own."""

    def __init__(self, server: ChatServer, address: Address, node: str) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ServerCollector(server, node))
        self._server = server
        metrics = make_wsgi_app(self.registry)

        def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path == "/metrics":
                exposition: Iterable[bytes] = metrics(environ, start_response)
                return exposition
            if path == "/healthz":
                age = time.monotonic() - server.stats.heartbeat
                ok = age < HEALTHY_WITHIN
                status = "200 OK" if ok else "503 Service Unavailable"
                text = "ok\n" if ok else f"event loop stalled for {age:.0f}s\n"
                start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
                return [text.encode()]
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"try /metrics or /healthz\n"]

        class Quiet(WSGIRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes every few seconds are not worth a log line

        class Server(ThreadingWSGIServer):
            address_family = socket.AF_INET6 if ":" in address.host else socket.AF_INET

        self._httpd = make_server(address.host, address.port, app, Server, handler_class=Quiet)
        self.address = Address(address.host, self._httpd.server_port)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="metrics", daemon=True
        )

    def start(self) -> None:
        """Serve in the background."""
        self._thread.start()

    def close(self) -> None:
        """Stop serving and release the port (also when :meth:`start` never ran)."""
        if self._thread.is_alive():  # shutdown() waits for serve_forever: forever if never run
            self._httpd.shutdown()
        self._httpd.server_close()
