"""Re-run issue 9's attacks against a real server process on loopback and print the figures.

Each attack builds a throw-away PKI in a temporary directory, starts ``python -m mtlschat
server`` on 127.0.0.1 (port 0), attacks it for a bounded time from 127.0.0.0/8 only, and prints
one JSON object per run. Nothing here is a test: the numbers go to docs/security.md.

    .venv/bin/python bench/attacks.py reconnect   [--seconds 10]
    .venv/bin/python bench/attacks.py nonreaders  [--sessions 250] [--seconds 30] [--rate 0]
    .venv/bin/python bench/attacks.py idle        [--sockets 1200]
    .venv/bin/python bench/attacks.py flood       [--seconds 10]
    .venv/bin/python bench/attacks.py java        [--runs 10]   (needs javac)
    .venv/bin/python bench/attacks.py sslyze      [--sslyze-python /tmp/sslyze-venv/bin/python]
    .venv/bin/python bench/attacks.py all --repeat 3
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mtlschat.bench.spawn import SpawnedServer
from mtlschat.ca import CertificateAuthority
from mtlschat.chat.wire import ALPN_JSON
from mtlschat.client.tls import client_context

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[1]
Result = dict[str, Any]


class Server:
    """A server process with its own PKI; its stderr goes to a file we can count lines in."""

    def __init__(self, root: Path, *flags: str, users: int = 0) -> None:
        self.root = root
        self.ca = CertificateAuthority.init(root / "pki")
        self.ca.issue_server(("localhost", HOST))
        self.users: dict[str, Path] = {}
        for i in range(users):
            self.user(f"u{i}")
        self.log_path = root / "server.log"
        cmd = [sys.executable, "-m", "mtlschat", "server", "--pki", str(root / "pki")]
        cmd += ["--host", HOST, "--port", "0", *flags]
        if "--history" in server_help():  # (a baseline of older code may predate history)
            cmd += ["--history", "off"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MTLSCHAT_")}
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
        deadline = time.monotonic() + 30
        while not (m := re.search(r"listening on 127\.0\.0\.1:(\d+)", self.log())):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{self.log()}")
            time.sleep(0.05)
        self.port = int(m.group(1))

    def user(self, name: str) -> Path:
        """The bundle of member ``name`` (issued on first use)."""
        if name not in self.users:
            out = self.root / f"{name}.pem"
            self.users[name] = self.ca.issue_user(name, out=out).path
        return self.users[name]

    def context(self, name: str | None, alpn: str | None = ALPN_JSON) -> ssl.SSLContext:
        bundle = self.user(name) if name is not None else None
        return client_context(bundle, None, self.ca.paths.ca_cert, alpn=alpn)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def cpu_seconds(self) -> float:
        """User + system CPU the server process has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        SpawnedServer("mtlschat", self.proc, HOST, self.port).stop()  # (its SIGTERM, then KILL)


@functools.cache
def server_help() -> str:
    """``mtlschat server --help`` of the code under test (which flags it knows)."""
    cmd = [sys.executable, "-m", "mtlschat", "server", "--help"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout


@contextlib.contextmanager
def server(*flags: str, users: int = 0) -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="mtlschat-attack-") as tmp:
        s = Server(Path(tmp), *flags, users=users)
        try:
            yield s
        finally:
            s.stop()


def connect(
    srv: Server, name: str | None, *, source: str = HOST, alpn: str | None = ALPN_JSON
) -> ssl.SSLSocket:
    raw = socket.create_connection((HOST, srv.port), timeout=10, source_address=(source, 0))
    return srv.context(name, alpn).wrap_socket(raw, server_hostname="localhost")


def read_until(sock: ssl.SSLSocket, pattern: bytes, timeout: float = 10) -> bytes:
    """Read until ``pattern`` appears (or EOF / timeout); everything read."""
    buf = b""
    deadline = time.monotonic() + timeout
    while pattern not in buf and time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except (TimeoutError, ssl.SSLError, OSError):
            break
        if not data:
            break
        buf += data
    return buf


