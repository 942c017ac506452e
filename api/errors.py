"""Errors of the service and their JSON answers.

- `engine.SettingsError` -> 422 in FastAPI's own shape, so a client reads one format for every
  bad field: `{"detail": [{"type", "loc": ["body", FIELD], "msg"}]}`. The service raises it too,
  for its own fields (uploads, e-mail, webhook URL).
- `GpuBusy` -> 503 with `Retry-After`.
- `RunFailed` -> a JSON 5xx `{"error": CODE, "detail": MESSAGE}` (out of memory, missing
  weights, ...); the service keeps serving. `api.runner` decides the code.
- `StorageError` (the artifact store cannot be written or read) -> 500; 503 with Retry-After
  when it cannot be reached now (`unavailable`)
  `{"error": "storage_error", "detail": MESSAGE}`; a job it stops fails with MESSAGE.
- `engine.Cancelled` -> 499 (the client went away; nobody reads it).
- The job database or queue cannot be reached -> 503 naming the service (`api.jobs.outage`
  installs that one: it knows what an outage looks like).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from api.gpu import GpuBusy
from engine.errors import Cancelled, SettingsError

log = logging.getLogger(__name__)

CLIENT_CLOSED_REQUEST = 499  # nginx's code: the client closed the connection first


class RunFailed(Exception):
    """A generation that failed on the server's side (not the client's input)."""

    def __init__(self, code: str, detail: str, status_code: int = 500):
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.status_code = status_code


class StorageError(OSError):
    """The artifact store cannot be written or read, saying where and why in one line.

    `unavailable`: the store cannot be reached now (refused, timed out, cut, a 5xx or a
    slow-down): an outage, ridden out like the database's (a 503 with Retry-After on the API,
    retried by a worker), never a failed job. Otherwise the store refused for good (no such
    bucket, access denied, a full disk): the request or job fails."""

    code = "storage_error"

    def __init__(self, detail: str, unavailable: bool = False):
        super().__init__(detail)
        self.detail = detail
        self.unavailable = unavailable


# What an unreachable store raises (botocore's and the standard library's, by class name so
# that nothing here imports botocore), and the S3 error codes of a store that is there but busy.
_UNREACHABLE = {
    "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",
    "HTTPClientError", "ProxyConnectionError", "ConnectionError", "TimeoutError",
}  # fmt: skip
_BUSY_CODES = {"SlowDown", "ServiceUnavailable", "RequestTimeout", "InternalError", "Throttling"}
STORAGE_RETRY_AFTER = 10  # seconds


def unreachable(exc: BaseException | None) -> bool:
    """Whether `exc` (or what caused it) says the store cannot be reached now."""
    seen = 0
    while exc is not None and seen < 10:
        if any(cls.__name__ in _UNREACHABLE for cls in type(exc).__mro__):
            return True
        response = getattr(exc, "response", None) or {}
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        if int(status) >= 500 or response.get("Error", {}).get("Code") in _BUSY_CODES:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


# Answers of a form route before its fields are read (`api.guard` and the form parser).
BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "The body is not valid multipart or urlencoded form data."},
    408: {"description": "No part of the body came for T2A_READ_TIMEOUT s; JSON `error`: timeout."},
    413: {"description": "The body is over T2A_MAX_REQUEST_BYTES; JSON `error`: too_large."},
}


def field_error_response(
    field: str, message: str, more: list[str] | None = None, ctx: dict[str, Any] | None = None
) -> JSONResponse:
    """422 naming the field (and `more` fields, each an entry with the same message), in the
    shape of FastAPI's own validation errors; `ctx` adds numbers a client may read."""
    extra = {"ctx": ctx} if ctx else {}
    detail = [
        {"type": "value_error", "loc": ["body", name], "msg": message, **extra}
        for name in dict.fromkeys([field, *(more or [])])
    ]
    return JSONResponse({"detail": detail}, status_code=422)


async def _field_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SettingsError)
    # a SettingsError about several fields (api.cost.TooCostly) names each and its numbers
    more, context = getattr(exc, "lower", None), getattr(exc, "context", None)
    return field_error_response(exc.field, exc.message, more, context() if context else None)


async def _gpu_busy(request: Request, exc: Exception) -> JSONResponse:
    retry_after = request.app.state.config.retry_after
    return JSONResponse(
        {"error": "busy", "detail": f"{exc}; retry in {retry_after} s"},
        status_code=503,
        headers={"Retry-After": str(retry_after)},
    )


async def _run_failed(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RunFailed)
    return JSONResponse({"error": exc.code, "detail": exc.detail}, status_code=exc.status_code)


async def _storage_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StorageError)
    if exc.unavailable:  # an outage: the client tries again later
        log.warning("%s %s: the storage is unavailable: %s", request.method, request.url.path,
                    exc.detail)  # fmt: skip
        detail = f"the storage is unavailable; retry in {STORAGE_RETRY_AFTER} s"
        return JSONResponse(
            {"error": "unavailable", "service": "storage", "detail": detail},
            status_code=503,
            headers={"Retry-After": str(STORAGE_RETRY_AFTER)},
        )
    return JSONResponse({"error": exc.code, "detail": exc.detail}, status_code=500)


async def _cancelled(request: Request, exc: Exception) -> JSONResponse:
    log.info("%s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(
        {"error": "cancelled", "detail": str(exc)}, status_code=CLIENT_CLOSED_REQUEST
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the JSON answers above on the app."""
    app.add_exception_handler(SettingsError, _field_error)
    app.add_exception_handler(GpuBusy, _gpu_busy)
    app.add_exception_handler(RunFailed, _run_failed)
    app.add_exception_handler(StorageError, _storage_error)
    app.add_exception_handler(Cancelled, _cancelled)
