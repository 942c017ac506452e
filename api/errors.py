"""Errors of the service and their JSON answers.

- `FieldError` / `engine.SettingsError` -> 422 in FastAPI's own shape, so a client reads one
  format for every bad field: `{"detail": [{"type", "loc": ["body", FIELD], "msg"}]}`.
- `GpuBusy` -> 503 with `Retry-After`.
- `EngineError` -> a JSON 5xx `{"error": CODE, "detail": MESSAGE}` (out of memory, missing
  weights, ...); the service keeps serving.
- `engine.Cancelled` -> 499 (the client went away; nobody reads it).
"""

from __future__ import annotations

import gc
import logging

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from api.gpu import GpuBusy
from engine import Cancelled, SettingsError

log = logging.getLogger(__name__)

CLIENT_CLOSED_REQUEST = 499  # nginx's code: the client closed the connection first


class FieldError(ValueError):
    """One invalid form field: `field` names it, `message` says what is allowed."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class EngineError(Exception):
    """A generation that failed on the server's side (not the client's input)."""

    def __init__(self, code: str, detail: str, status_code: int = 500):
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.status_code = status_code


def field_error_response(field: str, message: str) -> JSONResponse:
    """422 naming the field, in the shape of FastAPI's own validation errors."""
    detail = [{"type": "value_error", "loc": ["body", field], "msg": message}]
    return JSONResponse({"detail": detail}, status_code=422)


def engine_error(exc: BaseException) -> EngineError:
    """Classify an exception raised by `engine.generate`; frees GPU memory after an OOM."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        free_gpu_memory()
        return EngineError(
            "out_of_memory",
            "the GPU ran out of memory; try a smaller size, a lower quality or fewer cutouts",
        )
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return EngineError("engine_error", f"generation failed: {first_line}")


def free_gpu_memory() -> None:
    """Drop what the failed run left on the GPU so the next one has room."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


async def _field_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FieldError | SettingsError)
    return field_error_response(exc.field, exc.message)


async def _gpu_busy(request: Request, exc: Exception) -> JSONResponse:
    retry_after = request.app.state.config.retry_after
    return JSONResponse(
        {"error": "busy", "detail": f"{exc}; retry in {retry_after} s"},
        status_code=503,
        headers={"Retry-After": str(retry_after)},
    )


async def _engine_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, EngineError)
    return JSONResponse({"error": exc.code, "detail": exc.detail}, status_code=exc.status_code)


async def _cancelled(request: Request, exc: Exception) -> JSONResponse:
    log.info("%s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(
        {"error": "cancelled", "detail": str(exc)}, status_code=CLIENT_CLOSED_REQUEST
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the JSON answers above on the app."""
    app.add_exception_handler(FieldError, _field_error)
    app.add_exception_handler(SettingsError, _field_error)
    app.add_exception_handler(GpuBusy, _gpu_busy)
    app.add_exception_handler(EngineError, _engine_error)
    app.add_exception_handler(Cancelled, _cancelled)
