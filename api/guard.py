"""`RequestGuard`: ASGI middleware that refuses a request before its body is read.

- A route that needs an API key (one with the `RequireApiKey` dependency) answers 401 when the
  app first asks for the body (the route is known then, nothing is read yet), so an anonymous
  client cannot make the server read, parse or store a body.
- `Content-Length` over T2A_MAX_REQUEST_BYTES is 413 at once; a body without one (chunked) is cut
  off as soon as it passes the limit, with 413.
- A body whose next part takes over T2A_READ_TIMEOUT seconds is 408 (a slow client holds no
  connection for long; `api.connections` times the headers).

Every answer of the guard, and any answer the app gives before it read the whole body (a 400,
a 422), says `Connection: close`, so the server closes the connection once it is sent: the
rest of the body is never read (without it uvicorn reads and discards a refused
chunked body to its end, gigabytes after a 401).
"""

from __future__ import annotations

import contextlib

import anyio
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
        self.size, self.first, self.done = 0, True, False
        self.answer: JSONResponse | None = None

    async def __call__(self) -> Message:
        if self.first:  # the router has matched: scope["route"] is the endpoint's route
            self.first = False
            if _needs_key(self.scope, self.config.api_keys):
                self.answer = unauthorized()
                raise Refused
        if self.done:  # after the body, receive waits for a disconnect (SSE): no deadline
            return await self._receive()
        with anyio.move_on_after(self.config.read_timeout):
            message = await self._receive()
            return self._counted(message)
        self.answer = timed_out(self.config.read_timeout)
        raise Refused

    def _counted(self, message: Message) -> Message:
        if message["type"] == "http.request":
            self.done = not message.get("more_body", False)
            self.size += len(message.get("body", b""))
            if self.size > self.config.max_request_bytes:
                self.answer = too_large(self.config.max_request_bytes)
                raise Refused
        return message


CLOSE = {"Connection": "close"}  # the server closes the connection after the answer


def too_large(limit: int) -> JSONResponse:
    """413 in the service's JSON error shape."""
    detail = f"the request body is over the limit of {limit} bytes (T2A_MAX_REQUEST_BYTES)"
    return JSONResponse({"error": "too_large", "detail": detail}, status_code=413, headers=CLOSE)


def timed_out(seconds: float) -> JSONResponse:
    """408: the body stalled."""
    detail = f"no part of the request body came for {seconds:g} s (T2A_READ_TIMEOUT)"
    return JSONResponse({"error": "timeout", "detail": detail}, status_code=408, headers=CLOSE)


def unauthorized() -> JSONResponse:
    """401, as `api.deps.require_api_key` answers."""
    auth = {"WWW-Authenticate": "Bearer", **CLOSE}
    return JSONResponse({"detail": API_KEY_MISSING}, status_code=401, headers=auth)


class RequestGuard:
    """Checks the API key and the body's size before the app reads the body."""

    def __init__(self, app: ASGIApp, config: ApiConfig):
        self.app, self.config = app, config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.config.max_request_bytes
        headers = Headers(scope=scope)
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            return await too_large(limit)(scope, receive, send)
        body = _GuardedBody(receive, scope, self.config)
        has_body = length not in ("", "0") or "transfer-encoding" in headers
        started = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if body.answer is not None:  # what the app says about a refused body is dropped
                return
            if message["type"] == "http.response.start" and has_body and not body.done:
                # answered before the body was read (a 400, a 422): never read the rest
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"connection", b"close")]}  # fmt: skip
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
