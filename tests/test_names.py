"""The username policy shared by the CA, the server and the client."""

import pytest

from mtlschat.ca.names import InvalidName, is_valid_username, name_key, validate_username


@pytest.mark.parametrize("name", ["alice", "Bob", "a", "x" * 32, "j.doe", "m_1-2", "7of9"])
def test_valid_names(name: str) -> None:
    assert validate_username(name) == name
    assert is_valid_username(name)


@pytest.mark.parametrize(
    "name", ["", "x" * 33, "-alice", ".alice", "al ice", "alice\n", "é", "a/b", "a@b", "a\x00"]
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidName):
        validate_username(name)
    assert not is_valid_username(name)


def test_name_key_is_case_insensitive() -> None:
    assert name_key("Alice") == name_key("alice")
