"""``HOST[:PORT]``: the one parser (client, bench) and the one way to print an address."""

from __future__ import annotations

import pytest

from mtlschat.address import DEFAULT_PORT, Address, parse_address, parse_addresses


@pytest.mark.parametrize(
    ("text", "address"),
    [
        (None, Address("localhost", DEFAULT_PORT)),
        ("", Address("localhost", DEFAULT_PORT)),
        ("chat.example.org", Address("chat.example.org", DEFAULT_PORT)),
        ("chat.example.org:8443", Address("chat.example.org", 8443)),
        (":9000", Address("localhost", 9000)),
        ("[::1]:9000", Address("::1", 9000)),
        ("[::1]", Address("::1", DEFAULT_PORT)),
        ("::1", Address("::1", DEFAULT_PORT)),
    ],
)
def test_parse_address(text: str | None, address: Address) -> None:
    assert parse_address(text) == address


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("host:0", "bad port"),
        ("host:65536", "bad port"),
        ("host:http", "bad port"),
        ("[::1", "use [IPV6]:PORT"),
        ("[::1]x", "use [IPV6]:PORT"),
    ],
)
def test_parse_address_refuses_with_one_line(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=r"^[^\n]*$") as caught:
        parse_address(text)
    assert why in str(caught.value)


@pytest.mark.parametrize(
    ("address", "text"),
    [(Address("chat.example.org", 7443), "chat.example.org:7443"), (Address("::1", 9), "[::1]:9")],
)
def test_address_prints_ipv6_in_brackets_and_parses_back(address: Address, text: str) -> None:
    assert str(address) == text
    assert parse_address(str(address)) == address


@pytest.mark.parametrize(
    ("texts", "addresses"),
    [
        ([], [Address("localhost", DEFAULT_PORT)]),
        (["a:1", "b:2"], [Address("a", 1), Address("b", 2)]),
        (["a:1,b:2", " [::1]:3 "], [Address("a", 1), Address("b", 2), Address("::1", 3)]),
        (["a:1 b"], [Address("a", 1), Address("b", DEFAULT_PORT)]),
    ],
)
def test_parse_addresses(texts: list[str], addresses: list[Address]) -> None:
    assert parse_addresses(texts) == addresses


def test_parse_addresses_names_the_bad_one() -> None:
    with pytest.raises(ValueError, match="bad port in 'b:0'"):
        parse_addresses(["a:1", "b:0"])
