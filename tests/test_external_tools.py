"""openssl and keytool: the interoperability tests skip without them locally, never in CI."""

from __future__ import annotations

from collections.abc import Callable

import pytest

MISSING = "mtlschat-test-no-such-tool"


def test_missing_tool_fails_in_ci(
    external_tool: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must install it"):
        external_tool(MISSING)


@pytest.mark.parametrize("ci", ["", "false", "0"])
def test_missing_tool_skips_outside_ci(
    external_tool: Callable[[str], str], monkeypatch: pytest.MonkeyPatch, ci: str
) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        external_tool(MISSING)


def test_present_tool_is_its_path(external_tool: Callable[[str], str]) -> None:
    assert external_tool("sh").endswith("/sh")
