"""The API is a promise to clients: its OpenAPI document is kept in `tests/data/openapi.json`
and the app's own document must equal it. A change to a route, a schema, a bound or a
description shows here as a diff; when the change is meant, write the file again with
`python -m tests.unit.test_openapi_unchanged` and say so in the commit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

KEPT = Path(__file__).resolve().parents[1] / "data" / "openapi.json"


def document() -> dict[str, Any]:
    import service.http.router  # noqa: F401  # the routes register on the app when imported
    from service.http.api import api

    doc: dict[str, Any] = json.loads(json.dumps(api.openapi(), sort_keys=True))
    return doc


def test_the_openapi_document_is_the_kept_one() -> None:
    kept = json.loads(KEPT.read_text())
    now = document()
    assert sorted(now["paths"]) == sorted(kept["paths"])
    assert sorted(now["components"]["schemas"]) == sorted(kept["components"]["schemas"])
    assert now == kept


if __name__ == "__main__":
    KEPT.write_text(json.dumps(document(), indent=1, sort_keys=True) + "\n")
