"""`RequestGuard`: ASGI middleware that refuses a request before its body is read.

- A route that needs an API key (one with the `RequireApiKey` dependency) answers 401 when the
  app first asks for the body (the route is known then, nothing is read yet), so an anonymous
  client cannot make the server read, parse or store a body.
- `Content-Length` over T2A_MAX_REQUEST_BYTES is 413 at once; a body without one (chunked) is cut
  off as soon as it passes the limit, with 413. The connection is closed: the rest is never read.
"""

from __future__ import annotations

import contextlib

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.config import ApiConfig
from api.deps import API_KEY_MISSING, matched_key, require_api_key


class Refused(Exception):
    """Raised from `receive`: the request is answered by the guard, not the app."""


class _GuardedBody:
    """`receive` that checks the API key before the first read and counts the body's bytes."""

    def __init__(self, receive: Receive, scope: Scope, config: ApiConfig):
        self._receive, self.scope, self.config = receive, scope, config
        self.size, self.first = 0, True
        self.answer: JSONResponse | None = None

    async def __call__(self) -> Message:
        if self.first:  # the router has matched: scope["route"] is the endpoint's route
            self.first = False
            if _needs_key(self.scope, self.config.api_keys):
                self.answer = unauthorized()
                raise Refused
        message = await self._receive()
        if message["type"] == "http.request":
            self.size += len(message.get("body", b""))
            if self.size > self.config.max_request_bytes:
                self.answer = too_large(self.config.max_request_bytes)
                raise Refused
        return message


def too_large(limit: int) -> JSONResponse:
    """413 in the service's JSON error shape."""
    detail = f"the request body is over the limit of {limit} bytes (T2A_MAX_REQUEST_BYTES)"
    return JSONResponse({"error": "too_large", "detail": detail}, status_code=413)


def unauthorized() -> JSONResponse:
    """401, as `api.deps.require_api_key` answers."""
    auth = {"WWW-Authenticate": "Bearer"}
    return JSONResponse({"detail": API_KEY_MISSING}, status_code=401, headers=auth)


class RequestGuard:
    """Checks the API key and the body's size before the app reads the body."""

    def __init__(self, app: ASGIApp, config: ApiConfig):
        self.app, self.config = app, config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.config.max_request_bytes
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > limit:
            return await too_large(limit)(scope, receive, send)
        body = _GuardedBody(receive, scope, self.config)
        started = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if body.answer is None:  # what the app says about a refused body is dropped
                started = True
                await send(message)

        with contextlib.suppress(Refused):  # the answer is the guard's, below
            await self.app(scope, body, guarded_send)
        if body.answer is not None and not started:
            await body.answer(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.disconnect"}


def _needs_key(scope: Scope, keys: list[str]) -> bool:
    """Whether the route needs an API key (`RequireApiKey`) and the request has none of `keys`."""
    dependant = getattr(scope.get("route"), "dependant", None)
    if not keys or dependant is None:
        return False
    if not any(d.call is require_api_key for d in dependant.dependencies):
        return False
    return matched_key(Headers(scope=scope).get("authorization"), keys) is None
