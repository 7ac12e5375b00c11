"""How receivers are spread over load processes and loopback source addresses (no network)."""

from __future__ import annotations

import pytest

from mtlschat.bench.runner import BenchError, Workload
from mtlschat.bench.spread import (
    FD_MARGIN,
    choose_sources,
    ephemeral_ports,
    is_loopback_v4,
    source_addresses,
    sources_needed,
    worker_count,
)


def test_workers_stay_under_the_fd_limit() -> None:
    assert worker_count(300, 2, 20_000) == 2  # what was asked, when it fits
    assert worker_count(19_000, 2, 20_000) == 2
    assert worker_count(50_000, 2, 20_000) == 3  # 16,667 sockets each
    assert worker_count(50_000, 4, 20_000) == 4
    assert worker_count(1_000, 2, 100 + FD_MARGIN) == 10
    assert worker_count(3, 8, 20_000) == 3  # never more processes than receivers


def test_sources_are_loopback_addresses_after_127_0_0_1() -> None:
    assert source_addresses(3) == ("127.0.0.2", "127.0.0.3", "127.0.0.4")
    assert source_addresses(255)[-1] == "127.0.1.0"
    assert sources_needed(19_000, ports=28_232) == 1
    assert sources_needed(50_000, ports=28_232) == 3  # 22,585 per address at most
    assert ephemeral_ports() > 1000


def test_sources_are_chosen_only_when_needed_and_possible() -> None:
    assert choose_sources(300, 2, "127.0.0.1") == ("127.0.0.2", "127.0.0.3")
    assert choose_sources(300, 0, "127.0.0.1") == ()  # one range is plenty: the kernel picks
    assert len(choose_sources(10 * ephemeral_ports(), 0, "127.0.0.1")) >= 10
    assert choose_sources(10 * ephemeral_ports(), 0, "::1") == ()
    assert choose_sources(10 * ephemeral_ports(), 0, "localhost") == ()  # may resolve to ::1
    assert is_loopback_v4("127.1.2.3") and not is_loopback_v4("10.0.0.1")


@pytest.mark.parametrize("sources", [-1, 251])
def test_bad_source_counts_are_refused(sources: int) -> None:
    with pytest.raises(BenchError):
        Workload(sources=sources).check()


def test_receivers_may_share_certificates() -> None:
    assert Workload(receivers=50_000, names=20_000).certificates == 20_000
    assert Workload(receivers=300).certificates == 300  # one each
    assert Workload(receivers=5, names=9).certificates == 5
    with pytest.raises(BenchError):
        Workload(names=-1).check()
