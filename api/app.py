"""`create_app(config)`: the FastAPI application, with a lifespan that owns the services.

The lifespan builds them with `api.services.build_services` (the same function `text2art worker`
uses), starts them, and puts each on `app.state` (`api.deps` has a typed dependency for each):
- `config`: the `ServiceConfig`, loaded once by the caller;
- `models`: the process's `engine.ModelCache`, shared by every run;
- `gpu`: the process-wide `api.gpu.GpuLock`; every GPU job of the process runs in its `slot()`;
- `artifacts`: the `api.storage.ArtifactStore` holding every result, preview and upload (the
  one T2A_STORAGE_URL names, checked at start);
- `jobs`: the `api.jobs.service.JobService` (queue, worker, notifications, gallery);
- `readiness`: `api.deps.Readiness`, set by the start-up preload and warm-up.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from api.allow import AllowHeader
from api.config import ServiceConfig
from api.deps import Readiness
from api.errors import RunFailed, install_error_handlers
from api.forms import server_overrides
from api.guard import RequestGuard
from api.health_server import HealthServer
from api.jobs.errors import install_refusal_handlers
from api.jobs.outage import install_outage_handlers
from api.jobs.service import JobService
from api.openapi import install_openapi
from api.routes import docs, gallery, generate, health, jobs, outputs, web
from api.runner import run_engine
from api.services import build_services
from engine import ModelCache, Settings, __version__

log = logging.getLogger(__name__)

DESCRIPTION = """\
Type a sentence, get a piece of art. `POST /generate` takes the form fields below (multipart or
urlencoded) and returns the PNG; the response headers give the job id, the seed, the resolved
settings and links to the kept outputs (`/outputs/{id}.png`, `.mp4`, `.svg`). With
`variations=N` (1-4) the PNG is the contact sheet of N pictures from consecutive seeds, each kept
as `/outputs/{id}-{k}.png` and listed in `X-Variation-Urls` and `X-Variation-Seeds`.

```
curl -F prompts="underwater city" -F style="pixel art" -F seed=1 \\
     {server}/generate -o a.png
```
"""


def create_app(config: ServiceConfig | None = None, *, models: ModelCache | None = None) -> FastAPI:
    """The service: routes, CORS, error handlers; the services start in the lifespan.

    `config` defaults to the environment's (read here, once); `models` shares an existing cache
    (tests, or another service in the same process).
    """
    config = config if config is not None else ServiceConfig()
    app = FastAPI(
        title="text2art",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served by routes.docs, without a CDN
        redoc_url=None,
        openapi_url=None,  # served by routes.docs, with this server's address in the examples
    )
    app.state.config = config
    app.state.models = models
    app.add_middleware(AllowHeader)  # inside CORS (preflights are its): Allow on 405, OPTIONS
    app.add_middleware(
        CORSMiddleware,
        allow_origins=config.cors_origins,
        allow_credentials=False,  # browsers refuse credentials with a wildcard origin
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=generate.EXPOSED_HEADERS,
    )
    app.add_middleware(RequestGuard, config=config)  # API key and body size, before the body
    install_error_handlers(app)
    install_outage_handlers(app)  # 503 naming the database or queue, never a bare 500
    install_refusal_handlers(app)  # a full queue, a client over its limits: 503/429
    app.include_router(generate.router)
    app.include_router(outputs.router)
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(gallery.router)
    web.mount_web(app)  # "/" is the web page, "/static/..." its assets
    docs.mount_docs(app)  # "/docs" and "/redoc", their assets in the package
    install_openapi(app, config)  # the schema states this server's limits
    return app


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Build and start the services, preload and warm up in the background, serve, stop."""
    config: ServiceConfig = app.state.config
    services = build_services(config, "api", models=app.state.models)
    state = app.state
    state.models, state.gpu, state.artifacts = services.models, services.gpu, services.artifacts
    state.jobs, state.readiness = services.jobs, Readiness()
    metrics_server = metrics_port_server(config, services.jobs)
    try:
        await anyio.to_thread.run_sync(services.start)  # refuses a broken store or schema
        if metrics_server is not None:
            metrics_server.start()  # /metrics off the public port (T2A_METRICS_PORT)
        async with anyio.create_task_group() as tasks:
            if config.preload and config.run_worker_in_process:
                tasks.start_soon(_preload, app)
            else:  # an API-only node loads no models: its workers do
                state.readiness.state = "ready"
            yield
            tasks.cancel_scope.cancel()  # an unfinished warm-up is abandoned, not awaited
    finally:
        if metrics_server is not None:
            metrics_server.stop()
        await anyio.to_thread.run_sync(services.stop)  # running jobs go back to the queue


def metrics_port_server(config: ServiceConfig, jobs: JobService) -> HealthServer | None:
    """The server of T2A_METRICS_PORT (/metrics, /healthz, /readyz of the queue), if set."""
    if config.metrics_port is None:
        return None

    def ready() -> tuple[bool, dict[str, Any]]:
        health = jobs.probe.check()
        return health.ok, {"ready": health.ok, **health.report()}

    return HealthServer(config.health_host, config.metrics_port, ready, jobs.metrics)


async def _preload(app: FastAPI) -> None:
    """Load the default quality's models and make one tiny run, without blocking start-up."""
    readiness: Readiness = app.state.readiness
    try:
        await anyio.to_thread.run_sync(warm_up, app, abandon_on_cancel=True)
    except RunFailed as exc:  # the service still serves; /readyz and /info say what is wrong
        if exc.code != "weights_missing":  # that one is the server's state, said in one line
            log.exception("warm-up failed")
        readiness.state, readiness.error = "failed", f"warm-up failed: {exc.detail}"
        log.warning("%s", readiness.error)
        return
    except Exception as exc:
        log.exception("warm-up failed")
        readiness.state, readiness.error = "failed", f"warm-up failed: {exc}"
        return
    readiness.state = "ready"
    log.info("ready; models loaded: %s", ", ".join(app.state.models.loaded()))


def warm_up(app: FastAPI) -> None:
    """One 1-step run of the default style at 32x32, so the first request pays no set-up cost."""
    config: ServiceConfig = app.state.config
    run_engine(
        warm_up_settings(config),
        gpu=app.state.gpu,
        models=app.state.models,
        limits=config.limits(),
        bounded=False,
    )


def warm_up_settings(config: ServiceConfig) -> Settings:
    """Draft quality (or the server's model overrides) in the default style."""
    values = {**server_overrides(config), "cutouts": 1}
    return Settings.create(prompts="warm-up", size=(32, 32), iterations=1, seed=0, **values)
