"""The baseline: a mutual-TLS broadcast chat as a Python developer would write it with asyncio.

Same identity (the client certificate's CN is your name) and the same line protocol for plain lines
as mtlschat's text mode: every line a client sends goes to every *other* client as
``[HH:MM:SS] <name> text``. Nothing else (no commands, rate limit, keepalive or buffer caps): the
``ssl`` context has CPython's default settings on purpose, since this is what we compare against.

    python bench/reference_server.py --ca pki/ca.crt --cert pki/server.pem --port 7444
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ssl
import sys
import time

clients: set[asyncio.StreamWriter] = set()


def common_name(cert: dict[str, tuple[tuple[tuple[str, str], ...], ...]]) -> str:
    """The CN from ``SSLSocket.getpeercert()``'s subject."""
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return "?"


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One client: broadcast each of its lines to everyone else until it goes away."""
    name = common_name(writer.get_extra_info("peercert") or {})
    clients.add(writer)
    try:
        while line := await reader.readline():
            text = line.rstrip(b"\r\n")
            if not text:
                continue
            out = b"[%s] <%s> %s\n" % (time.strftime("%H:%M:%S").encode(), name.encode(), text)
            for w in clients:
                if w is not writer:
                    w.write(out)
    except (ConnectionError, ssl.SSLError, asyncio.LimitOverrunError, ValueError):
        pass
    finally:
        clients.discard(writer)
        writer.close()


async def main() -> None:
    """Parse flags, listen, and serve forever."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7444)
    p.add_argument("--ca", required=True, help="CA certificate that signs client certificates")
    p.add_argument("--cert", required=True, help="server certificate + key (PEM bundle)")
    args = p.parse_args()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=args.ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(args.cert)
    server = await asyncio.start_server(handle, args.host, args.port, ssl=ctx)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"listening on {host}:{port}", file=sys.stderr, flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
