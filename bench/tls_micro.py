"""Micro-benchmark of how the server hands TLS to the kernel: CPU per byte of each way, A/B'd
inside ONE process so that the noise of a shared machine falls on every way alike.

``write``: ``--conns`` loopback connections per way, each with the server's TLS context
(:func:`mtlschat.net.tls.server_context`) and send buffer (128 KiB, as ``--send-buffer``);
every round each way gives one ``--size`` write (a burst round for one receiver: ~100 KB) to
each of its connections the kernel has room for, the ways in alternating order; this thread's
CPU time during its part of the round is charged to that way. The peers are forked processes
that discard the ciphertext. Ways:

* ``sslsocket``: ``SSLSocket.send`` (what the server does: OpenSSL writes each 16 KB record
  with a ``write()`` of its own);
* ``bio``: ``SSLObject.write`` of the whole round into a memory BIO, then one ``send``;
* ``records``: ``SSLObject.write`` per 16 KB record, ``outgoing.read()`` after each, one
  ``sendmsg`` of them all (the BIO never grows past one record);
* ``tcp`` and ``tcp16``: no TLS, one ``send`` of the round, or one per 16 KB (the syscalls'
  share).

``read``: the peers send 1 KB TLS records as fast as they can; each round reads every readable
connection until it would block (at most 256 KiB): ``sslsocket`` (``SSLSocket.recv``, two
``read()`` per record) or ``bio`` (one ``recv`` into the incoming BIO, then ``SSLObject.read``
until it wants more).

    .venv/bin/python bench/tls_micro.py write --ways sslsocket,bio,records,tcp,tcp16
    .venv/bin/python bench/tls_micro.py read --ways sslsocket,bio

Prints each repeat, the medians (ns per byte) and the median of the per-repeat ratios against
the first way.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import ssl
import statistics
import tempfile
import time
from pathlib import Path

from mtlschat.bench.pki import prepare_pki
from mtlschat.net.tls import server_context

SEND_BUFFER = 128 * 1024  # the server's --send-buffer default
RECORD = 16384  # TLS's largest record
READ_BUDGET = 256 * 1024  # the server's per-connection read budget per round
LINE = b"m" * 83 + b"\n"  # about one delivered chat line


def peer(port: int, ctx: ssl.SSLContext | None, send: bool) -> None:
    """The far end (in a child process): discard what comes, or send 1 KB records flat out."""
    raw = socket.create_connection(("127.0.0.1", port))
    try:
        if ctx is None:
            while raw.recv(1 << 20):
                pass
        else:
            tls = ctx.wrap_socket(raw)
            if send:
                record = b"x" * 1023 + b"\n"
                while True:
                    tls.sendall(record)
            tls.recv(1)  # the server's first byte: the handshake is over; then raw ciphertext
            plain = socket.socket(fileno=tls.detach())
            while plain.recv(1 << 20):
                pass
    except OSError:
        pass
    os._exit(0)


class Conn:
    """The server's end of one connection, written (or read) one way."""

    def __init__(self, way: str, raw: socket.socket, ctx: ssl.SSLContext) -> None:
        self.way = way
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        self.rest: bytes | memoryview = b""  # what the kernel did not take (or a blocked write)
        self.sock: socket.socket = raw
        if way in ("bio", "records"):
            self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_side=True)
            while True:
                try:
                    self.tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    raw.sendall(self.outgoing.read())
                    self.incoming.write(raw.recv(65536))
            self.tls.write(b"!")
            raw.sendall(self.outgoing.read())
        elif way == "sslsocket":
            self.sock = ctx.wrap_socket(raw, server_side=True)
            self.sock.send(b"!")
        self.sock.setblocking(False)

    def _send(self, data: bytes | memoryview | list[bytes]) -> None:
        try:
            sent = self.sock.sendmsg(data) if isinstance(data, list) else self.sock.send(data)
        except BlockingIOError:
            sent = 0
        size = sum(map(len, data)) if isinstance(data, list) else len(data)
        if sent < size:
            self.rest = memoryview(b"".join(data) if isinstance(data, list) else data)[sent:]

    def write(self, payload: bytes) -> int:
        """One round: finish the last write if it is pending, else write ``payload``."""
        way = self.way
        if self.rest and way != "sslsocket":
            rest, self.rest = self.rest, b""
            self._send(rest)
            return 0
        if way == "sslsocket":
            assert isinstance(self.sock, ssl.SSLSocket)
            data = self.rest or payload  # (a blocked write is retried with the same object)
            try:
                self.sock.send(data)
            except ssl.SSLWantWriteError:
                self.rest = data
                return 0
            self.rest = b""
            return len(data)
        view = memoryview(payload)
        if way == "bio":
            self.tls.write(payload)
            self._send(self.outgoing.read())
        elif way == "records":
            parts = []
            for i in range(0, len(view), RECORD):
                self.tls.write(view[i : i + RECORD])
                parts.append(self.outgoing.read())
            self._send(parts)
        else:  # tcp, tcp16
            step = RECORD if way == "tcp16" else len(view)
            offset = 0
            while offset < len(view):
                piece = view[offset : offset + step]
                try:
                    sent = self.sock.send(piece)
                except BlockingIOError:
                    sent = 0
                offset += sent
                if sent < len(piece):
                    self.rest = view[offset:]
                    break
        return len(payload)

    def read(self) -> int:
        """Read until the socket would block (at most the budget); plaintext bytes read."""
        got = 0
        if self.way == "sslsocket":
            try:
                while got < READ_BUDGET:
                    data = self.sock.recv(65536)
                    if not data:
                        break
                    got += len(data)
            except ssl.SSLWantReadError:
                pass
            return got
        total = 0
        while total < READ_BUDGET:
            try:
                data = self.sock.recv(READ_BUDGET)
            except BlockingIOError:
                break
            if not data:
                break
            total += len(data)
            self.incoming.write(data)
            if len(data) < READ_BUDGET:
                break
        try:
            while data := self.tls.read(65536):
                got += len(data)
        except ssl.SSLWantReadError:
            pass
        return got


