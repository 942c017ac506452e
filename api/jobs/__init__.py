"""Jobs: a durable queue (SQL records + huey), a worker, live progress, e-mail and webhooks.

`start_jobs` / `stop_jobs` are the app lifespan's hooks; `api.jobs.service.JobService` is the
facade the routes use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool

if TYPE_CHECKING:
    from fastapi import FastAPI

    from api.jobs.service import JobService


async def start_jobs(app: FastAPI) -> JobService:
    """A started `JobService` sharing the app's GPU lock, model cache and artifact store."""
    from api.jobs.config import service_config
    from api.jobs.service import JobService

    config = service_config(app.state.config)
    state = app.state
    service = JobService(config, gpu=state.gpu, models=state.models, artifacts=state.artifacts)
    await run_in_threadpool(service.start)
    return service


async def stop_jobs(app: FastAPI) -> None:
    """Stop the app's job service (running jobs go back to the queue)."""
    service = getattr(app.state, "jobs", None)
    if service is not None:
        await run_in_threadpool(service.stop)
