"""Typed dependencies: the services the lifespan put on `app.state`, and the API-key check."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.config import ApiConfig
from api.gpu import GpuLock
from api.jobs.service import JobService
from api.storage import ArtifactStore
from engine import ModelCache

# auto_error=False: the check below decides (keys are optional), /docs still shows "Authorize".
_bearer = HTTPBearer(auto_error=False, description="One of the keys in T2A_API_KEYS.")


def get_config(request: Request) -> ApiConfig:
    """The service's configuration."""
    config: ApiConfig = request.app.state.config
    return config


def get_models(request: Request) -> ModelCache:
    """The process's model cache."""
    models: ModelCache = request.app.state.models
    return models


def get_gpu(request: Request) -> GpuLock:
    """The process-wide GPU lock."""
    gpu: GpuLock = request.app.state.gpu
    return gpu


def get_artifacts(request: Request) -> ArtifactStore:
    """Where every result, preview and upload is kept."""
    artifacts: ArtifactStore = request.app.state.artifacts
    return artifacts


def get_jobs(request: Request) -> JobService:
    """The process's job service."""
    jobs: JobService = request.app.state.jobs
    return jobs


@dataclass
class Readiness:
    """Whether the start-up preload and warm-up are done; `error` says why they failed."""

    state: str = "starting"  # starting | ready | failed
    error: str | None = None


def get_readiness(request: Request) -> Readiness:
    """The start-up state of the service."""
    readiness: Readiness = request.app.state.readiness
    return readiness


ConfigDep = Annotated[ApiConfig, Depends(get_config)]
ModelsDep = Annotated[ModelCache, Depends(get_models)]
GpuDep = Annotated[GpuLock, Depends(get_gpu)]
ReadinessDep = Annotated[Readiness, Depends(get_readiness)]
ArtifactsDep = Annotated[ArtifactStore, Depends(get_artifacts)]
JobsDep = Annotated[JobService, Depends(get_jobs)]


def key_matches(given: str, keys: list[str]) -> bool:
    """Whether `given` is one of `keys`, comparing every key in constant time."""
    found = False
    for key in keys:
        found |= hmac.compare_digest(given.encode(), key.encode())
    return found


def require_api_key(
    config: ConfigDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """401 unless API keys are off or the request carries `Authorization: Bearer <key>`."""
    if not config.api_keys:
        return
    if credentials is None or not key_matches(credentials.credentials, config.api_keys):
        raise HTTPException(
            status_code=401,
            detail="missing or invalid API key: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )


# Put on generation routes: `@router.post(..., dependencies=[RequireApiKey])`.
RequireApiKey = Depends(require_api_key)
