"""The floor: the least a selectors loop can do to relay mutual-TLS chat lines, for scale.

Issue 9 measured mtlschat against "a 120-line selectors loop (same machine, same run, same
OpenSSL, no chat protocol)". This is such a loop, for the bench to run in the same invocation:
non-blocking ``SSLSocket``s in one selector, each readable peer read until it would block, its
lines sent to every *other* peer as ``[HH:MM:SS] <name> text`` (the reference's and mtlschat's
text mode, so the bench can check every line and who said it), each peer's share written with one
``send`` per round. No commands, limits, keepalive, caps or logging: what is left of mtlschat's
cost above this is the chat protocol's. With ``--raw`` it relays each round's whole lines as they
came, with no prefix at all (fewer bytes than any chat server sends: the very floor).

    python bench/floor_server.py --ca pki/ca.crt --cert pki/server.pem --port 7445 [--raw]
"""

from __future__ import annotations

import argparse
import contextlib
import selectors
import socket
import ssl
import sys
import time

READ_BUDGET = 256 * 1024  # bytes read from one peer per round (fairness between senders)


class Peer:
    """One client: its socket, name (CN), unread partial line and unsent output."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.sock = sock
        self.name = b""
        self.ready = False  # handshake done
        self.partial = b""
        self.out: list[bytes] = []  # (the first is retried as it is after a blocked send)
        self.writing = False  # registered for EVENT_WRITE (out did not all go)


def common_name(sock: ssl.SSLSocket) -> bytes:
    """The CN of the peer's certificate."""
    for rdn in (sock.getpeercert() or {}).get("subject", ()):
        for attr in rdn:
            if attr[0] == "commonName":
                return str(attr[1]).encode()
    return b"?"


def serve(ctx: ssl.SSLContext, host: str, port: int, raw: bool = False) -> None:
    """Accept, relay, repeat (until killed); ``raw``: relay lines without the chat prefix."""
    sel = selectors.DefaultSelector()
    listener = socket.create_server((host, port), backlog=4096)
    listener.setblocking(False)
    sel.register(listener, selectors.EVENT_READ, None)
    bound = listener.getsockname()
    print(f"listening on {bound[0]}:{bound[1]}", file=sys.stderr, flush=True)
    peers: dict[int, Peer] = {}

    def drop(p: Peer) -> None:
        peers.pop(p.sock.fileno(), None)
        sel.unregister(p.sock)
        p.sock.close()

    while True:
        said: list[tuple[Peer, bytes]] = []  # this round's lines, by sender
        blocked: set[Peer] = set()
        for key, mask in sel.select():
            if key.data is None:  # the listener
                with contextlib.suppress(BlockingIOError):
                    while True:
                        tcp, _ = listener.accept()
                        tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        s = ctx.wrap_socket(tcp, server_side=True, do_handshake_on_connect=False)
                        s.setblocking(False)
                        peer = Peer(s)
                        peers[s.fileno()] = peer
                        sel.register(s, selectors.EVENT_READ, peer)
                continue
            p: Peer = key.data
            if not p.ready:
                try:
                    p.sock.do_handshake()
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    continue
                except OSError:
                    drop(p)
                    continue
                p.ready, p.name = True, common_name(p.sock)
            if mask & selectors.EVENT_WRITE:
                blocked.add(p)
            if not mask & selectors.EVENT_READ:
                continue
            chunks = [p.partial]
            got, closed = 0, False
            try:
                while got < READ_BUDGET:
                    data = p.sock.recv(65536)
                    if not data:
                        closed = True
                        break
                    chunks.append(data)
                    got += len(data)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
            except OSError:
                closed = True
            data = b"".join(chunks)
            if raw:
                cut = data.rfind(b"\n") + 1
                p.partial = data[cut:]
                if cut:
                    said.append((p, data[:cut]))
                lines = []
            else:
                lines = data.split(b"\n")
                p.partial = lines.pop()
                lines = [x.rstrip(b"\r") for x in lines if x.strip()]
            if lines:
                head = b"[%s] <%s> " % (time.strftime("%H:%M:%S").encode(), p.name)
                said.append((p, head + (b"\n" + head).join(lines) + b"\n"))
            if closed:
                drop(p)
        # The round's output, encoded once: every peer that said nothing shares one bytes.
        everything = b"".join(t for _, t in said)
        for q in list(peers.values()) if said else blocked:
            if not q.ready:
                continue
            if said:
                mine = any(who is q for who, _ in said)
                q.out.append(b"".join(t for who, t in said if who is not q) if mine else everything)
                if q.writing and q not in blocked:
                    continue  # its socket is full: wait until the selector says writable
            try:
                while q.out:  # without partial writes a send that returns took it all
                    q.sock.send(q.out[0])
                    del q.out[0]
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                pass
            except OSError:
                drop(q)
                continue
            if q.writing != bool(q.out):  # (an epoll_ctl only when that changes)
                q.writing = bool(q.out)
                sel.modify(q.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE * q.writing), q)


def main() -> None:
    """Parse flags and serve."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7445)
    p.add_argument("--ca", required=True, help="CA certificate that signs client certificates")
    p.add_argument("--cert", required=True, help="server certificate + key (PEM bundle)")
    p.add_argument("--raw", action="store_true", help="relay lines as they are (no prefix)")
    args = p.parse_args()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=args.ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(args.cert)
    serve(ctx, args.host, args.port, args.raw)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
