"""`GET /healthz` (alive), `GET /readyz` (can take work), `GET /info` (what the server offers),
`GET /metrics` (Prometheus)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from api.deps import ConfigDep, GpuDep, JobsDep, ModelsDep, ReadinessDep, RequireApiKey, base_url
from api.forms import server_overrides, style_details
from api.hints import prompt_help, run_hints
from api.jobs.notices import email_enabled
from engine import __version__, list_drawers, pick_device

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is alive (a Docker/Kubernetes liveness probe)."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={
        503: {
            "description": "Still loading models, warm-up failed, or the job database, the "
            "queue or the storage is down (`database.ok`, `queue.ok`, `storage.ok`). A busy "
            "node (`full`: its GPU line is full) stays ready: its queue takes jobs, and a load "
            "balancer must not drop it exactly when it works."
        }
    },
)
def readyz(readiness: ReadinessDep, gpu: GpuDep, jobs: JobsDep) -> JSONResponse:
    """Whether the service can take work now: models warmed up (on a node that runs jobs), job
    database, queue and storage answering (checked at most every 2 s); `busy` (a run holds the
    GPU) and `full` (no one more may wait for it: `/generate` gets 503) say how loaded it is.
    `workers` counts live workers and warns when there is none."""
    health = jobs.probe.check()
    runs_jobs = jobs.worker_running
    body: dict[str, Any] = {
        "ready": readiness.state == "ready" and health.ok,
        "state": readiness.state,
        "role": "api+worker" if runs_jobs else "api",
        "busy": gpu.busy,
        "full": runs_jobs and gpu.full(),
        "waiting": gpu.waiting,
        "max_waiting": gpu.max_waiting,
        **health.report(),
    }
    if readiness.error:
        body["error"] = readiness.error
    return JSONResponse(body, status_code=200 if body["ready"] else 503)


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[RequireApiKey],
    responses={
        200: {"content": {"text/plain": {}}},
        401: {"description": "API keys are on and none (or a wrong one) was sent."},
        404: {"description": "T2A_METRICS_PORT is set: the metrics are served there."},
    },
)
def metrics(jobs: JobsDep, config: ConfigDep) -> Response:
    """Prometheus metrics of this process (names start with `text2art_`); behind the API key
    when keys are on, and only on T2A_METRICS_PORT when that is set."""
    if config.metrics_port is not None:
        raise HTTPException(404, "the metrics are served on T2A_METRICS_PORT, not this port")
    body, content_type = jobs.metrics.render()
    return Response(body, media_type=content_type)


@router.get("/info")
def info(
    request: Request, config: ConfigDep, models: ModelsDep, gpu: GpuDep, readiness: ReadinessDep
) -> dict[str, Any]:
    """Name, version, styles (names, and how the page shows each: `style_details`), qualities,
    aspects with their sizes and the default scale as this server runs them, an example prompt
    and keywords its models understand, readiness, loaded models and links."""
    return {
        "name": "text2art",
        "version": __version__,
        "device": str(pick_device(config.device)),
        "styles": list_drawers(),
        "style_details": style_details(),
        **run_hints(config),  # qualities, aspects, default_scale: as this server runs them
        "prompt_hints": prompt_help(config),
        "readiness": {"state": readiness.state, "error": readiness.error},
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
    return bool(jobs is not None and email_enabled(jobs.config))


def _links(request: Request) -> dict[str, str]:
    base = base_url(request)
    paths = {"docs": "/docs", "openapi": "/openapi.json", "generate": "/generate"}
    paths.update({"healthz": "/healthz", "readyz": "/readyz", "metrics": "/metrics"})
    return {name: base + path for name, path in paths.items()}
