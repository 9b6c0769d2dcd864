"""The FastAPI app's plumbing: responses that always encode, validation errors that never
fail on their own echo, request limits applied before parsing (header count and size,
body size, a body that trickles, content codings), the replica tag.

Ray Serve's proxy (uvicorn with httptools) bounds none of these itself and offers no
setting for them, so they are enforced here, in the first ASGI layer of every replica:
an oversized request costs the proxy its parsing, never a route's work.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.config.settings import Limits

# What FastAPI answers (400) when the body cannot be decoded at all: not UTF-8, nested
# deeper than the JSON decoder recurses. pickserve documents 422 for every malformed body.
_FASTAPI_PARSE_ERROR = "There was an error parsing the body"


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


class RequestLimits:
    """Refuse, before the app parses anything: more than `max_headers` headers or more
    than `max_header_bytes` of them (431); a body with a content coding (415: pickserve
    reads plain JSON only); a body over `max_request_bytes` (413, from Content-Length when
    there is one, else while it streams in); a body not complete within `body_timeout_s`
    (408, so that a client sending a byte at a time cannot hold a connection)."""

    def __init__(self, app: ASGIApp, limits: Callable[[], Limits]) -> None:
        self.app, self.limits = app, limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limits = self.limits()
        headers = scope.get("headers", [])
        refusal = _header_refusal(headers, limits)
        if refusal is not None:
            await _refuse(send, *refusal)
            return
        declared, most = dict(headers).get(b"content-length"), limits.max_request_bytes
        if declared is not None and (not declared.isdigit() or int(declared) > most):
            await _too_large(send, limits.max_request_bytes)
            return
        try:
            body = await _read_body(receive, limits)
        except _BodyTooLargeError:
            await _too_large(send, limits.max_request_bytes)
            return
        except TimeoutError:
            await _refuse(send, 408, f"the request body did not arrive within "
                          f"{limits.body_timeout_s:g} s (PICKSERVE_BODY_TIMEOUT_S)")  # fmt: skip
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class _BodyTooLargeError(Exception):
    pass


def _header_refusal(headers: list[tuple[bytes, bytes]], limits: Limits) -> tuple[int, str] | None:
    if len(headers) > limits.max_headers:
        return 431, (f"the request has {len(headers)} headers, more than {limits.max_headers} "
                     "(PICKSERVE_MAX_HEADERS)")  # fmt: skip
    size = sum(len(name) + len(value) for name, value in headers)
    if size > limits.max_header_bytes:
        return 431, (f"the request's headers hold {size} bytes, more than "
                     f"{limits.max_header_bytes} (PICKSERVE_MAX_HEADER_BYTES)")  # fmt: skip
    coding = dict(headers).get(b"content-encoding", b"identity").strip().lower()
    if coding not in (b"", b"identity"):
        return 415, "request bodies are plain JSON: no Content-Encoding (gzip, ...) is accepted"
    return None


async def _read_body(receive: Receive, limits: Limits) -> bytes:
    """The whole body within the deadline; _BodyTooLargeError past the size limit."""
    deadline = time.monotonic() + limits.body_timeout_s
    chunks, size, more = [], 0, True
    while more:
        message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limits.max_request_bytes:
            raise _BodyTooLargeError
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _too_large(send: Send, limit: int) -> None:
    await _refuse(send, 413, f"request body exceeds {limit} bytes (PICKSERVE_MAX_REQUEST_BYTES)")


async def _refuse(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


async def http_error(request: Request, error: Exception) -> Response:
    """FastAPI's answers to HTTPException, except that a body it could not decode at all
    is a 422 like every other malformed body."""
    assert isinstance(error, StarletteHTTPException)
    if error.status_code == 400 and error.detail == _FASTAPI_PARSE_ERROR:
        detail = ("the body is not a JSON document pickserve can read (malformed, not UTF-8, "
                  "or nested too deeply)")  # fmt: skip
        return AsciiJSONResponse({"detail": detail}, status_code=422)
    return await http_exception_handler(request, error)


def make_api(limits: Callable[[], Limits]) -> FastAPI:
    api = FastAPI(
        title="pickserve",
        description="Serves the best of a pool of classifiers; asks for the few labels that "
        "tell them apart (ModelPicker) and hot-swaps the served model when the evidence "
        "changes.",
        version="0.2.0",
        default_response_class=AsciiJSONResponse,
    )
    api.add_exception_handler(RequestValidationError, validation_error)
    api.add_exception_handler(StarletteHTTPException, http_error)
    api.add_middleware(RequestLimits, limits=limits)
    return api
