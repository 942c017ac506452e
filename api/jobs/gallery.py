"""The public gallery: succeeded jobs their owners made public, newest first."""

from __future__ import annotations

import math

from api.jobs.schemas import GalleryItem, GalleryPage, iso, job_links
from api.jobs.store import Job, JobStore


def gallery_page(store: JobStore, page: int, per_page: int, base: str) -> GalleryPage:
    """One page of public succeeded jobs, with links under `base`."""
    jobs, total = store.gallery(page, per_page)
    items = [gallery_item(job, base) for job in jobs]
    pages = math.ceil(total / per_page)
    return GalleryPage(items=items, page=page, per_page=per_page, total=total, pages=pages)


def gallery_item(job: Job, base: str) -> GalleryItem:
    """What the gallery shows of a job (never its e-mail address)."""
    s = job.settings
    every = job_links(base, job)
    links = every.model_dump(include={"self", "image", "video", "svg"})
    return GalleryItem(
        id=job.id,
        prompt=job.prompt,
        style=s.get("style", ""),
        quality=s.get("quality", ""),
        aspect=s.get("aspect", ""),
        seed=s.get("seed"),
        size=s.get("size"),
        created_at=iso(job.created_at) or "",
        links={("job" if k == "self" else k): v for k, v in links.items() if v},
        variations=every.variations,
    )
