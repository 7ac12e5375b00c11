"""What a benchmark measured, as types, and the one table of the figures drawn from it.

The JSON report (``mtlschat bench --json``, ``bench/results/*.json``) is these dataclasses as
dicts, in the layout of report version 1: :meth:`BenchReport.to_json` writes it and
:meth:`BenchReport.from_json` / :meth:`RunResult.from_json` read it back (``bench/compare.py``,
``bench/plot.py``).
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from mtlschat.bench.workload import Workload

REPORT_VERSION = 1

T = TypeVar("T")


@dataclass(frozen=True)
class ConnectStats:
    """Connecting every receiver (TCP + TLS handshake)."""

    connections: int
    failed: int
    seconds: float
    handshakes_per_s: float
    # The receivers' own CPU while connecting: client handshakes cost about what the server's
    # do, so on a small machine the load generator can be what limits handshakes/s.
    load_cpu_per_handshake_ms: float
    workers: int = 0  # load processes the receivers were spread over
    sources: list[str] = field(default_factory=list)  # local addresses they connected from


@dataclass(frozen=True)
class ServerUsage:
    """The server process's CPU and memory; known only when it runs on this machine."""

    pid: int
    rss_idle_kb: float
    rss_connected_kb: float | None = None
    rss_per_conn_kb: float | None = None
    cpu_per_handshake_ms: float | None = None
    cpu_s: float | None = None  # while delivering
    cpu_per_delivery_us: float | None = None


@dataclass(frozen=True)
class Latency:
    """Send-to-receive latency of the sampled deliveries, in milliseconds."""

    p50: float
    p99: float
    max: float
    samples: int


@dataclass(frozen=True)
class LoadCPU:
    """CPU seconds of the load processes over the whole run: are they the bottleneck?"""

    receivers: float
    senders: float


@dataclass(frozen=True)
class Delivery:
    """Sending and receiving the messages (every workload but ``connect``)."""

    sent: int
    expected: int
    deliveries: int
    lost: int
    gaps: int
    out_of_order: int
    dropped: int
    reads: int
    load_cpu_s: LoadCPU
    elapsed_s: float
    deliveries_per_s: float
    latency_ms: Latency


@dataclass(frozen=True)
class StormStats:
    """The ``storm`` workload: the server restarted under every member, all reconnecting."""

    restart_s: float  # SIGTERM to the old server .. the new one listening
    back_s: float | None  # the new one listening .. the last member back in (None: not all)
    back: int  # members back in
    attempts: int  # reconnect attempts (the real client's backoff after each failure)
    failed_attempts: int  # refused, reset or evicted on the way
    samples: list[int]  # per load process: latency samples taken while others reconnected
    latency_ms: Latency  # lines to the probe (a member back in early), while the others reconnected
    # the same for every receiver back in, measured by load processes that were busy with
    # their own handshakes meanwhile: an upper bound
    latency_load_ms: Latency
    rss_per_conn_kb: float | None  # the restarted server's, once all are back
    server_cpu_s: float | None  # the restarted server's CPU until all were back


@dataclass(frozen=True)
class RunResult:
    """One workload against one server."""

    target: str  # "mtlschat", "reference", "mtlschat-history" or "external"
    address: str
    workload: str
    params: Workload
    connect: ConnectStats
    server: ServerUsage | None
    delivery: Delivery | None  # None for the connect workload
    errors: list[str] = field(default_factory=list)
    storm: StormStats | None = None

    @property
    def receivers(self) -> int:
        """How many receivers the workload asked for."""
        return self.params.receivers

    def same_workload(self, other: RunResult) -> bool:
        """Whether ``other`` ran the same workload with the same parameters (a ratio's pair)."""
        return self.workload == other.workload and self.params == other.params

    def to_json(self) -> dict[str, Any]:
        """The report's layout: the delivery figures sit at the top level of the run."""
        out: dict[str, Any] = {
            "target": self.target,
            "address": self.address,
            "workload": self.workload,
            "params": asdict(self.params),
            "connect": asdict(self.connect),
            "server": None if self.server is None else asdict(self.server),
        }
        if self.delivery is not None:
            out.update(asdict(self.delivery))
        if self.storm is not None:
            out["storm"] = asdict(self.storm)
        out["errors"] = list(self.errors)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunResult:
        """Read a run back from a report (raises KeyError/TypeError if it is not one)."""
        return cls(
            target=data["target"],
            address=data.get("address", ""),
            workload=data["workload"],
            params=_load(Workload, data["params"]),
            connect=_load(ConnectStats, data["connect"]),
            server=None if data.get("server") is None else _load(ServerUsage, data["server"]),
            delivery=_load(Delivery, data) if "deliveries" in data else None,
            errors=list(data.get("errors", [])),
            storm=None if data.get("storm") is None else _load(StormStats, data["storm"]),
        )


@dataclass(frozen=True)
class Figure:
    """One number read off a run: its name in the report's ratios, a label, its decimals."""

    key: str
    label: str
    digits: int
    get: Callable[[RunResult], float | None]
    ratio: bool = True  # part of --compare's ratios


def _delivery(get: Callable[[Delivery], float]) -> Callable[[RunResult], float | None]:
    return lambda run: None if run.delivery is None else get(run.delivery)


