"""`GET /gallery`: public, succeeded jobs, newest first (never an e-mail address)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from api.deps import JobsDep, base_url
from api.jobs.schemas import GalleryPage

router = APIRouter(tags=["gallery"])

MAX_PER_PAGE = 100
# Far beyond any gallery, and small enough that (page - 1) * per_page fits an SQL integer.
MAX_PAGE = 1_000_000


@router.get("/gallery", responses={422: {"description": "page or per_page is out of range."}})
async def gallery(
    request: Request,
    jobs: JobsDep,
    page: Annotated[
        int, Query(ge=1, le=MAX_PAGE, description="Page number, from 1 to 1000000.")
    ] = 1,
    per_page: Annotated[
        int, Query(ge=1, le=MAX_PER_PAGE, description="Items per page (1 to 100).")
    ] = 20,
) -> GalleryPage:
    """Public pictures, newest first: prompt, style, quality, aspect, seed, time and links."""
    base = base_url(request)
    return await run_in_threadpool(jobs.gallery, page, per_page, base)
