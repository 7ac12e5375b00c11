"""Redis URLs, the password's sources and the TLS context: one-line errors, no secret echoed."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from mtlschat.cluster.url import PASSWORD_ENV, RedisURL, RedisURLError, load_password, tls_context

if TYPE_CHECKING:
    from conftest import TestPKI


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("redis://127.0.0.1:6380/2", RedisURL("127.0.0.1", 6380, 2)),
        ("redis://localhost", RedisURL("localhost", 6379, 0)),
        ("redis://localhost/", RedisURL("localhost", 6379, 0)),
        ("rediss://redis.example:6390/0", RedisURL("redis.example", 6390, 0, tls=True)),
        ("redis://[::1]:7000/1", RedisURL("::1", 7000, 1)),
        ("redis://chat@10.0.0.5:6379/3", RedisURL("10.0.0.5", 6379, 3, username="chat")),
    ],
)
def test_parse(text: str, expected: RedisURL) -> None:
    assert RedisURL.parse(text) == expected


def test_str_round_trips_without_secrets() -> None:
    for text in ("redis://127.0.0.1:6380/2", "rediss://u@[::1]:7000/1"):
        assert str(RedisURL.parse(text)) == text
    assert RedisURL.parse("redis://[::1]/0").is_ip
    assert not RedisURL.parse("redis://localhost/0").is_ip


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("http://localhost:6379/0", "must start with redis:// or rediss://"),
        ("localhost:6379", "must start with redis:// or rediss://"),
        ("redis://:6379/0", "no host"),
        ("redis://localhost:notaport/0", "bad Redis URL"),
        ("redis://localhost:99999/0", "bad Redis URL"),
        ("redis://localhost:6379/zero", "the database 'zero' is not a number"),
        ("redis://localhost:6379/0?timeout=3", "no ?query"),
    ],
)
def test_bad_urls_are_one_line_errors(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match="bad Redis URL") as info:
        RedisURL.parse(text)
    assert reason in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text", ["redis://:s3cret@localhost/0", "redis://chat:s3cret@h:1/0"])
def test_a_password_in_the_url_is_refused_and_not_echoed(text: str) -> None:
    with pytest.raises(RedisURLError) as info:
        RedisURL.parse(text)
    message = str(info.value)
    assert "--redis-password-file or MTLSCHAT_REDIS_PASSWORD, never in the URL" in message
    assert "s3cret" not in message


def test_password_from_file_then_environment(tmp_path: Path) -> None:
    file = tmp_path / "redis.pass"
    file.write_text("from-file\n")
    env = {PASSWORD_ENV: "from-env"}
    assert load_password(file, env) == "from-file"
    assert load_password(None, env) == "from-env"
    assert load_password(None, {}) is None
    assert load_password(None, {PASSWORD_ENV: ""}) is None


def test_password_file_errors(tmp_path: Path) -> None:
    with pytest.raises(RedisURLError, match=r"cannot read the Redis password file .*missing"):
        load_password(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(RedisURLError, match="is empty"):
        load_password(empty)


def test_tls_context(pki: TestPKI, tmp_path: Path) -> None:
    ctx = tls_context(pki.ca_cert)
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    with pytest.raises(RedisURLError, match="cannot load the Redis CA"):
        tls_context(tmp_path / "nope.pem")
