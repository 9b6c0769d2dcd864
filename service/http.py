"""The FastAPI app's plumbing: responses that always encode, validation errors that never
fail on their own echo, a body-size limit applied before parsing, the replica tag."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: a string holding a lone surrogate (valid in JSON
    escapes, not in UTF-8) is echoed as `\\ud800` instead of failing to encode."""

    def render(self, content: Any) -> bytes:
        return json.dumps(
            content, ensure_ascii=True, allow_nan=False, separators=(",", ":")
        ).encode()


def json_safe(value: Any) -> Any:
    """A value JSON can carry: non-finite floats (NaN, infinity) become their names."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


async def validation_error(request: Request, error: Exception) -> AsciiJSONResponse:
    """FastAPI's 422, with an echo of the input that always encodes."""
    assert isinstance(error, RequestValidationError)
    detail = json_safe(jsonable_encoder(error.errors()))
    return AsciiJSONResponse({"detail": detail}, status_code=422)


class BodyLimit:
    """413 for a body over `limit()` bytes, decided before the app parses anything: from the
    Content-Length header when there is one, else while the body streams in."""

    def __init__(self, app: ASGIApp, limit: Callable[[], int]) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit()
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _too_large(send, limit)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _too_large(send, limit)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _too_large(send: Send, limit: int) -> None:
    detail = {"detail": f"request body exceeds {limit} bytes (PICKSERVE_MAX_REQUEST_BYTES)"}
    body = json.dumps(detail).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


def make_api(limit: Callable[[], int]) -> FastAPI:
    api = FastAPI(
        title="pickserve",
        description="Serves the best of a pool of classifiers; asks for the few labels that "
        "tell them apart (ModelPicker) and hot-swaps the served model when the evidence "
        "changes.",
        version="0.2.0",
        default_response_class=AsciiJSONResponse,
    )
    api.add_exception_handler(RequestValidationError, validation_error)
    api.add_middleware(BodyLimit, limit=limit)
    return api
