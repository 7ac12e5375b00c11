"""Property: the CA issues exactly the names the policy allows, each once case-insensitively."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtlschat.ca import CertificateAuthority
from mtlschat.ca.bundle import load_bundle
from mtlschat.ca.errors import BadName, NameTaken
from mtlschat.ca.names import is_valid_username, name_key

# Mostly policy-shaped names (with case variants, so clashes happen), plus arbitrary text.
names = st.one_of(
    st.from_regex(r"[A-Ca-c0-9][A-Ca-c0-9._-]{0,3}", fullmatch=True),
    st.text(max_size=40),
)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch=st.lists(names, max_size=6))
def test_issue_follows_the_name_policy(
    tmp_path_factory: pytest.TempPathFactory, batch: list[str]
) -> None:
    root = tmp_path_factory.mktemp("names")
    ca = CertificateAuthority.init(root / "pki")
    taken: set[str] = set()
    for i, name in enumerate(batch):
        out = root / f"{i}.pem"
        if not is_valid_username(name):
            with pytest.raises(BadName):
                ca.issue_user(name, out=out)
        elif name_key(name) in taken:
            with pytest.raises(NameTaken):
                ca.issue_user(name, out=out)
        else:
            ca.issue_user(name, out=out)
            assert load_bundle(out).name == name
            taken.add(name_key(name))
    assert {name_key(r.name) for r in ca.records()} == taken