class Counter(threading.Thread):
    """A member who reads everything and counts the lines that match ``pattern``."""

    def __init__(self, sock: ssl.SSLSocket, pattern: bytes) -> None:
        super().__init__(daemon=True)
        self.sock, self.pattern, self.count, self.stop = sock, pattern, 0, False

    def run(self) -> None:
        self.sock.settimeout(0.2)
        buf = b""
        while not self.stop:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except (ssl.SSLError, OSError):
                return
            if not data:
                return
            buf += data
            *lines, buf = buf.split(b"\n")
            self.count += sum(self.pattern in line for line in lines)


def reconnect(seconds: float) -> Result:
    """9.1: one certificate loops connect, 20 lines, /quit; what reaches another member."""
    with server() as srv:
        observer = connect(srv, "observer")
        read_until(observer, b'"welcome"')
        counter = Counter(observer, b'"from":"mallory"')
        counter.start()
        cycles = refused = 0
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            try:
                sock = connect(srv, "mallory", alpn=None)
            except (ssl.SSLError, OSError):
                refused += 1
                continue
            hello = read_until(sock, b"\n", 5)
            if b"welcome" not in hello:
                refused += 1  # too many joins: error + bye, then closed
                sock.close()
                continue
            sock.sendall(b"".join(b"line %d\n" % i for i in range(20)) + b"/quit\n")
            read_until(sock, b"bye", 5)
            sock.close()
            cycles += 1
        elapsed = time.monotonic() - start
        time.sleep(1)  # let the last lines arrive
        counter.stop = True
        counter.join(2)
        observer.close()
    return {
        "attack": "reconnect",
        "seconds": round(elapsed, 1),
        "sessions_admitted": cycles,
        "sessions_refused": refused,
        "delivered": counter.count,
        "delivered_per_s": round(counter.count / elapsed, 2),
        "limit": "rate 5/s, burst 20",
    }


def nonreaders(sessions: int, seconds: float, rate: float) -> Result:
    """9.10: ``sessions`` members (one name each) who never read; one sender writes 1 KB lines
    as fast as the room lets it (``rate`` lines/s, 0 = no limit), one member reads everything.
    Server CPU% and RSS before and while they are connected; when each is cut off."""
    names = [f"n{i}" for i in range(sessions)]
    flags = ["--rate", str(rate)]
    if "--join-rate" in server_help():  # (older servers, for a baseline, have no join limit)
        flags += ["--join-rate", "0"]
    with server(*flags) as srv:
        for name in names:
            srv.user(name)
        sender = connect(srv, "sender", alpn=None)
        read_until(sender, b"\n")
        reader = connect(srv, "reader")
        read_until(reader, b'"welcome"')
        Counter(reader, b'"msg"').start()
        payload = b"x" * 1000 + b"\n"
        stop = threading.Event()

        def send() -> None:
            # Within the room's rate, or as fast as the server reads when there is none.
            pause = 1 / rate if rate else 0.0
            while not stop.is_set():
                try:
                    sender.sendall(payload if rate else payload * 16)
                except OSError:
                    return
                if pause:
                    time.sleep(pause)

        threading.Thread(target=send, daemon=True).start()
        time.sleep(2)
        cpu0, t0 = srv.cpu_seconds(), time.monotonic()
        time.sleep(3)
        base_cpu = (srv.cpu_seconds() - cpu0) / (time.monotonic() - t0) * 100
        base_rss = srv.rss_mb()
        held: list[socket.socket] = []
        joined: dict[str, float] = {}  # wall-clock time each never-reader's handshake ended
        started = time.monotonic()  # cuts may begin while the others are still connecting
        for name in names:
            raw = socket.socket()
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            raw.settimeout(10)
            raw.connect((HOST, srv.port))
            held.append(srv.context(name).wrap_socket(raw, server_hostname="localhost"))
            joined[name] = time.time()
        connected = time.monotonic() - started
        # The log's own time stamps say when each was cut (ms resolution, local time).
        cut = re.compile(r"^(\S+ \S+) \w+ disconnect (n\d+) from .*slow consumer", re.M)
        cut_at: dict[str, float] = {}
        cpu_prev, t_prev, rss_max = srv.cpu_seconds(), started, 0.0
        while time.monotonic() - started < seconds and len(cut_at) < sessions:
            time.sleep(0.2)
            for stamp, name in cut.findall(srv.log()):
                when = time.mktime(time.strptime(stamp.split(",")[0], "%Y-%m-%d %H:%M:%S"))
                when += int(stamp.split(",")[1]) / 1000
                cut_at.setdefault(name, when - joined.get(name, when))
            rss_max = max(rss_max, srv.rss_mb())
        now = time.monotonic()
        cpu = (srv.cpu_seconds() - cpu_prev) / (now - t_prev) * 100
        stop.set()
        for s in held:
            s.close()
        sender.close()
    times = sorted(cut_at.values())
    return {
        "attack": "nonreaders",
        "sessions": sessions,
        "rate": rate,
        "baseline_cpu_pct": round(base_cpu, 1),
        "baseline_rss_mb": round(base_rss, 1),
        "attack_cpu_pct": round(cpu, 1),
        "attack_rss_mb_max": round(rss_max, 1),
        "connecting_s": round(connected, 1),
        "watched_s": round(now - started, 1),
        "cut_off": len(times),
        "cut_after_s_median": round(statistics.median(times), 2) if times else None,
        "cut_after_s_max": round(times[-1], 2) if times else None,
    }


