"""Every string the API takes has a length bound in the OpenAPI document (the fuzzer,
which works from that document, then sends the longest strings too): a request field
without one let a 5,000-character model path reach the file system (a 500)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def openapi() -> dict[str, Any]:
    import service.http.router  # noqa: F401  # the routes register on the app when imported
    from service.http.api import api

    return api.openapi()


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    found: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        found = found[part]
    return dict(found)


def strings(
    doc: dict[str, Any], schema: dict[str, Any], where: str
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every string schema reachable from `schema`, with a path naming it."""
    schema = resolve(doc, schema)
    if schema.get("type") == "string":
        yield where, schema
    for name, sub in schema.get("properties", {}).items():
        yield from strings(doc, sub, f"{where}.{name}")
    for key in ("items", "additionalProperties", "propertyNames"):
        if isinstance(schema.get(key), dict):
            yield from strings(doc, schema[key], f"{where}[{key}]")
    for key in ("anyOf", "oneOf", "allOf"):
        for number, sub in enumerate(schema.get(key, [])):
            yield from strings(doc, sub, f"{where}|{number}")


def request_strings(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, methods in doc["paths"].items():
        for method, operation in methods.items():
            label = f"{method.upper()} {path}"
            for parameter in operation.get("parameters", []):
                yield from strings(doc, parameter["schema"], f"{label} {parameter['name']}")
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None:
                yield from strings(doc, body["schema"], f"{label} body")


def test_every_string_a_request_carries_is_bounded() -> None:
    doc = openapi()
    found = list(request_strings(doc))
    assert len(found) > 10  # the walk reaches the fields (names, paths, labels, ids)
    unbounded = [
        where
        for where, schema in found
        if "maxLength" not in schema and "enum" not in schema and "const" not in schema
    ]
    assert unbounded == []


def test_the_candidate_fields_are_among_them() -> None:
    bounds = {where: schema.get("maxLength") for where, schema in request_strings(openapi())}
    assert bounds["POST /v1/candidates body.sklearn|0"] == 1024
    assert bounds["POST /v1/candidates body.python|0"] == 256
