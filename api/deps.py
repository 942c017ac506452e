"""Typed dependencies: the services the lifespan put on `app.state`, and the API-key check."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.addresses import client_address
from api.config import ApiConfig, ServiceConfig
from api.gpu import GpuLock
from api.jobs.service import JobService
from api.jobs.submission import Submitter
from api.storage import ArtifactStore
from engine import ModelCache

# auto_error=False: the check below decides (keys are optional), /docs still shows "Authorize".
_bearer = HTTPBearer(auto_error=False, description="One of the keys in T2A_API_KEYS.")


def get_config(request: Request) -> ServiceConfig:
    """The service's configuration."""
    config: ServiceConfig = request.app.state.config
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


API_KEY_MISSING = "missing or invalid API key: send 'Authorization: Bearer <key>'"

ConfigDep = Annotated[ServiceConfig, Depends(get_config)]
ModelsDep = Annotated[ModelCache, Depends(get_models)]
GpuDep = Annotated[GpuLock, Depends(get_gpu)]
ReadinessDep = Annotated[Readiness, Depends(get_readiness)]
ArtifactsDep = Annotated[ArtifactStore, Depends(get_artifacts)]
JobsDep = Annotated[JobService, Depends(get_jobs)]


def matched_key(authorization: str | None, keys: list[str]) -> str | None:
    """The key of `keys` that an `Authorization: Bearer <key>` header carries, else None.

    The scheme is read in any case and spaces around the key are ignored (RFC 7235), so every
    spelling of one key is that key: rate limits count by it. Every key is compared in
    constant time.
    """
    scheme, _, given = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    found = None
    for key in keys:
        if hmac.compare_digest(given.strip().encode(), key.encode()):
            found = key
    return found


def require_api_key(
    request: Request,
    config: ConfigDep,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """401 unless API keys are off or the request carries `Authorization: Bearer <key>`."""
    if (
        config.api_keys
        and matched_key(request.headers.get("authorization"), config.api_keys) is None
    ):
        raise HTTPException(
            status_code=401, detail=API_KEY_MISSING, headers={"WWW-Authenticate": "Bearer"}
        )


# Put on generation routes: `@router.post(..., dependencies=[RequireApiKey])`.
RequireApiKey = Depends(require_api_key)


def client_id(request: Request, api_keys: list[str]) -> str:
    """Whom the rate limit counts: the API key that matched when keys are on, else the client's
    address (taken from X-Forwarded-For only when the peer is one of T2A_TRUSTED_PROXIES), in
    its canonical form (`api.addresses`: every spelling of one address is one client, IPv6 by
    /64). Only a hash is stored.
    """
    key = matched_key(request.headers.get("authorization"), api_keys) if api_keys else None
    who = f"key:{key}" if key else f"ip:{peer(request)}"
    return hashlib.sha256(who.encode()).hexdigest()[:32]


def peer(request: Request) -> str:
    """The client's canonical address (`api.addresses.client_address`)."""
    return client_address(request.client.host if request.client else None)


def base_url(request: Request) -> str:
    """The base of every link the service writes, without a trailing slash: T2A_PUBLIC_URL,
    else the path the app is mounted at, so links are relative ("/jobs/ID"). Never the request's
    Host header: a client could make the service write its own host into Location, the links
    and the e-mails (host header poisoning)."""
    public: str | None = getattr(request.app.state.config, "public_url", None)
    if public:
        return public.rstrip("/")
    return str(request.scope.get("root_path", "")).rstrip("/")


def submitter(request: Request, config: ApiConfig) -> Submitter:
    """Who submits a job and where they reached the service."""
    return Submitter(client_id(request, config.api_keys), base_url(request))
