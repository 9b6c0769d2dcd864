"""Tokens and roles: who may call which route.

Each token has a name and roles. `infer` may predict (own API and OIP v2) and read the
pool; `label` may lease items, post feedback, read the selection (without the posterior,
losses and step, from which q could be worked out) and open the labeling page; `metrics`
may scrape the whole of /metrics; `admin` may do everything, including rounds and budgets.
`bridge` is a labeling tool speaking for its annotators (the Label Studio bridge): what
`label` may do, and name the annotator who gave a feedback request's labels, who is then a
labeler of their own, `{annotator}@{the bridge token's name}`.
Health, the API docs and /metrics without the picker's numbers are open (probes and
scrapers).

A token is sent as `Authorization: Bearer <token>`, or as the password of HTTP Basic
(what a browser sends for the labeling page; the user name is ignored). Tokens are
compared in constant time against SHA-256 digests held in memory; the tokens themselves
are never logged. With no tokens configured (none given, or an empty list), every route is
open: fine on 127.0.0.1, refused on any other address unless `allow_insecure` says so
(`check_access`, run by every way the service starts).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

Role = Literal["infer", "label", "bridge", "metrics", "admin"]
NAME_PATTERN = r"^[A-Za-z0-9_.@-]{1,64}$"  # a token's name: who gave each label
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class TokenSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., pattern=NAME_PATTERN, description="who holds it")
    token: str = Field(..., min_length=16, max_length=256, description="the secret")
    roles: list[Role] = Field(..., min_length=1, description="infer, label, bridge, metrics, admin")


class TokenError(ValueError):
    """The token file or variable cannot be used; the message says why (never the token)."""


def read_tokens(file: Path | None, inline: str | None) -> list[TokenSpec]:
    """Tokens from a YAML/JSON file (a list of {name, token, roles}) and/or a JSON variable."""
    entries: list[object] = []
    sources = []
    if file is not None:
        try:
            loaded = yaml.safe_load(file.read_text())
        except (OSError, yaml.YAMLError) as error:
            raise TokenError(f"token file {file}: {type(error).__name__}") from None
        entries += loaded if isinstance(loaded, list) else [loaded]
        sources.append(str(file))
    if inline:
        try:
            loaded = json.loads(inline)
        except json.JSONDecodeError:
            raise TokenError("PICKSERVE_TOKENS is not a JSON list") from None
        entries += loaded if isinstance(loaded, list) else [loaded]
        sources.append("PICKSERVE_TOKENS")
    tokens = []
    for number, entry in enumerate(entries, 1):
        try:
            tokens.append(TokenSpec.model_validate(entry))
        except ValidationError as error:
            fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in error.errors())
            raise TokenError(
                f"token entry {number} of {' + '.join(sources)}: bad {fields} (a name, a token "
                "of 16-256 characters, roles from infer, label, bridge, metrics, admin)"
            ) from None
    names = [t.name for t in tokens]
    if len(set(names)) != len(names):
        raise TokenError("token names must be unique (they name who gave each label)")
    if len({t.token for t in tokens}) != len(tokens):
        raise TokenError("two token entries share one token")
    return tokens


def check_access(host: str, tokens: Sequence[TokenSpec], allow_insecure: bool) -> None:
    """With no tokens, anyone who reaches the port may reset rounds and steer labels: only
    on 127.0.0.1, or when allow_insecure says so. An empty list is no tokens."""
    if host not in LOOPBACK and not tokens and not allow_insecure:
        raise TokenError(
            f"listening on {host} with no tokens would open every route (rounds, labels) to "
            "anyone who reaches the port: set PICKSERVE_TOKENS_FILE or PICKSERVE_TOKENS, or "
            "PICKSERVE_ALLOW_INSECURE=true for a throwaway setup"
        )


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class Caller(BaseModel):
    name: str
    roles: frozenset[str]

    def may(self, role: Role) -> bool:
        """Whether the caller has `role`: admin has every role, and a bridge the label
        role's too (a labeling tool leases and labels, for its annotators)."""
        if role == "label" and "bridge" in self.roles:
            return True
        return role in self.roles or "admin" in self.roles


ANONYMOUS = Caller(name="anonymous", roles=frozenset({"admin"}))


def token_table(tokens: Sequence[TokenSpec]) -> list[dict[str, object]]:
    """What the replicas need to know of the tokens: digests, names, roles (the tokens
    themselves never travel in Ray's deployment arguments)."""
    return [{"digest": _digest(t.token).hex(), "name": t.name, "roles": list(t.roles)}
            for t in tokens]  # fmt: skip


class Authenticator:
    """Finds the caller of a request from its Authorization header."""

    def __init__(self, table: Sequence[Mapping[str, Any]]) -> None:
        self.entries = [
            (bytes.fromhex(str(row["digest"])),
             Caller(name=str(row["name"]), roles=frozenset(row["roles"])))
            for row in table
        ]  # fmt: skip

    @property
    def enabled(self) -> bool:
        return bool(self.entries)

    def caller(self, authorization: str | None) -> Caller | None:
        """The token's holder; None for a missing or unknown token. Every entry is
        compared, whatever matches, so the time taken says nothing about the token."""
        if not self.enabled:
            return ANONYMOUS
        given = _token_of(authorization)
        if given is None:
            return None
        digest, found = _digest(given), None
        for expected, caller in self.entries:
            if hmac.compare_digest(digest, expected):
                found = caller
        return found


def _token_of(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None