def _server(get: Callable[[ServerUsage], float | None]) -> Callable[[RunResult], float | None]:
    return lambda run: None if run.server is None else get(run.server)


FIGURES: tuple[Figure, ...] = (
    Figure("deliveries", "deliveries", 0, _delivery(lambda d: d.deliveries), ratio=False),
    Figure("lost", "lost", 0, _delivery(lambda d: d.lost), ratio=False),
    Figure("deliveries_per_s", "deliveries/s", 0, _delivery(lambda d: d.deliveries_per_s)),
    Figure("latency_ms.p50", "latency p50 (ms)", 2, _delivery(lambda d: d.latency_ms.p50)),
    Figure("latency_ms.p99", "latency p99 (ms)", 2, _delivery(lambda d: d.latency_ms.p99)),
    Figure(
        "latency_ms.max", "latency max (ms)", 2, _delivery(lambda d: d.latency_ms.max), ratio=False
    ),
    Figure("connect.connections", "connections", 0, lambda r: r.connect.connections, ratio=False),
    Figure("connect.seconds", "time to connect all (s)", 3, lambda r: r.connect.seconds),
    Figure(
        "connect.handshakes_per_s",
        "handshakes/s",
        0,
        lambda r: r.connect.handshakes_per_s,
        ratio=False,
    ),
    Figure("connect.workers", "load processes", 0, lambda r: r.connect.workers, ratio=False),
    Figure(
        "server.cpu_per_delivery_us",
        "server CPU per delivery (us)",
        3,
        _server(lambda s: s.cpu_per_delivery_us),
    ),
    Figure(
        "server.cpu_per_handshake_ms",
        "server CPU per handshake (ms)",
        2,
        _server(lambda s: s.cpu_per_handshake_ms),
    ),
    Figure(
        "server.rss_per_conn_kb",
        "server RSS per connection (KB)",
        1,
        _server(lambda s: s.rss_per_conn_kb),
    ),
    Figure(
        "server.rss_connected_kb",
        "server RSS connected (KB)",
        0,
        _server(lambda s: s.rss_connected_kb),
        ratio=False,
    ),
)
RATIO_FIGURES = tuple(f for f in FIGURES if f.ratio)


def figure(key: str) -> Figure:
    """The figure named ``key`` (e.g. ``"deliveries_per_s"``)."""
    for f in FIGURES:
        if f.key == key:
            return f
    raise KeyError(key)


@dataclass(frozen=True)
class Ratio:
    """``top`` / ``bottom`` for each figure of one workload run against both servers."""

    workload: str
    receivers: int
    top: str
    bottom: str
    values: dict[str, float]  # figure key -> ratio

    @property
    def name(self) -> str:
        """The report's key for these values, e.g. ``mtlschat_over_reference``."""
        return f"{self.top}_over_{self.bottom}".replace("-", "_")

    def to_json(self) -> dict[str, Any]:
        """``{"workload": ..., "receivers": ..., "mtlschat_over_reference": {...}}``."""
        return {"workload": self.workload, "receivers": self.receivers, self.name: self.values}


def ratios(runs: list[RunResult], pairs: list[tuple[str, str]]) -> list[Ratio]:
    """``top / bottom`` for every ratio figure of every workload run against both of a pair."""
    out: list[Ratio] = []
    for top, bottom in pairs:
        for run in runs:
            if run.target != top:
                continue
            ref = next((r for r in runs if r.target == bottom and r.same_workload(run)), None)
            if ref is None:
                continue
            values = {}
            for f in RATIO_FIGURES:
                a, b = f.get(run), f.get(ref)
                if a is not None and b:
                    values[f.key] = a / b
            out.append(Ratio(run.workload, run.receivers, top, bottom, values))
    return out


@dataclass(frozen=True)
class BenchReport:
    """Everything one ``mtlschat bench`` invocation measured."""

    mtlschat: str
    python: str
    time: str
    machine: dict[str, Any]
    runs: list[RunResult]
    ratios: list[Ratio]

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` report."""
        return {
            "tool": "mtlschat bench",
            "version": REPORT_VERSION,
            "mtlschat": self.mtlschat,
            "python": self.python,
            "time": self.time,
            "machine": self.machine,
            "runs": [r.to_json() for r in self.runs],
            "ratios": [r.to_json() for r in self.ratios],
        }


def runs_from_report(data: Mapping[str, Any]) -> list[RunResult]:
    """The runs of a ``--json`` report (raises KeyError/TypeError if it is not one)."""
    return [RunResult.from_json(r) for r in data["runs"]]


def _load(cls: type[T], data: Mapping[str, Any]) -> T:
    """``cls`` from the JSON object ``data``: nested dataclasses too; unknown keys ignored (a
    newer report), missing ones take the field's default or raise TypeError.
    """
    if not isinstance(data, Mapping):
        raise TypeError(f"{cls.__name__}: expected an object, got {type(data).__name__}")
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name not in data:
            continue
        value = data[f.name]
        kind = _dataclass_in(hints[f.name])
        if kind is not None and value is not None:
            value = _load(kind, value)
        kwargs[f.name] = value
    return cls(**kwargs)


def _dataclass_in(hint: Any) -> type[Any] | None:
    """The dataclass in a field's type (``X`` or ``X | None``), if any."""
    options = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)
    return next((a for a in options if isinstance(a, type) and is_dataclass(a)), None)
