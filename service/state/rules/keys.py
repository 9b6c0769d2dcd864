"""Idempotency keys: a key means one request (its route, its caller, its body)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from service.state.store.base import Doc, Put, Txn


class KeyReusedError(ValueError):
    """An Idempotency-Key came again with another request (route, caller or body)."""


CANDIDATE_KEYS = "candidates"  # the scope of POST /v1/candidates' Idempotency-Keys


def key_key(scope: str, key: str) -> str:
    """The record binding a client's Idempotency-Key (on one route) to its first request."""
    return f"key:{scope}:{key}"


def bind_key(
    op: str, doc: Doc | None, scope: str, key: str, fingerprint: str, now: float, keep_s: float
) -> tuple[Txn | None, Mapping[str, Any] | None]:
    """A key's first use binds it to `fingerprint` (the request's digest) for `keep_s`; a
    repeat of that request passes, with the response recorded for it, if any (None: none
    yet: the request runs again, its writes keyed so that nothing applies twice); the key
    with any other request is refused (KeyReusedError), and nothing changes."""
    if doc is None:
        record = {"fingerprint": fingerprint, "response": None}
        return Txn(op, expect={key_key(scope, key): 0},
                   put={key_key(scope, key): Put(record, now + keep_s)}), None  # fmt: skip
    if doc.value["fingerprint"] != fingerprint:
        raise KeyReusedError(
            f"Idempotency-Key {key!r} was used before with another request (another body or "
            "another caller): a key names one request; use a new key for a new request"
        )
    response = doc.value.get("response")
    return None, None if response is None else dict(response)


def answering_key(txn: Txn, doc: Doc, doc_key: str, now: float, keep_s: float) -> Txn:
    """`txn` that also keeps its answer (`txn.result`) with the key's binding `doc`, in the
    same step: a repeat of the request then gets that answer, whatever happened between."""
    record = {**doc.value, "response": txn.result}
    return replace(txn, expect={**txn.expect, doc_key: doc.version},
                   put={**txn.put, doc_key: Put(record, now + keep_s)})  # fmt: skip
