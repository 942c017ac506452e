"""Scale-out against real servers: PostgreSQL job records, a Redis or a PostgreSQL queue, API
nodes that run no jobs, and `text2art worker` processes that are killed, stopped and cut off.

Every scenario runs for both queues. The workers are real processes (started as the CLI starts
them, with the tiny offline models), so `kill -9` is a real crash; the API nodes run in this
process on the same database, queue and output directory. Heartbeats, the dead-worker check and
the reconciler run at second scale here, so each scenario takes seconds, not minutes.
"""

from __future__ import annotations

import json
import signal
import threading
import time

from cluster import Cluster
from fastapi.testclient import TestClient
from helpers import (
    FORM,
    SHORT,
    WorkerProcess,
    ended,
    http_get,
    job,
    parse_sse,
    submit,
    wait_for,
)

from api.app import create_app
from api.config import ServiceConfig
from api.jobs.queue import JobQueue
from api.jobs.store import CANCELLED, RUNNING, SUCCEEDED, Job, JobStore
from engine import ModelCache

LONG = 400  # iterations of a job that runs for seconds (killed, stopped or cut off mid-run)


# -- helpers -----------------------------------------------------------------------------------
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
        ids = [submit(client, iterations=SHORT, seed=i)["id"] for i in range(10)]
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
        job_id = submit(client, iterations=LONG, seed=1)["id"]
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


class _Scraper:
    """Polls a worker's /metrics and /readyz until it exits; keeps what it last saw."""

    def __init__(self, port: int) -> None:
        self.base, self.metrics = f"http://127.0.0.1:{port}", ""
        self.states: list[str] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._done.wait(0.2):
            try:
                ready = json.loads(http_get(f"{self.base}/readyz")[1])
                self.states.append(ready.get("state", "up"))
                self.metrics = http_get(f"{self.base}/metrics")[1]
            except OSError:  # not up yet, or gone
                continue

    def stop(self) -> None:
        self._done.set()
        self._thread.join(5)


def test_sigterm_hands_the_running_job_back(cluster: Cluster) -> None:
    first, second = cluster.start_workers(2, health=True)
    scrapers = {w.identity: _Scraper(w.health_port or 0) for w in (first, second)}
    with cluster.api() as client:
        job_id = submit(client, iterations=LONG, seed=1)["id"]
    store = cluster.store()
    victim = owner(cluster, running_at(store, job_id))
    stopped_at = time.monotonic()
    assert victim.stop(signal.SIGTERM) == 0, victim.output()[-3000:]
    scraper = scrapers[victim.identity]
    scraper.stop()
    assert "interrupted by shutdown; queued again" in victim.output()
    (done,) = ended(store, [job_id])
    print(f"[{cluster.backend}] SIGTERM: done {time.monotonic() - stopped_at:.1f} s later")
    assert done.status == SUCCEEDED and done.attempts == 1  # the hand-back did not count
    assert done.worker_id == ({first, second} - {victim}).pop().identity
    # Its last scrape came after the hand-back (it waited for one), and it said "stopping".
    assert 'text2art_jobs_requeued_total{reason="shutdown"} 1.0' in scraper.metrics
    assert "stopping" in scraper.states
    scrapers[({first, second} - {victim}).pop().identity].stop()
    store.close()


def test_queued_jobs_survive_a_broker_restart(cluster: Cluster) -> None:
    cluster.start_workers(1)
    store = cluster.store()
    with cluster.api() as client:
        busy = submit(client, iterations=LONG, seed=1)["id"]
        running_at(store, busy)
        waiting = [submit(client, iterations=SHORT, seed=i)["id"] for i in range(4)]
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
    (worker,) = cluster.start_workers(1)
    store = cluster.store()
    with cluster.api() as client:
        job_id = submit(client, iterations=LONG, seed=1)["id"]
        running_at(store, job_id)
        before = len(worker.output())
        cluster.postgres.stop()
        try:
            answers = [client.get(f"/jobs/{job_id}"), client.post("/jobs", data=FORM)]
            answers.append(client.get(f"/jobs/{job_id}/events"))
            # The worker's writes fail meanwhile: its heartbeat (every 0.5 s) says so in its log.
            failed = "worker heartbeat: the database is unavailable"
            wait_for(lambda: failed in worker.output()[before:], 30, "a failed worker write")
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
        made = submit(one, iterations=SHORT, seed=1)
        events = parse_sse(other.get(f"/jobs/{made['id']}/events").text)  # until it ends
        assert events[-1]["event"] == "status"
        assert events[-1]["data"]["status"] == SUCCEEDED
        assert other.get(f"/outputs/{made['id']}.png").status_code == 200
        long = submit(one, iterations=LONG * 4, seed=1)
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
