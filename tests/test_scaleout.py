"""Scale-out against real servers: PostgreSQL job records, a Redis or a PostgreSQL queue, API
nodes that run no jobs, and `text2art worker` processes that are killed, stopped and cut off.

Every scenario runs for both queues. The workers are real processes (started as the CLI starts
them, with the tiny offline models), so `kill -9` is a real crash; the API nodes run in this
process on the same database, queue and output directory. Heartbeats, the dead-worker check and
the reconciler run at second scale here, so each scenario takes seconds, not minutes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from servers import PostgresServer, RedisServer
from test_jobs import FORM, parse_sse, wait_for

from api.app import create_app
from api.jobs.config import ServiceConfig
from api.jobs.queue import JobQueue
from api.jobs.store import CANCELLED, FINAL, RUNNING, SUCCEEDED, Job, JobStore
from engine import ModelCache

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("redis", "postgres")
LONG = 400  # iterations of a job that runs for seconds (killed, stopped or cut off mid-run)
SHORT = 10
TIMING = {  # second-scale policy, as the workers read it from the environment
    "heartbeat_seconds": 0.5,
    "stale_after_seconds": 4.0,
    "reconcile_seconds": 1.0,
    "progress_interval": 0.2,
    "max_requeues": 1,
    "db_retry_seconds": 60.0,
    "shutdown_timeout": 15.0,
}


class WorkerProcess:
    """One `text2art worker` process, its output in a log file."""

    def __init__(
        self,
        env: dict[str, str],
        log: Path,
        code: str = "from api.cli_worker import worker; worker()",
    ):
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code], env=env, cwd=ROOT, stdout=out, stderr=out
            )
        self.identity = ""

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until it says it takes jobs (its identity is then known)."""

        def ready() -> str | None:
            assert self.proc.poll() is None, f"the worker exited:\n{self.output()[-3000:]}"
            found = re.search(r"worker (\S+) is taking jobs", self.output())
            return found.group(1) if found else None

        self.identity = wait_for(ready, timeout, "worker start-up")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Send `sig` and wait for the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


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

    def start_workers(self, n: int) -> list[WorkerProcess]:
        """Start `n` workers side by side; returns them once each takes jobs."""
        new = []
        for _ in range(n):
            log = self.tmp / f"worker-{len(self.workers)}.log"
            new.append(WorkerProcess(self.worker_env(), log))
            self.workers.append(new[-1])
        for worker in new:
            worker.wait_ready()
        return new

    def api(self) -> TestClient:
        """An API-only node (runs no jobs) on this cluster."""
        config = ServiceConfig(**self.settings(), run_worker_in_process=False)
        return TestClient(create_app(config, models=self.models))

    def store(self) -> JobStore:
        return JobStore(self.database_url)

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


# -- helpers -----------------------------------------------------------------------------------
def submit(client: TestClient, iterations: int, seed: int = 1) -> dict[str, Any]:
    fields = {**FORM, "iterations": str(iterations), "seed": str(seed)}
    response = client.post("/jobs", data=fields)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def job(store: JobStore, job_id: str) -> Job:
    found = store.get(job_id)
    assert found is not None, f"job {job_id} is gone"
    return found


def ended(store: JobStore, ids: list[str], timeout: float = 90.0) -> list[Job]:
    """The jobs once every one reached a final state."""

    def all_final() -> list[Job] | None:
        jobs = [job(store, i) for i in ids]
        return jobs if all(j.status in FINAL for j in jobs) else None

    result: list[Job] = wait_for(all_final, timeout, f"jobs {ids} ending")
    return result


def running_at(store: JobStore, job_id: str, iteration: int = 5, timeout: float = 60.0) -> Job:
    """The job once it runs and has passed `iteration`."""

    def check() -> Job | None:
        found = job(store, job_id)
        return found if found.status == RUNNING and found.iteration >= iteration else None

    result: Job = wait_for(check, timeout, f"job {job_id} running")
    return result


def owner(cluster: Cluster, running: Job) -> WorkerProcess:
    """The worker process that runs the job."""
    return next(w for w in cluster.workers if w.identity == running.worker_id)


def outputs_of(cluster: Cluster, job_id: str) -> list[str]:
    """The job's files in the shared output directory."""
    return sorted(p.name for p in (cluster.tmp / "out").glob(f"{job_id}*"))


# -- scenarios ---------------------------------------------------------------------------------
def test_two_workers_share_ten_jobs(cluster: Cluster) -> None:
    cluster.start_workers(2)
    with cluster.api() as client:
        ids = [submit(client, SHORT, seed=i)["id"] for i in range(10)]
    store = cluster.store()
    jobs = ended(store, ids)
    assert [j.status for j in jobs] == [SUCCEEDED] * 10
    assert [j.attempts for j in jobs] == [1] * 10  # each ran once
    assert {j.worker_id for j in jobs} == {w.identity for w in cluster.workers}  # both worked
    assert all(outputs_of(cluster, j.id) == [f"{j.id}.png"] for j in jobs)
    store.close()


def test_a_killed_worker_s_job_is_finished_by_the_other(cluster: Cluster) -> None:
    cluster.start_workers(2)
    with cluster.api() as client:
        job_id = submit(client, LONG)["id"]
    store = cluster.store()
    victim = owner(cluster, running_at(store, job_id))
    killed_at = time.monotonic()
    victim.stop(signal.SIGKILL)
    (done,) = ended(store, [job_id])
    recovery = time.monotonic() - killed_at
    assert done.status == SUCCEEDED and done.attempts == 2, done.error
    assert done.worker_id != victim.identity
    assert outputs_of(cluster, job_id) == [f"{job_id}.png"]  # one set of outputs
    print(f"[{cluster.backend}] kill -9: finished by the other worker {recovery:.1f} s later")
    store.close()