def one_repeat(args: argparse.Namespace, pki_dir: Path, ways: list[str]) -> dict[str, float]:
    """Connect ``args.conns`` peers per way, run the rounds; ns per byte of each way."""
    pki = prepare_pki(pki_dir, 1, 0)
    server_ctx = server_context(pki.server_bundle, pki.ca_cert, None)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False  # (the CA is checked; the name does not matter here)
    client_ctx.load_verify_locations(pki.ca_cert)
    client_ctx.load_cert_chain(pki.receivers[0])
    listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
    port = listener.getsockname()[1]
    conns: dict[str, list[Conn]] = {way: [] for way in ways}
    children = []
    try:
        for way in ways:
            for _ in range(args.conns):
                if (pid := os.fork()) == 0:
                    listener.close()
                    tls = None if way.startswith("tcp") else client_ctx
                    peer(port, tls, args.what == "read")
                children.append(pid)
                raw, _ = listener.accept()
                conns[way].append(Conn(way, raw, server_ctx))
        payload = (LINE * (args.size // len(LINE) + 1))[: args.size]
        cpu = dict.fromkeys(ways, 0)
        done = dict.fromkeys(ways, 0)
        for r in range(args.rounds):
            for way in ways if r % 2 == 0 else ways[::-1]:
                socks = [c.sock for c in conns[way]]
                if args.what == "write":
                    ready = set(select.select([], socks, [], 1.0)[1])
                else:
                    ready = set(select.select(socks, [], [], 1.0)[0])
                t0 = time.thread_time_ns()
                for c in conns[way]:
                    if c.sock in ready:
                        done[way] += c.write(payload) if args.what == "write" else c.read()
                cpu[way] += time.thread_time_ns() - t0
        return {way: cpu[way] / done[way] for way in ways if done[way]}
    finally:
        for cs in conns.values():
            for c in cs:
                c.sock.close()
        listener.close()
        for pid in children:
            os.waitpid(pid, 0)


def main(argv: list[str] | None = None) -> None:
    """Run the repeats and print the medians."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("write", "read"))
    ap.add_argument("--ways", default="sslsocket,bio,records", help="comma-separated")
    ap.add_argument("--conns", type=int, default=20, help="connections per way")
    ap.add_argument("--size", type=int, default=100_000, help="bytes per write (write)")
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args(argv)
    ways = args.ways.split(",")
    results: dict[str, list[float]] = {way: [] for way in ways}
    with tempfile.TemporaryDirectory(prefix="tls-micro-") as tmp:
        for i in range(args.repeat):
            got = one_repeat(args, Path(tmp), ways)
            for way, value in got.items():
                results[way].append(value)
            row = "  ".join(f"{way} {value:.3f}" for way, value in got.items())
            print(f"repeat {i + 1}: {row} ns/byte", flush=True)
    first = ways[0]
    print(f"\n{args.what}, {args.repeat} repeats, load {os.getloadavg()[0]:.1f}: medians")
    for way in ways:
        values = results[way]
        ratios = [v / b for v, b in zip(values, results[first], strict=True)]
        print(
            f"  {way:10} {statistics.median(values):.3f} ns/byte "
            f"({min(values):.3f}-{max(values):.3f}), x{statistics.median(ratios):.3f} {first}"
        )


if __name__ == "__main__":
    main()
