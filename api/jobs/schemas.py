"""Wire schemas of the jobs API (what clients read), separate from the stored `Job` rows."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, Field

from api.jobs.store import Job
from api.storage import STEP_KEY, output_url, variation_keys
from engine import picture_seed


class Progress(BaseModel):
    """How far a job is."""

    iteration: int = Field(description="Iterations done.")
    total: int = Field(description="Iterations in all.")
    fraction: float = Field(description="iteration / total, 0 to 1.")
    frame: int = Field(0, description="An animation's frame (1-based) being made; 0: a still.")
    frames: int = Field(0, description="An animation's frames; 0: a still picture.")


class VariationLink(BaseModel):
    """One picture of a batch of variations, with the seed that makes it alone."""

    index: int = Field(description="Its place in the batch, from 1.")
    seed: int = Field(description="Its seed: the job's seed + index - 1.")
    image: str = Field(description="Its PNG (metadata: its own seed, variations 1).")
    svg: str | None = Field(None, description="Its SVG (painting style).")


class JobLinks(BaseModel):
    """Where to follow, cancel and fetch a job."""

    self: str
    events: str = Field(description="Server-Sent Events: position, progress, preview, status.")
    preview: str = Field(description="The latest intermediate image (the final one when done).")
    cancel: str = Field(description="POST with the delete_token to cancel.")
    image: str | None = Field(
        None, description="The PNG; with variations, the contact sheet of every picture."
    )
    video: str | None = None
    svg: str | None = None
    variations: list[VariationLink] = Field(
        default_factory=list,
        description="Each picture of a batch (settings.variations > 1) with its seed; empty "
        "for a single picture.",
    )
    steps: list[str] = Field(
        default_factory=list,
        description="The picture every settings.save_every iterations, in order (empty without).",
    )


class JobPublic(BaseModel):
    """A job as anyone who knows its id sees it (never the e-mail, the token or the webhook)."""

    id: str
    status: str = Field(description="queued | running | succeeded | failed | cancelled")
    position: int | None = Field(description="Queued jobs ahead of this one (0: next).")
    gpu_position: int | None = Field(
        None,
        description="Running, but waiting for the GPU of its worker (behind a POST /generate "
        "or another job): runs ahead of it (0: next); null once it runs.",
    )
    progress: Progress
    eta_seconds: float | None = Field(description="Rough seconds until it is done.")
    estimate_seconds: float | None = Field(
        None,
        description="The cost model's estimate of the whole run on this server, in seconds, "
        "made when it was submitted (checked against T2A_MAX_COST).",
    )
    created_at: str
    started_at: str | None
    finished_at: str | None
    error: str | None = Field(description="Why it failed, in words a person can act on.")
    settings: dict[str, Any] = Field(description="The resolved settings (seed included).")
    public: bool = Field(description="Listed in the gallery once it succeeds.")
    attempts: int = Field(description="Times a worker started it.")
    resumed_from: int = Field(
        0,
        description="The iteration the current (or last) attempt continued at, from the state "
        "a stopped attempt saved (0: it started afresh).",
    )
    warning: str | None = Field(
        None, description="Something that did not fail the job but its owner should know."
    )
    cancel_requested: bool
    notifications: dict[str, str | None] = Field(description="E-mail and webhook delivery.")
    links: JobLinks


class JobCreated(BaseModel):
    """The answer to a submission: keep the delete_token, it is shown only once."""

    id: str
    status: str
    position: int | None
    links: JobLinks
    delete_token: str = Field(description="Secret needed to cancel or delete the job.")


class GalleryItem(BaseModel):
    """One public picture."""

    id: str
    prompt: str
    style: str
    quality: str
    aspect: str
    seed: int | None
    size: list[int] | None
    created_at: str
    links: dict[str, str]
    variations: list[VariationLink] = Field(
        default_factory=list, description="Each picture of a batch with its seed (else empty)."
    )


class GalleryPage(BaseModel):
    """A page of the gallery, newest first."""

    items: list[GalleryItem]
    page: int
    per_page: int
    total: int
    pages: int


def iso(ts: float | None) -> str | None:
    """Epoch seconds -> ISO 8601 UTC."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


def job_links(base: str, job: Job) -> JobLinks:
    """Absolute links of a job under `base` (no trailing slash)."""
    jobs = f"{base}/jobs/{job.id}"
    files = {key: output_url(base, job.id, key) for key in job.outputs or []}
    return JobLinks(
        self=jobs,
        events=f"{jobs}/events",
        preview=f"{jobs}/preview.png",
        cancel=f"{jobs}/cancel",
        image=files.get("png"),
        video=files.get("mp4"),
        svg=files.get("svg"),
        variations=variation_links(job, files),
        steps=[url for key, url in files.items() if STEP_KEY.fullmatch(key)],
    )


def variation_links(job: Job, files: dict[str, str]) -> list[VariationLink]:
    """The pictures of a batch among the job's kept files (by output key), with their seeds."""
    first = (job.settings or {}).get("seed")
    if not isinstance(first, int):
        return []
    return [
        VariationLink(
            index=i, seed=picture_seed(first, i), image=files[key], svg=files.get(f"{i}.svg")
        )
        for i, key in variation_keys(list(files)).items()
    ]
