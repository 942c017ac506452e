"""`GET /healthz` (alive), `GET /readyz` (can take work), `GET /info` (what the server offers)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.deps import ConfigDep, GpuDep, ModelsDep, ReadinessDep
from api.forms import default_of, server_overrides
from engine import __version__, presets
from engine.drawers import list_drawers
from engine.generate import pick_device

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is alive (a Docker/Kubernetes liveness probe)."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={503: {"description": "Still loading models, warm-up failed, or the queue is full."}},
)
def readyz(readiness: ReadinessDep, gpu: GpuDep) -> JSONResponse:
    """Whether the service can take work now: models loaded and warmed up, queue not full."""
    body: dict[str, Any] = {
        "ready": readiness.state == "ready" and not gpu.full(),
        "state": readiness.state,
        "busy": gpu.busy,
        "waiting": gpu.waiting,
        "max_waiting": gpu.max_waiting,
    }
    if readiness.error:
        body["error"] = readiness.error
    return JSONResponse(body, status_code=200 if body["ready"] else 503)


@router.get("/info")
def info(request: Request, config: ConfigDep, models: ModelsDep, gpu: GpuDep) -> dict[str, Any]:
    """Name, version, styles, qualities, aspects with their sizes, loaded models and links."""
    scale = default_of("scale")
    return {
        "name": "text2art",
        "version": __version__,
        "device": str(pick_device(config.device)),
        "styles": list_drawers(),
        "qualities": {
            name: {"clip_models": list(q.clip_models), "iterations": q.iterations}
            for name, q in presets.QUALITY.items()
        },
        "aspects": {
            name: {"base_size": list(base), "default_size": list(presets.base_size(name, scale))}
            for name, base in presets.ASPECT.items()
        },
        "default_scale": scale,
        "overrides": server_overrides(config),
        "limits": config.limits().model_dump(),
        "models_loaded": models.loaded(),
        "upload": {"max_bytes": config.max_upload_bytes, "max_pixels": config.max_upload_pixels},
        "email_enabled": _email_enabled(request),
        "api_key_required": bool(config.api_keys),
        "gpu": {"busy": gpu.busy, "waiting": gpu.waiting, "max_waiting": gpu.max_waiting},
        "links": _links(request),
    }


def _email_enabled(request: Request) -> bool:
    """Whether jobs can e-mail results (an SMTP server is configured for the jobs service)."""
    jobs = getattr(request.app.state, "jobs", None)
    return bool(jobs is not None and getattr(jobs.config, "smtp_host", None))


def _links(request: Request) -> dict[str, str]:
    base = str(request.base_url).rstrip("/")
    paths = {"docs": "/docs", "openapi": "/openapi.json", "generate": "/generate"}
    paths.update({"healthz": "/healthz", "readyz": "/readyz"})
    return {name: base + path for name, path in paths.items()}
