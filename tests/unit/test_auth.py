"""Token files and the authenticator, as pure code."""

import base64
import json
from pathlib import Path

import pytest

from service.http.auth import ANONYMOUS, Authenticator, TokenError, read_tokens, token_table

GOOD = [
    {"name": "alice", "token": "a" * 20, "roles": ["label"]},
    {"name": "ops", "token": "o" * 20, "roles": ["admin"]},
]


def test_tokens_from_a_file_and_a_variable(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text("- {name: alice, token: aaaaaaaaaaaaaaaaaaaa, roles: [label]}\n")
    tokens = read_tokens(path, json.dumps(GOOD[1:]))
    assert [(t.name, t.roles) for t in tokens] == [("alice", ["label"]), ("ops", ["admin"])]


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([{"name": "x", "token": "short", "roles": ["label"]}], "bad token"),
        ([{"name": "x", "token": "x" * 20, "roles": ["root"]}], "bad roles.0"),
        ([GOOD[0], {**GOOD[1], "name": "alice"}], "names must be unique"),
        ([GOOD[0], {**GOOD[1], "token": "a" * 20}], "share one token"),
    ],
)
def test_bad_token_entries_are_refused_without_echoing_the_token(
    entries: list[dict[str, object]], message: str
) -> None:
    with pytest.raises(TokenError, match=message) as raised:
        read_tokens(None, json.dumps(entries))
    for entry in entries:
        assert str(entry["token"]) not in str(raised.value)


def test_a_missing_token_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(TokenError, match=r"token file .*nope.yaml: FileNotFoundError"):
        read_tokens(tmp_path / "nope.yaml", None)


def test_the_authenticator_knows_holders_and_roles() -> None:
    auth = Authenticator(token_table(read_tokens(None, json.dumps(GOOD))))
    alice = auth.caller("Bearer " + "a" * 20)
    assert alice is not None and alice.name == "alice"
    assert alice.may("label") and not alice.may("admin") and not alice.may("infer")
    ops = auth.caller("bearer " + "o" * 20)
    assert ops is not None and ops.may("infer") and ops.may("label")
    basic = base64.b64encode(b"anyone:" + b"a" * 20).decode()
    assert auth.caller("Basic " + basic) == alice
    for header in (None, "", "Bearer", "Bearer " + "a" * 19, "Token " + "a" * 20, "Basic !!"):
        assert auth.caller(header) is None
    assert all(
        "a" * 20 not in json.dumps(row) for row in token_table(read_tokens(None, json.dumps(GOOD)))
    )


def test_with_no_tokens_everyone_may_do_everything() -> None:
    assert Authenticator([]).caller(None) == ANONYMOUS