def idle(sockets: int, joins: int = 16) -> Result:
    """9.5: cert-less idle sockets from 127.0.0.2..; then ``joins`` members try to join."""
    with server("--max-connections", str(joins)) as srv:
        held: list[socket.socket] = []
        sources = [f"127.0.0.{2 + i}" for i in range(max(1, sockets // 30))]
        for i in range(sockets):
            s = socket.socket()
            s.bind((sources[i % len(sources)], 0))
            with contextlib.suppress(OSError):
                s.connect((HOST, srv.port))
            held.append(s)
        time.sleep(0.5)
        ok = 0
        times: list[float] = []
        for i in range(joins):
            t = time.monotonic()
            try:
                sock = connect(srv, f"member{i}")
                if b'"welcome"' in read_until(sock, b'"welcome"', 10):
                    ok += 1
                    times.append((time.monotonic() - t) * 1000)
            except (ssl.SSLError, OSError):
                continue
        for s in held:
            s.close()
    return {
        "attack": "idle",
        "idle_sockets": sockets,
        "from_addresses": len(sources),
        "joins_ok": ok,
        "joins": joins,
        "join_ms_median": round(statistics.median(times), 1) if times else None,
    }


def flood(seconds: float, threads: int = 4) -> Result:
    """9.9: handshakes without a certificate as fast as ``threads`` can make them."""
    with server() as srv:
        lines0 = len(srv.log().splitlines())
        attempts = [0] * threads
        stop = time.monotonic() + seconds

        def attacker(k: int) -> None:
            ctx = srv.context(None)
            while time.monotonic() < stop:
                attempts[k] += 1
                try:
                    s = socket.create_connection((HOST, srv.port), timeout=5)
                    t = ctx.wrap_socket(s, server_hostname="localhost")
                    t.recv(1)  # TLS 1.3: the refusal arrives after the client's Finished
                except (ssl.SSLError, OSError):
                    pass
                with contextlib.suppress(UnboundLocalError, OSError):
                    s.close()

        workers = [threading.Thread(target=attacker, args=(k,)) for k in range(threads)]
        start = time.monotonic()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed = time.monotonic() - start
        time.sleep(0.5)
        lines = srv.log().splitlines()[lines0:]
        summaries = [ln for ln in lines if "more refused" in ln]
    return {
        "attack": "flood",
        "seconds": round(elapsed, 1),
        "handshakes": sum(attempts),
        "handshakes_per_s": round(sum(attempts) / elapsed),
        "log_lines": len(lines),
        "log_lines_per_s": round(len(lines) / elapsed, 2),
        "summary_lines": len(summaries),
    }


def java(runs: int, probe: str) -> Result:
    """9.7: what a Java client with a revoked certificate is told."""
    from mtlschat.ca.bundle import load_bundle
    from mtlschat.ca.export import export_pkcs12, java_truststore

    probe_src = Path(probe)
    if shutil.which("javac") is None or not probe_src.exists():
        return {"attack": "java", "skipped": "javac or the probe is missing"}
    with server() as srv:
        bundle = srv.user("mallory")
        srv.ca.revoke("mallory")
        os.kill(srv.proc.pid, 1)  # SIGHUP: reload the CRL
        deadline = time.monotonic() + 10
        while "reload" not in srv.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        classes = srv.root / "java"
        subprocess.run(["javac", "-d", str(classes), str(probe_src)], check=True, timeout=120)
        loaded = load_bundle(bundle, None)
        ks, ts = srv.root / "m.p12", srv.root / "t.p12"
        ks.write_bytes(export_pkcs12(loaded, b"changeit"))
        ts.write_bytes(java_truststore(loaded.chain[0], b"changeit"))
        seen: dict[str, int] = {}
        for i in range(runs):
            cmd = ["java", "-cp", str(classes), "ChatProbe", "localhost", str(srv.port)]
            cmd += [str(ks), str(ts), "changeit", "TLSv1.3" if i % 2 else "TLSv1.2"]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.strip()
            seen[out] = seen.get(out, 0) + 1
    return {"attack": "java", "runs": runs, "outcomes": seen}


def sslyze(python: str) -> Result:
    """9.6: bench/sslyze_check.py, run by the Python of a throw-away venv that has sslyze."""
    with server() as srv:
        pem = srv.user("scan").read_text()  # sslyze wants the key and the chain apart
        blocks = re.findall(r"-----BEGIN [^-]+-----.*?-----END [^-]+-----\n", pem, re.S)
        key, cert = srv.root / "scan.key", srv.root / "scan.crt"
        key.write_text("".join(b for b in blocks if "PRIVATE KEY" in b))
        cert.write_text("".join(b for b in blocks if "CERTIFICATE" in b))
        script = REPO / "bench" / "sslyze_check.py"
        cmd = [python, str(script), str(srv.port), str(cert), str(key), str(srv.ca.paths.ca_cert)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    return {"attack": "sslyze", "exit": done.returncode, "report": done.stdout.splitlines()}


ATTACKS: dict[str, Callable[[argparse.Namespace], Result]] = {
    "reconnect": lambda a: reconnect(a.seconds),
    "nonreaders": lambda a: nonreaders(a.sessions, a.seconds, a.rate),
    "idle": lambda a: idle(a.sockets),
    "flood": lambda a: flood(a.seconds),
    "java": lambda a: java(a.runs, a.probe),
    "sslyze": lambda a: sslyze(a.sslyze_python),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("attack", choices=[*ATTACKS, "all"])
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--sessions", type=int, default=250)
    parser.add_argument("--sockets", type=int, default=1200)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--rate", type=float, default=0.0, help="nonreaders: the room's rate")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--probe", default=str(REPO / "tests" / "net" / "java" / "ChatProbe.java"))
    parser.add_argument("--sslyze-python", default="/tmp/sslyze-venv/bin/python")
    args = parser.parse_args()
    names = [n for n in ATTACKS if n != "sslyze"] if args.attack == "all" else [args.attack]
    for _ in range(args.repeat):
        for name in names:
            if args.seconds is None:
                args.seconds = 30.0 if name == "nonreaders" else 10.0
            print(json.dumps(ATTACKS[name](args)), flush=True)
            if args.attack == "all":
                args.seconds = None


if __name__ == "__main__":
    main()
