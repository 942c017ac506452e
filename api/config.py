"""The service's configuration, read from `T2A_*` environment variables (pydantic-settings).

`ServiceConfig` is the one configuration object of a process (`text2art serve`, `text2art
worker`): its entry point builds it once, `ServiceConfig()` (the environment; the commands go
through `api.cli_common.load_config`) or `ServiceConfig(clip_models=["tiny-random"], ...)`
(tests), and hands it to `create_app` or `build_services`; nothing reads the environment again.
Its fields come in two groups: `ApiConfig` here (the HTTP service) and `api.jobs.config.JobsConfig`
(queue, limits, e-mail, webhooks). Nothing is read at import time.

Every field is documented in the README ("HTTP service" and "Jobs" sections).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from api.jobs.config import JobsConfig
from engine import Limits


def _limit(name: str) -> Any:
    """The `engine.Limits` field (default, bounds, description), so the two never disagree."""
    info: FieldInfo = copy.deepcopy(Limits.model_fields[name])
    return info


def _split_commas(value: Any) -> Any:
    """'a, b' -> ['a', 'b'] (environment variables hold comma-separated lists)."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


# A list read from one comma-separated variable instead of pydantic-settings' JSON.
CommaList = Annotated[list[str], NoDecode]


class ApiConfig(BaseSettings):
    """The HTTP service's fields of `ServiceConfig`; each is read from `T2A_<FIELD NAME>`."""

    model_config = SettingsConfigDict(env_prefix="T2A_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address `text2art serve` binds to.")
    port: int = Field(8000, ge=0, le=65535, description="Port `text2art serve` listens on.")
    device: str | None = Field(
        None, description="torch device for every run, e.g. 'cuda:0' (default: cuda if any)."
    )
    output_dir: Path = Field(
        Path("outputs"), description="Where every result (PNG, MP4, SVG) and upload is kept."
    )
    storage_url: str | None = Field(
        None,
        description="Where results, previews and uploads are kept: a directory, or "
        "'s3://BUCKET/PREFIX' for S3-compatible storage (default: OUTPUT_DIR; with a bucket, "
        "OUTPUT_DIR only stages files).",
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3 endpoint for MinIO, R2, GCS... (default: AWS S3)."
    )
    s3_region: str | None = Field(
        None, description="S3 region (default: AWS_REGION / AWS_DEFAULT_REGION)."
    )
    s3_presign: bool = Field(
        False, description="Serve outputs by a 302 to a presigned URL instead of streaming them."
    )
    s3_presign_expiry: int = Field(
        3600, ge=1, le=7 * 24 * 3600, description="Seconds a presigned output URL is valid."
    )
    cors_origins: CommaList = Field(
        default_factory=lambda: ["*"],
        description="Origins allowed by CORS, comma-separated; '*' is any origin "
        "(credentials are never allowed).",
    )
    max_waiting: int = Field(
        8, ge=0, description="Requests that may wait for the GPU; one more gets 503."
    )
    retry_after: int = Field(
        30, ge=1, description="Seconds sent in Retry-After with a 503 when the GPU is busy."
    )
    api_keys: CommaList = Field(
        default_factory=list,
        repr=False,  # secrets stay out of logs
        description="Comma-separated API keys; when set, generation needs "
        "'Authorization: Bearer <key>'.",
    )
    clip_models: CommaList | None = Field(
        None,
        description="CLIP models for every request, comma-separated (e.g. 'tiny-random'); "
        "overrides the quality presets.",
    )
    vqgan_model: str | None = Field(
        None, description="VQGAN checkpoint for every request (e.g. 'tiny-random')."
    )
    cutouts: int | None = Field(
        None, ge=1, description="Cutouts per step for every request (default: the engine's)."
    )
    max_upload_bytes: int = Field(
        10 * 1024 * 1024, ge=1, description="Largest uploaded image, in bytes."
    )
    max_upload_pixels: int = Field(
        4096 * 4096,
        ge=1,
        description="Largest uploaded image in pixels (guards against decompression bombs).",
    )
    preload: bool = Field(
        True, description="Load the default quality's models and warm up at start-up."
    )
    max_request_bytes: int = Field(
        100 * 1024 * 1024,
        ge=1,
        description="Largest request body, in bytes (all uploads and fields together); a larger "
        "one gets 413 before it is read.",
    )
    trusted_proxies: CommaList = Field(
        default_factory=list,
        description="Addresses of reverse proxies whose X-Forwarded-For/-Proto are believed, "
        "comma-separated (e.g. '127.0.0.1' behind a local nginx or ngrok; default: none).",
    )
    # Limits of every request (engine.Limits), e.g. T2A_MAX_PIXELS.
    max_pixels: int = _limit("max_pixels")
    max_iterations: int = _limit("max_iterations")
    max_cutouts: int = _limit("max_cutouts")
    max_prompt_chars: int = _limit("max_prompt_chars")
    max_prompts: int = _limit("max_prompts")
    max_strokes: int = _limit("max_strokes")
    max_scale: float = _limit("max_scale")
    max_variations: int = _limit("max_variations")

    _split = field_validator(
        "cors_origins", "api_keys", "clip_models", "trusted_proxies", mode="before"
    )(_split_commas)

    def proxy_options(self, local_proxy: bool = False) -> dict[str, Any]:
        """uvicorn's options for forwarded headers: believed only from the trusted proxies
        (with `local_proxy`, an ngrok agent on this host, 127.0.0.1 when none is configured)."""
        trusted = self.trusted_proxies or (["127.0.0.1"] if local_proxy else [])
        if not trusted:
            return {"proxy_headers": False}
        return {"proxy_headers": True, "forwarded_allow_ips": ",".join(trusted)}

    def limits(self) -> Limits:
        """The engine limits every request is checked against."""
        return Limits(**{name: getattr(self, name) for name in Limits.model_fields})


class ServiceConfig(JobsConfig, ApiConfig):
    """The configuration of a process that serves (`text2art serve`) or runs (`text2art worker`)
    jobs: the HTTP service's fields and the jobs'."""

    model_config = SettingsConfigDict(env_prefix="T2A_", extra="ignore")
