"""The soak: 100 jobs through three workers while workers are killed (kill -9) and stopped
(SIGTERM) and the database is refused and black-holed (a TCP proxy between the workers and
PostgreSQL): nothing is lost, run twice at once, stranded or charged a try it should not be.

Slow (minutes): `python -m pytest -m slow tests/test_soak.py -s` prints the figures.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from collections import Counter

import pytest
from cluster import Cluster
from fastapi.testclient import TestClient
from faults import FaultProxy
from helpers import SHORT, WorkerProcess, ended, submit, wait_for

from api.app import create_app
from api.config import ServiceConfig
from api.jobs.store import RUNNING, SUCCEEDED, JobStore

JOBS, WORKERS, KILLS, STOPS = 100, 3, 5, 2
OUTAGE = {"db_retry_seconds": 5.0, "db_deadline_seconds": 5.0}  # outages below: 3x the window


def _through(url: str, proxy: FaultProxy) -> str:
    head, _, tail = url.rpartition(":")
    return f"{head}:{proxy.port}/{tail.split('/', 1)[1]}"


class _Soak:
    """The cluster's workers, all reaching PostgreSQL through one proxy."""

    def __init__(self, cluster: Cluster, proxy: FaultProxy) -> None:
        self.cluster, self.proxy = cluster, proxy
        self.store = JobStore(cluster.database_url).open()
        self.events: list[tuple[float, str]] = []
        self._started = time.monotonic()

    def env(self) -> dict[str, str]:
        env = self.cluster.worker_env()
        env["T2A_DATABASE_URL"] = _through(self.cluster.database_url, self.proxy)
        if self.cluster.backend == "postgres":  # the queue lives in PostgreSQL too
            env["T2A_QUEUE_URL"] = _through(self.cluster.queue_url, self.proxy)
        env.update({f"T2A_{k.upper()}": str(v) for k, v in OUTAGE.items()})
        return env

    def start_worker(self) -> WorkerProcess:
        log = self.cluster.tmp / f"worker-{len(self.cluster.workers)}.log"
        worker = WorkerProcess(self.env(), log)
        self.cluster.workers.append(worker)
        worker.wait_ready()
        return worker

    def api(self) -> TestClient:
        """An API-only node straight to PostgreSQL, without the per-client caps."""
        limits = {"max_jobs_per_client": 0, "max_queued": 10 * JOBS}
        config = ServiceConfig(**self.cluster.settings(), run_worker_in_process=False, **limits)
        return TestClient(create_app(config, models=self.cluster.models))

    def note(self, what: str) -> None:
        self.events.append((time.monotonic() - self._started, what))

    def busy_worker(self) -> WorkerProcess:
        """A live worker that runs a job now."""

        def find() -> WorkerProcess | None:
            owners = {j.worker_id for j in self.store.running() if j.status == RUNNING}
            live = [w for w in self.cluster.workers if w.proc.poll() is None]
            return next((w for w in live if w.identity in owners), None)

        found: WorkerProcess = wait_for(find, 120, "a worker running a job")
        return found

    def chaos(self) -> None:
        """Kills, stops and outages, one after another, each replaced worker started anew."""
        for round_ in range(KILLS + STOPS):
            victim = self.busy_worker()
            if round_ < KILLS:
                victim.stop(signal.SIGKILL)
                self.note(f"kill -9 {victim.identity}")
            else:
                assert victim.stop(signal.SIGTERM) == 0, victim.output()[-2000:]
                self.note(f"SIGTERM {victim.identity}")
            self.start_worker()
            if round_ == 1:
                self.outage("refuse", 3 * OUTAGE["db_retry_seconds"])
            if round_ == 4:
                self.outage("blackhole", 3 * OUTAGE["db_retry_seconds"])

    def outage(self, fault: str, seconds: float) -> None:
        self.busy_worker()
        getattr(self.proxy, fault)()
        self.note(f"database {fault} for {seconds:g} s")
        time.sleep(seconds)
        self.proxy.heal()
        self.note("database back")


@pytest.mark.slow
def test_a_soak_through_kills_stops_and_outages_loses_nothing(cluster: Cluster) -> None:
    proxy = FaultProxy(int(cluster.database_url.rpartition(":")[2].split("/", 1)[0]))
    soak = _Soak(cluster, proxy)
    began = time.monotonic()
    try:
        for _ in range(WORKERS):
            soak.start_worker()
        with soak.api() as one, soak.api() as two:
            ids = [submit((one, two)[i % 2], iterations=3 * SHORT, seed=i)["id"]
                   for i in range(JOBS)]  # fmt: skip
        chaos = threading.Thread(target=soak.chaos, daemon=True)
        chaos.start()
        chaos.join(600)
        jobs = ended(soak.store, ids, timeout=600)
        took = time.monotonic() - began
    finally:
        proxy.heal()
        soak.store.close()
    logs = "\n".join(w.output() for w in cluster.workers)
    finishes = Counter(re.findall(r"job (\w{32}): succeeded", logs))
    attempts = Counter(j.attempts for j in jobs)
    outputs = {j.id: sorted(p.name for p in (cluster.tmp / "out").glob(f"{j.id}*")) for j in jobs}
    tracebacks = logs.count("Traceback (most recent call last)")
    print(f"\n[{cluster.backend}] {JOBS} jobs, {len(cluster.workers)} worker processes, "
          f"{took:.0f} s; attempts {dict(sorted(attempts.items()))}; "
          f"tracebacks {tracebacks}; outage warnings "
          f"{logs.count('is unavailable')}")  # fmt: skip
    for at, what in soak.events:
        print(f"  +{at:6.1f} s  {what}")
    assert [j.status for j in jobs] == [SUCCEEDED] * JOBS, [j.error for j in jobs if j.error]
    assert all(names == [f"{job_id}.png"] for job_id, names in outputs.items())  # no strays
    assert set(finishes.values()) == {1} and len(finishes) == JOBS  # each ended once
    assert sum(n - 1 for n in (j.attempts for j in jobs)) <= KILLS  # only the kills cost a try
    assert tracebacks == 0  # an outage is a warning when it starts, not a traceback a try
    unhandled = [line for line in logs.splitlines() if "Unhandled error" in line]
    assert all("the queue is unavailable" in line for line in unhandled), unhandled
