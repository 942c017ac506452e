"""A scale-out deployment for the tests: PostgreSQL job records, a Redis or PostgreSQL queue,
a shared output directory, `text2art worker` processes and API nodes (`Cluster`, and the
`cluster` fixture that runs a test once per queue)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from helpers import ROOT, TIMING, WorkerProcess
from servers import PostgresServer, RedisServer, free_port

from api.app import create_app
from api.config import ServiceConfig
from api.jobs.store import JobStore
from engine import ModelCache

BACKENDS = ("redis", "postgres")


@dataclass
class Cluster:
    """One deployment: PostgreSQL records, a queue, shared outputs, workers and API nodes."""

    backend: str
    tmp: Path
    postgres: PostgresServer
    redis: RedisServer | None
    database_url: str
    queue_url: str
    models: ModelCache
    workers: list[WorkerProcess] = field(default_factory=list)

    def settings(self) -> dict[str, Any]:
        return {
            "database_url": self.database_url,
            "queue_url": self.queue_url,
            "output_dir": self.tmp / "out",
            "clip_models": ["tiny-random"],
            "cutouts": 4,
            "device": "cpu",
            "preload": False,
            "preview_every": 50,
            "rate_limit": 0,
            **TIMING,
        }

    def worker_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("T2A_")}
        env.update({f"T2A_{k.upper()}": _env_value(v) for k, v in self.settings().items()})
        env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
        return env

    def start_workers(self, n: int, health: bool = False) -> list[WorkerProcess]:
        """Start `n` workers side by side (each with a health server on a free port when
        `health`: `worker.health_port`); returns them once each takes jobs."""
        new = []
        for _ in range(n):
            log, env = self.tmp / f"worker-{len(self.workers)}.log", self.worker_env()
            port = free_port() if health else None
            if port is not None:
                env["T2A_HEALTH_PORT"] = str(port)
            new.append(WorkerProcess(env, log))
            new[-1].health_port = port
            self.workers.append(new[-1])
        for worker in new:
            worker.wait_ready()
        return new

    def api(self) -> TestClient:
        """An API-only node (runs no jobs) on this cluster."""
        config = ServiceConfig(**self.settings(), run_worker_in_process=False)
        return TestClient(create_app(config, models=self.models))

    def store(self) -> JobStore:
        return JobStore(self.database_url).open()

    def restart_broker(self) -> None:
        """Restart the queue's server (Redis loses every entry; PostgreSQL keeps them)."""
        if self.redis is not None:
            self.redis.restart()
        else:
            self.postgres.restart()


def _env_value(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))  # pydantic-settings reads lists as JSON or CSV
    return str(value)


@pytest.fixture(params=BACKENDS)
def cluster(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    postgres_cluster: PostgresServer,
    postgres_db: str,
    models: ModelCache,
) -> Iterator[Cluster]:
    database_url = postgres_db  # (postgres_db restarts the cluster if a scenario stopped it)
    redis = None
    if request.param == "redis":
        redis = request.getfixturevalue("redis_server")
        queue_url = redis.url
    else:
        queue_url = postgres_cluster.create_database().replace("+psycopg", "")
    (tmp_path / "out").mkdir()
    state = Cluster(request.param, tmp_path, postgres_cluster, redis, database_url, queue_url,
                    models)  # fmt: skip
    yield state
    for worker in state.workers:
        if worker.proc.poll() is None:
            worker.stop(signal.SIGKILL, timeout=30)
