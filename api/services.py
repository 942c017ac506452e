"""The one place that builds a process's services from its `ServiceConfig`.

`text2art serve` (through `create_app`'s lifespan) and `text2art worker` both call
`build_services(config, role)`: the job database, the queue, the artifact store, the model cache,
the GPU lock, the metrics and the `JobService` that holds them. Building does no I/O (nothing
connects, no file is made); `Services.start()` does (the database's schema, the queue's
connection, the store's check), and `stop()` undoes it. Tests pass their own model cache or a
failing store through the same function.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from api.artifacts import open_artifact_store
from api.config import ServiceConfig
from api.gpu import GpuLock
from api.jobs.outage import Outages
from api.jobs.queue import JobQueue
from api.jobs.service import JobService
from api.jobs.store import QUEUED, RUNNING, JobStore
from api.metrics import Metrics, Probes, gpu_memory_in_use
from api.storage import ArtifactStore
from engine import ModelCache


@dataclass
class Services:
    """What one process serves and runs with; `jobs` holds the database, queue and store."""

    config: ServiceConfig
    role: str  # "api" (text2art serve) or "worker" (text2art worker)
    models: ModelCache
    gpu: GpuLock
    artifacts: ArtifactStore
    jobs: JobService

    def start(self, run_worker: bool | None = None) -> None:
        """Connect and check everything, then run jobs here when `run_worker` (default: the
        config's run_worker_in_process). Raises the refusals an operator must fix
        (SchemaOutdated, StorageMismatch, StorageError)."""
        self.jobs.start(run_worker)

    def stop(self) -> None:
        """Hand running jobs back to the queue and close every connection."""
        self.jobs.stop()


def build_services(
    config: ServiceConfig,
    role: str = "api",
    *,
    models: ModelCache | None = None,
    artifacts: ArtifactStore | None = None,
) -> Services:
    """Every service of a process, built from `config` alone (`models` shares a cache that is
    already loaded; `artifacts` replaces the configured store, for tests). No I/O."""
    url = config.resolved_database_url(config.output_dir)
    store = JobStore(url, config.auto_migrate, deadline=config.db_deadline_seconds)
    queue = JobQueue(config.resolved_queue_url(config.output_dir), config.queue_name)
    artifacts = artifacts if artifacts is not None else open_artifact_store(config)
    models = models if models is not None else ModelCache()
    gpu = GpuLock(config.max_waiting)
    outages = Outages()
    metrics = Metrics(role, job_probes(store, config.stale_after_seconds))
    outages.on_failure = metrics.infra_error
    jobs = JobService(
        config, store=store, queue=queue, artifacts=artifacts, models=models, gpu=gpu,
        metrics=metrics, outages=outages,
    )  # fmt: skip
    return Services(config, role, models, gpu, artifacts, jobs)


def job_probes(store: JobStore, stale_after: float) -> Probes:
    """What `/metrics` reads from the job database (and the GPU) at each scrape."""
    return Probes(
        queue_depth=lambda: store.count(QUEUED),
        running=lambda: store.count(RUNNING),
        live_workers=lambda: len(store.live_workers(time.time() - stale_after)),
        gpu_memory_bytes=gpu_memory_in_use,
    )