def test_sigterm_hands_the_running_job_back(cluster: Cluster) -> None:
    first, second = cluster.start_workers(2)
    with cluster.api() as client:
        job_id = submit(client, LONG)["id"]
    store = cluster.store()
    victim = owner(cluster, running_at(store, job_id))
    stopped_at = time.monotonic()
    assert victim.stop(signal.SIGTERM) == 0, victim.output()[-3000:]
    assert "interrupted by shutdown; queued again" in victim.output()
    (done,) = ended(store, [job_id])
    print(f"[{cluster.backend}] SIGTERM: done {time.monotonic() - stopped_at:.1f} s later")
    assert done.status == SUCCEEDED and done.attempts == 1  # the hand-back did not count
    assert done.worker_id == ({first, second} - {victim}).pop().identity
    store.close()


def test_queued_jobs_survive_a_broker_restart(cluster: Cluster) -> None:
    cluster.start_workers(1)
    store = cluster.store()
    with cluster.api() as client:
        busy = submit(client, LONG)["id"]
        running_at(store, busy)
        waiting = [submit(client, SHORT, seed=i)["id"] for i in range(4)]
    queue = JobQueue(cluster.queue_url, "text2art")
    assert set(waiting) <= queue.pending_ids()
    restarted_at = time.monotonic()
    cluster.restart_broker()
    if cluster.backend == "redis":  # no persistence: the entries are gone, the records not
        assert queue.pending_ids() == set()
    queue.close()
    jobs = ended(store, [busy, *waiting], timeout=120)
    took = time.monotonic() - restarted_at
    print(f"[{cluster.backend}] broker restart: all 5 done {took:.1f} s later")
    assert [j.status for j in jobs] == [SUCCEEDED] * 5
    assert [j.attempts for j in jobs] == [1] * 5
    store.close()


def test_a_database_outage_during_a_run(cluster: Cluster) -> None:
    cluster.start_workers(1)
    store = cluster.store()
    with cluster.api() as client:
        job_id = submit(client, LONG)["id"]
        running_at(store, job_id)
        cluster.postgres.stop()
        try:
            answers = [client.get(f"/jobs/{job_id}"), client.post("/jobs", data=FORM)]
            answers.append(client.get(f"/jobs/{job_id}/events"))
            time.sleep(2.5)  # long enough for the worker's writes to fail meanwhile
            ready = client.get("/readyz")
        finally:
            cluster.postgres.start()
            back_at = time.monotonic()
        for answer in answers:
            assert answer.status_code == 503, answer.text
            assert answer.json()["service"] == "database" and answer.headers["retry-after"]
        assert ready.status_code == 503 and ready.json()["database"]["ok"] is False
        (done,) = ended(store, [job_id], timeout=120)
        print(f"[{cluster.backend}] database outage: done {time.monotonic() - back_at:.1f} s after")
        assert done.status == SUCCEEDED and done.attempts == 1, done.error
        assert client.get(f"/outputs/{job_id}.png").status_code == 200
    store.close()


def test_two_api_nodes_share_the_jobs(cluster: Cluster) -> None:
    cluster.start_workers(1)
    store = cluster.store()
    with cluster.api() as one, cluster.api() as other:
        made = submit(one, SHORT)
        events = parse_sse(other.get(f"/jobs/{made['id']}/events").text)  # until it ends
        assert events[-1]["event"] == "status"
        assert events[-1]["data"]["status"] == SUCCEEDED
        assert other.get(f"/outputs/{made['id']}.png").status_code == 200
        long = submit(one, LONG * 4)
        running_at(store, long["id"])
        mine = {"X-Delete-Token": long["delete_token"]}
        cancelled = other.post(f"/jobs/{long['id']}/cancel", headers=mine)
        assert cancelled.status_code == 200 and cancelled.json()["status"] == CANCELLED
        token = {"X-Delete-Token": made["delete_token"]}
        assert other.delete(f"/jobs/{made['id']}", headers=token).status_code == 204
        assert one.get(f"/jobs/{made['id']}").status_code == 404
        assert one.get(f"/outputs/{made['id']}.png").status_code == 404
        ready = one.get("/readyz").json()
        assert ready["workers"]["live"] == 1 and ready["role"] == "api"
    store.close()


def test_generate_on_an_api_only_node_runs_on_a_worker(cluster: Cluster) -> None:
    cluster.start_workers(1)
    models = ModelCache()  # the node's own cache: it must stay empty
    config = ServiceConfig(**cluster.settings(), run_worker_in_process=False)
    with TestClient(create_app(config, models=models)) as node:
        data = {**FORM, "iterations": str(SHORT), "seed": "20", "variations": "2"}
        answer = node.post("/generate", data=data)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "image/png"
        assert answer.content.startswith(b"\x89PNG")
        job_id = answer.headers["x-job-id"]
        assert node.get(answer.headers["x-image-url"]).content == answer.content  # the sheet
        assert answer.headers["x-variation-seeds"] == "20, 21"
        second = answer.headers["x-variation-urls"].split(", ")[1]
        assert second.endswith(f"/outputs/{job_id}-2.png")
        assert node.get(second).content.startswith(b"\x89PNG")
    assert models.loaded() == []  # no model was loaded on the API node
    store = cluster.store()
    record = job(store, job_id)
    assert record.status == SUCCEEDED and record.worker_id == cluster.workers[0].identity
    store.close()
