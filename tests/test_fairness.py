"""Fair queues (issue 30): jobs are taken round-robin across clients, so one client's ten queued
jobs do not delay another's first by ten; the reconciler counts a queue entry whose job another
worker took in its place."""

from __future__ import annotations

from pathlib import Path

import httpx
from helpers import FORM, add_job, ended, jobs_config, pause_jobs, running

from api.app import create_app
from api.jobs.fairness import fairest
from api.jobs.store import QUEUED, RUNNING, JobStore
from api.jobs.upkeep import reconcile
from engine import ModelCache

SHORT = {**FORM, "iterations": "2"}


def test_the_other_clients_first_job_starts_second(tmp_path: Path, models: ModelCache) -> None:
    app = create_app(jobs_config(tmp_path, api_keys=["a", "b"]), models=models)
    with running(app) as url, httpx.Client(base_url=url) as http:
        pause_jobs(app)  # everything queues first
        jobs = app.state.jobs
        ids = [
            http.post("/jobs", data=SHORT, headers={"Authorization": f"Bearer {key}"}).json()["id"]
            for key in ["a"] * 10 + ["b", "b"]
        ]
        jobs.queue.start_consumer(jobs.runner.run, 1)  # one worker takes them in turn
        done = ended(jobs.store, ids)
    order = [job.id for job in sorted(done, key=lambda job: job.started_at or 0)]
    assert order[:4] == [ids[0], ids[10], ids[1], ids[11]]  # a, b, a, b, then a's others
    assert order[4:] == ids[2:10]
    assert all(job.status == "succeeded" for job in done)


def test_the_least_recently_served_client_goes_first(tmp_path: Path) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}").open()
    add_job(store, "a1" * 16, client_id="a", status=RUNNING, started_at=200.0)
    add_job(store, "a2" * 16, client_id="a")
    add_job(store, "b1" * 16, client_id="b", status="succeeded", started_at=100.0)
    add_job(store, "b2" * 16, client_id="b")
    add_job(store, "c1" * 16, client_id="c")  # never served
    assert fairest(store) == "c1" * 16
    store.cancel_queued("c1" * 16)
    assert fairest(store) == "b2" * 16  # b was served before a
    store.close()


class Entries:
    """A queue whose pending entries are given (for the reconciler)."""

    def __init__(self, pending: set[str]):
        self.pending, self.enqueued = pending, []  # type: list[str]

    def pending_ids(self) -> set[str]:
        return set(self.pending)

    def requeue(self, job_id: str) -> None:
        self.enqueued.append(job_id)


def test_an_entry_whose_job_was_taken_in_its_place_is_not_a_lost_job(tmp_path: Path) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}").open()
    add_job(store, "x" * 32, client_id="a", enqueued_at=1.0)  # its entry woke a worker ...
    add_job(store, "y" * 32, client_id="b", status=RUNNING, enqueued_at=1.0)  # ... that took y
    add_job(store, "z" * 32, client_id="c", enqueued_at=1.0)  # z's entry was lost
    queue = Entries({"y" * 32})
    # y's entry stands for x (the older); z needs an entry again
    assert reconcile(store, queue, grace=10, now=100.0) == ["z" * 32]  # type: ignore[arg-type]
    assert queue.enqueued == ["z" * 32]
    assert store.count(QUEUED) == 2
    store.close()
