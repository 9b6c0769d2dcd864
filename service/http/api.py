"""The Router's FastAPI app and what its route modules share: roles and tokens, the
Idempotency-Key header, the replica tag, the attributes a Router replica holds."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from pathlib import Path as FilePath
from typing import Any

import numpy as np
from fastapi import Depends, Header, HTTPException, Path
from pydantic import BaseModel
from ray import serve

from service.config.knobs import RuntimeKnobs
from service.config.settings import Limits, Settings
from service.http.auth import Authenticator, Caller, Role
from service.http.limits import make_api
from service.http.schemas import KEY_PATTERN
from service.models.pool_file import PoolSpec
from service.replica.canary import CanaryStats
from service.replica.loops import ReplicaRuntime
from service.replica.serving import Server
from service.replica.shadow import ShadowEvaluator
from service.replica.tracking import TrackingTicks
from service.state.live import LiveState
from service.state.rules import KeyReusedError, Selection
from service.state.store.base import StoreError

logger = logging.getLogger("pickserve")
_limits = {"limits": Limits()}  # the replica's own, from its Settings (Router.__init__)
api = make_api(lambda: _limits["limits"])
_auth = {"authenticator": Authenticator([])}


def needs(*roles: Role, browser: bool = False) -> Any:
    """A route dependency: the caller, if its token has one of `roles` (admin has every
    role). 401 without a known token (for a page a browser opens, an HTTP Basic challenge,
    so that it asks for the token), 403 with a token that lacks them."""
    challenge = 'Basic realm="pickserve"' if browser else 'Bearer realm="pickserve"'

    async def caller_with_role(
        authorization: str | None = Header(None, include_in_schema=False),
    ) -> Caller:
        caller = _auth["authenticator"].caller(authorization)
        if caller is None:
            raise HTTPException(
                401, "missing or unknown token: send 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": challenge},
            )  # fmt: skip
        if not any(caller.may(role) for role in roles):
            wanted = " or ".join(repr(r) for r in roles)
            raise HTTPException(403, f"the token of {caller.name!r} lacks the {wanted} role")
        return caller

    return Depends(caller_with_role)


def optional_caller() -> Any:
    """For an open route that shows more to some roles: no token, None; a token that is
    not known, 401 (a scraper with a wrong token should hear it, not get less). A closure,
    as `needs` makes: Ray ships it by value with the `_auth` that `Router.__init__` fills
    (a module-level function would read the module's own, never filled)."""

    async def caller_or_none(
        authorization: str | None = Header(None, include_in_schema=False),
    ) -> Caller | None:
        authenticator = _auth["authenticator"]
        if authorization is None and authenticator.enabled:
            return None
        caller = authenticator.caller(authorization)  # with no tokens: anonymous, every role
        if caller is None:
            raise HTTPException(401, "unknown token: send 'Authorization: Bearer <token>' of "
                                "the metrics role, or none", headers={"WWW-Authenticate":
                                'Bearer realm="pickserve"'})  # fmt: skip
        return caller

    return Depends(caller_or_none)


OPTIONAL_CALLER = optional_caller()
INFER, LABEL, ADMIN = needs("infer"), needs("label"), needs("admin")
INFER_OR_LABEL = needs("infer", "label")
LABEL_PAGE = needs("label", browser=True)
PAGE = (FilePath(__file__).parent / "static" / "label.html").read_text()


def idempotency_header() -> Any:
    """The Idempotency-Key header (a default value: Ray pickles the class by value, so a
    name used only in a string annotation would not resolve in the replica)."""
    return Header(
        None, pattern=KEY_PATTERN, max_length=128,
        description="repeat a request with the same key after a 503 to learn its outcome; "
        "nothing is applied twice",
    )  # fmt: skip


def request_digest(route: str, caller: Caller, request: BaseModel | None) -> str:
    """What binds an Idempotency-Key: the route, the caller and the body (as validated)."""
    body = "" if request is None else request.model_dump_json()
    text = f"{route}\n{caller.name}\n{body}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class ReplicaTag:
    """Every response names the replica and the Ray node that answered
    (x-pickserve-replica, x-pickserve-node). A plain ASGI wrapper: Starlette's
    BaseHTTPMiddleware would cost a task and a stream per request."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.headers: list[tuple[bytes, bytes]] | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.headers is None:
            import ray

            replica = serve.get_replica_context().replica_id.unique_id
            node = ray.get_runtime_context().get_node_id()
            self.headers = [(b"x-pickserve-replica", replica.encode()),
                            (b"x-pickserve-node", node.encode())]  # fmt: skip
        tags = self.headers

        async def tagged(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *tags]
            await send(message)

        await self.app(scope, receive, tagged)


api.add_middleware(ReplicaTag)


MODEL_NAME = Path(
    ..., max_length=64, description="`router` (the served model) or a candidate's name"
)


def unavailable(error: StoreError, what: str) -> HTTPException:
    return HTTPException(503, f"state store unavailable ({what}): {error}")


class RouterBase:
    """What every route module of the Router reads: set up by `Router.__init__`."""

    settings: Settings
    pool: PoolSpec
    names: list[str]
    pool_file: FilePath
    state: LiveState
    runtime: ReplicaRuntime
    server: Server
    shadow: ShadowEvaluator
    rng: np.random.Generator
    canary_stats: CanaryStats
    tracking: TrackingTicks | None
    _last_metrics: tuple[dict[str, float], int]

    @property
    def knobs(self) -> RuntimeKnobs:
        return self.runtime.knobs

    async def bind_key(
        self, route: str, key: str | None, caller: Caller, request: BaseModel | None
    ) -> Mapping[str, Any] | None:
        """Bind a client's Idempotency-Key to this request (`LiveState.bind_key`): the
        response recorded for an earlier identical request, or None; 422 if the key came
        with another request before (nothing is changed)."""
        if key is None:
            return None
        digest = request_digest(route, caller, request)
        try:
            return await self.runtime.run_store(self.state.bind_key, route, key, digest,
                                                time.time())  # fmt: skip
        except KeyReusedError as error:
            raise HTTPException(422, str(error)) from None
        except StoreError as error:
            raise unavailable(error, "idempotency keys") from None

    @property
    def selection(self) -> Selection:
        assert self.runtime.selection is not None  # read in __init__
        return self.runtime.selection

    @property
    def priors(self) -> dict[str, float]:
        """The pool file's `prior` of each candidate that has one."""
        return {c.name: c.prior for c in self.pool.candidates if c.prior is not None}
