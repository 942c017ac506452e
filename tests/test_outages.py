"""The pieces of scale-out that need no server: the reconciler's one winner, retries with
backoff, the dead-worker verdicts around outages, 503 answers, `/readyz`, `/metrics`, the
worker's health server and the wait of a queued `/generate`."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from helpers import add_job, jobs_config, run_cli, serving, submit, wait_for
from prometheus_client.parser import text_string_to_metric_families
from servers import free_port
from sqlalchemy.exc import OperationalError

from api.app import create_app
from api.cli_worker import start_health_server
from api.jobs.errors import QueueUnavailable
from api.jobs.outage import Outages, retry, unavailable_service
from api.jobs.policy import WorkerIdentity, is_dead
from api.jobs.queue import JobQueue
from api.jobs.store import CANCELLED, QUEUED, RUNNING, SUCCEEDED, Job, JobStore
from api.jobs.upkeep import reconcile
from api.jobs.waiting import ClientGone, wait_for_end
from api.services import build_services
from engine import ModelCache

DOWN = OperationalError("SELECT 1", {}, Exception("connection refused"))


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a Prometheus exposition, or None when absent."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


# -- the reconciler --------------------------------------------------------------------------
def test_reconcile_enqueues_a_lost_job_once_whoever_runs_it(tmp_path: Path) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}").open()
    queue = JobQueue(f"sqlite:///{tmp_path / 'q.db'}", "t")
    now = time.time()
    add_job(store, "lost" + "0" * 28, enqueued_at=now - 60)  # the broker lost it
    add_job(store, "fresh" + "0" * 27, enqueued_at=now)  # being enqueued right now
    add_job(store, "kept" + "0" * 28, enqueued_at=now - 60)
    queue.enqueue("kept" + "0" * 28)  # still in the queue
    add_job(store, "running" + "0" * 25, status=RUNNING, enqueued_at=now - 60)
    lost = "lost" + "0" * 28
    seen_before = store.get(lost)
    assert seen_before is not None
    assert reconcile(store, queue, grace=10, now=now) == [lost]
    assert reconcile(store, queue, grace=10, now=now) == []  # back in the queue now
    stale = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}").open()  # a second worker read it earlier:
    assert not stale.mark_enqueued(seen_before, now + 1)  # the stamp moved, one winner
    assert store.get(lost).enqueued_at == now  # type: ignore[union-attr]
    other = JobQueue(f"sqlite:///{tmp_path / 'q.db'}", "t")
    other.huey.storage.flush_queue()  # the broker loses everything again
    everyone = [lost, "fresh" + "0" * 27, "kept" + "0" * 28]  # all older than the grace now
    assert reconcile(store, other, grace=10, now=now + 11) == everyone
    for closable in (store, stale, queue, other):
        closable.close()


def test_a_worker_reconciles_continuously_not_only_at_start(
    tmp_path: Path, models: ModelCache
) -> None:
    config = jobs_config(tmp_path, reconcile_seconds=0.3, run_worker_in_process=True)
    service = build_services(config, models=models, role="worker").jobs
    service.start()
    try:
        add_job(service.store, "b" * 32, enqueued_at=time.time() - 5)  # recorded, never enqueued
        wait_for(lambda: service.store.get("b" * 32).status == SUCCEEDED, timeout=60)  # type: ignore[union-attr]
        assert metric(service.metrics.render()[0].decode(), "text2art_jobs_requeued_total",
                      reason="reconcile") == 1.0  # fmt: skip
    finally:
        service.stop()


# -- retries and verdicts --------------------------------------------------------------------
def test_retry_rides_out_an_outage_and_records_it() -> None:
    outages, calls = Outages(), []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise DOWN
        return "done"

    assert retry(flaky, "record", outages, give_up_after=10) == "done"
    assert len(calls) == 3 and not outages.settled(60) and outages.settled(0)
    with pytest.raises(ZeroDivisionError):  # a bug is not an outage: no retry
        retry(lambda: 1 / 0, "divide", outages, give_up_after=10)
    started = time.monotonic()
    with pytest.raises(OperationalError):
        retry(lambda: (_ for _ in ()).throw(DOWN), "never", outages, give_up_after=0.6)
    assert time.monotonic() - started < 5


def test_outage_errors_name_their_service() -> None:
    assert unavailable_service(DOWN) == "database"
    assert unavailable_service(QueueUnavailable("down")) == "queue"
    assert unavailable_service(ValueError("x")) is None


def test_a_connection_lost_during_its_pre_ping_is_a_503_and_a_real_bug_a_500() -> None:
    from fastapi import FastAPI
    from sqlalchemy.exc import ProgrammingError

    from api.jobs.outage import install_outage_handlers

    lost = ProgrammingError("ping", {}, Exception("can't change 'autocommit' now"))
    bug = ProgrammingError("SELECT nope", {}, Exception('relation "nope" does not exist'))
    app = FastAPI()
    install_outage_handlers(app)

    @app.get("/lost")
    def lost_route() -> None:
        raise lost

    @app.get("/bug")
    def bug_route() -> None:
        raise bug

    with TestClient(app, raise_server_exceptions=False) as client:
        down, broken = client.get("/lost"), client.get("/bug")
    assert down.status_code == 503 and down.json()["service"] == "database"
    assert down.headers["retry-after"] == "5"
    assert broken.status_code == 500
    assert unavailable_service(lost) == "database" and unavailable_service(bug) is None


def test_no_worker_is_judged_dead_by_a_heartbeat_an_outage_silenced(tmp_path: Path) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}").open()
    me = WorkerIdentity("elsewhere", 1, "abcd")
    old = time.time() - 100
    mine = add_job(store, "m" * 32, status=RUNNING, worker_id=str(me), heartbeat_at=old)
    theirs = add_job(store, "t" * 32, status=RUNNING, worker_id="other:2:ffff", heartbeat_at=old)
    now = time.time()
    assert not is_dead(mine, me, stale_after=10, now=now)  # its own: JobRunner.hand_back_lost
    assert is_dead(theirs, me, stale_after=10, now=now, settled=True)
    assert not is_dead(theirs, me, stale_after=10, now=now, settled=False)
    store.close()


def test_a_job_whose_worker_went_silent_in_an_outage_is_requeued_without_spending_a_try(
    tmp_path: Path,
) -> None:
    """A worker stopped or cut off while the database was away looks dead once it is back; the
    reaper that met the same outage requeues its job as `outage` and gives the try back."""
    from api.config import ServiceConfig
    from api.jobs.policy import reap_dead
    from api.metrics import Metrics

    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}").open()
    now, me = time.time(), WorkerIdentity("elsewhere", 1, "abcd")
    wall = [now - 300.0]  # the outage: 300 s ago, for 60 s
    outages = Outages(clock=lambda: wall[0], wall=lambda: wall[0])
    for _ in range(7):
        outages.failed("database")
        wall[0] += 10.0
    assert outages.during(now - 280, now - 270) and not outages.during(now - 200, now)
    silent = dict(status=RUNNING, attempts=1, heartbeat_at=now - 290)  # fell silent in it
    crashed = dict(status=RUNNING, attempts=1, heartbeat_at=now - 200)  # after it: a crash
    add_job(store, "s" * 32, worker_id="other:2:ffff", **silent)
    add_job(store, "c" * 32, worker_id="other:3:ffff", **crashed)
    config = ServiceConfig(output_dir=tmp_path, stale_after_seconds=120, max_requeues=1)
    metrics, queued = Metrics("worker"), []
    changed = reap_dead(store, me, config, queued.append, lambda job_id: None,
                        metrics=metrics, outage_during=outages.during)  # fmt: skip
    jobs = {job_id: store.get(job_id) for job_id in changed}
    store.close()
    scrape = metrics.render()[0].decode()
    assert sorted(changed) == sorted(queued) == ["c" * 32, "s" * 32]
    assert {k: (j.status, j.attempts) for k, j in jobs.items() if j} == {
        "s" * 32: (QUEUED, 0), "c" * 32: (QUEUED, 1)}  # fmt: skip
    assert 'text2art_jobs_requeued_total{reason="outage"} 1.0' in scrape
    assert 'text2art_jobs_requeued_total{reason="dead_worker"} 1.0' in scrape


def test_a_chore_logs_an_outage_when_it_starts_and_ends_not_at_every_try(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from api.jobs.upkeep import Chore, Upkeep

    down = [True] * 5 + [False] * 2
    lost = OperationalError("UPDATE", {}, Exception("connection refused"))

    def beat() -> None:
        if down.pop(0):
            raise lost

    chore = Chore("worker heartbeat", 0.5, beat)
    upkeep = Upkeep([chore], Outages())
    caplog.set_level(logging.DEBUG, logger="api.jobs.upkeep")
    for _ in range(7):
        upkeep._run(chore)  # noqa: SLF001 (the thread runs exactly this)
    said = [(r.levelname, r.getMessage().split(" (")[0]) for r in caplog.records]
    assert said[0] == ("WARNING", "worker heartbeat: the database is unavailable")
    assert [level for level, _ in said[1:5]] == ["DEBUG"] * 4
    assert said[5:] == [("INFO", "worker heartbeat: the database answers again")]


def test_huey_s_consumer_says_a_queue_outage_once_without_tracebacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from api.jobs.queue import quiet_consumer_outages

    quiet_consumer_outages()
    quiet_consumer_outages()  # once per process, however many consumers start
    logger = logging.getLogger("huey.consumer.Worker")
    assert len(logger.filters) == 1
    caplog.set_level(logging.INFO, logger="huey")
    for error in [OperationalError("SELECT", {}, Exception("refused"))] * 5 + [ValueError("bug")]:
        try:
            raise error
        except Exception:
            logger.exception("Error reading from queue")  # as huey's Worker loop does
    said = [(r.levelname, r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert len(said) == 2
    assert said[0][0] == "WARNING" and not said[0][2]
    assert said[0][1].startswith("Error reading from queue: the queue is unavailable (")
    assert said[1] == ("ERROR", "Error reading from queue", True)  # a bug keeps its traceback


# -- the API during an outage ----------------------------------------------------------------
def test_every_route_answers_503_naming_the_database_when_it_is_down(
    tmp_path: Path, models: ModelCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serving(jobs_config(tmp_path, run_worker_in_process=False), models) as client:
        job_id = submit(client)["id"]
        jobs = client.app.state.jobs  # type: ignore[attr-defined]

        def down(*args: Any, **kwargs: Any) -> Any:
            raise DOWN

        for name in ("get", "count", "add", "ping", "session"):  # session: admission
            monkeypatch.setattr(jobs.store, name, down)
        jobs.probe.ttl = 0
        for answer in (
            client.get(f"/jobs/{job_id}"),
            client.post("/jobs", data={"prompts": "a fox"}),
            client.get(f"/jobs/{job_id}/events"),
            client.get(f"/jobs/{job_id}/preview.png"),
        ):
            assert answer.status_code == 503, answer.text
            assert answer.headers["retry-after"] == "5"
            assert answer.json() == {
                "error": "unavailable",
                "service": "database",
                "detail": "the job database is unavailable; retry in 5 s",
            }
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["database"]["ok"] is False
        assert "OperationalError" in ready.json()["database"]["error"]
        assert ready.json()["queue"] == {"ok": True, "entries": 1}


def test_readyz_warns_when_no_worker_is_alive_and_has_no_eta(
    tmp_path: Path, models: ModelCache
) -> None:
    with serving(jobs_config(tmp_path, run_worker_in_process=False), models) as client:
        job_id = submit(client)["id"]
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["role"] == "api"
        assert ready.json()["workers"]["live"] == 0
        assert "no worker has a fresh heartbeat" in ready.json()["workers"]["warning"]
        assert client.get(f"/jobs/{job_id}").json()["eta_seconds"] is None


def test_api_metrics_count_jobs_by_status(tmp_path: Path, models: ModelCache) -> None:
    with serving(jobs_config(tmp_path), models) as client:
        job_id = submit(client, iterations=3)["id"]
        wait_for(lambda: client.get(f"/jobs/{job_id}").json()["status"] == SUCCEEDED)
        text = client.get("/metrics").text
    assert metric(text, "text2art_jobs_total", status="submitted") == 1.0
    assert metric(text, "text2art_jobs_total", status="succeeded") == 1.0
    assert metric(text, "text2art_job_run_seconds_count") == 1.0
    assert metric(text, "text2art_job_wait_seconds_count") == 1.0
    assert metric(text, "text2art_queue_depth") == 0.0
    assert metric(text, "text2art_workers_live") == 1.0  # the in-process worker
    assert metric(text, "text2art_process_info", role="api") == 1.0


def test_a_job_cancelled_while_queued_counts_as_cancelled(
    tmp_path: Path, models: ModelCache
) -> None:
    with serving(jobs_config(tmp_path, run_worker_in_process=False), models) as client:
        made = submit(client)
        token = {"X-Delete-Token": made["delete_token"]}
        assert client.post(f"/jobs/{made['id']}/cancel", headers=token).status_code == 200
        text = client.get("/metrics").text
    assert metric(text, "text2art_jobs_total", status="cancelled") == 1.0
    assert metric(text, "text2art_queue_depth") == 0.0


def test_the_worker_health_server(tmp_path: Path, models: ModelCache) -> None:
    config = jobs_config(tmp_path, health_port=0, run_worker_in_process=True)
    services = build_services(config, "worker", models=models)
    service = services.jobs
    service.start()
    server = start_health_server(services)
    assert server is not None
    try:
        base = f"http://127.0.0.1:{server.port}"
        with httpx.Client(trust_env=False, timeout=10) as http:
            assert http.get(f"{base}/healthz").json() == {"status": "ok"}
            ready = http.get(f"{base}/readyz")
            assert ready.status_code == 200, ready.text
            body = ready.json()
            assert body["ready"] is True and body["role"] == "worker"
            assert body["database"]["ok"] and body["queue"]["ok"] and body["device"]["ok"]
            assert body["workers"]["live"] == 1 and body["worker"] == str(service.runner.identity)
            text = http.get(f"{base}/metrics").text
        assert metric(text, "text2art_process_info", role="worker") == 1.0
        assert metric(text, "text2art_workers_live") == 1.0
    finally:
        server.stop()
        service.stop()
    store = JobStore(config.resolved_database_url(tmp_path)).open()  # stopped: its row is gone
    assert store.live_workers(0) == []
    store.close()


# -- a queued /generate waits for its job ----------------------------------------------------
def test_waiting_for_a_job_cancels_it_when_the_client_goes_away() -> None:
    job = Job(id="w" * 32, status=QUEUED)
    cancelled = threading.Event()

    async def gone() -> bool:
        return True

    with pytest.raises(ClientGone):
        asyncio.run(wait_for_end(lambda: job, cancelled.set, gone))
    assert cancelled.is_set()


def test_waiting_for_a_job_rides_out_a_database_blip() -> None:
    reads: list[int] = []
    done = Job(id="w" * 32, status=CANCELLED)

    def read() -> Any:
        reads.append(1)
        if len(reads) < 3:
            raise DOWN
        return done

    async def here() -> bool:
        return False

    assert asyncio.run(wait_for_end(read, lambda: None, here)) is done
    with pytest.raises(OperationalError):  # silence past the limit: the outage is raised
        asyncio.run(wait_for_end(lambda: (_ for _ in ()).throw(DOWN), lambda: None, here, 0.3))


def test_generate_on_an_api_only_node_without_workers_is_503_after_validation(
    tmp_path: Path,
) -> None:
    models = ModelCache()
    config = jobs_config(tmp_path, run_worker_in_process=False, preload=True)
    with TestClient(create_app(config, models=models)) as client:
        bad = client.post("/generate", data={"prompts": "a fox", "iterations": "0"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "iterations"]
        nobody = client.post("/generate", data={"prompts": "a fox", "iterations": "2"})
        assert nobody.status_code == 503 and nobody.headers["retry-after"] == "30"
        assert "no worker is running: start `text2art worker`" in nobody.json()["detail"]
        assert client.app.state.jobs.store.count(QUEUED) == 0  # type: ignore[attr-defined]
    assert models.loaded() == []  # an API-only node loads no model, not even to warm up


def test_provider_postgres_urls_get_the_installed_driver(tmp_path: Path) -> None:
    def url(given: str | None) -> str:
        return jobs_config(tmp_path, database_url=given).resolved_database_url(tmp_path)

    neon = "postgresql://u:p@ep-x.eu.aws.neon.tech/t2a?sslmode=require"
    assert url(neon) == "postgresql+psycopg://u:p@ep-x.eu.aws.neon.tech/t2a?sslmode=require"
    assert url("postgres://u@db/t2a") == "postgresql+psycopg://u@db/t2a"
    assert url("postgresql+psycopg://u@db/t2a") == "postgresql+psycopg://u@db/t2a"
    assert url(None) == f"sqlite:///{(tmp_path / 'jobs.db').resolve()}"


def test_a_worker_that_cannot_reach_its_parts_says_so_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    closed = free_port()
    monkeypatch.setenv("T2A_QUEUE_URL", f"redis://127.0.0.1:{closed}/0")
    monkeypatch.setenv("T2A_DATABASE_URL", f"postgresql://me:secret@127.0.0.1:{closed}/t2a")
    monkeypatch.setenv("T2A_OUTPUT_DIR", str(tmp_path))
    code, out, err = run_cli(["worker", "--device", "cuda:7"], capsys)
    assert code == 1 and "Traceback" not in out + err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert line.startswith(f"error: the worker cannot start: queue redis://127.0.0.1:{closed}/0: ")
    assert f"database postgresql+psycopg://me:***@127.0.0.1:{closed}/t2a: " in line
    assert "secret" not in line  # passwords are never printed
    assert "device cuda:7: " in line and "bucket" not in line  # the output dir works


def test_two_processes_creating_the_postgres_queue_tables_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The loser of the `CREATE TABLE IF NOT EXISTS` race (seen with two workers starting
    together on a fresh database) tries again instead of refusing to start."""
    import api.jobs.queue as queue_module

    class UniqueViolation(Exception):  # psycopg.errors.UniqueViolation, by name
        pass

    calls: list[str] = []

    def racy(name: str, **kwargs: Any) -> str:
        calls.append(kwargs["dsn"])
        if len(calls) == 1:
            raise UniqueViolation('duplicate key value violates "pg_type_typname_nsp_index"')
        return "huey"

    monkeypatch.setattr(queue_module, "PostgresHuey", racy)
    assert queue_module.make_huey("postgresql+psycopg://u@db/t2a", "t") == "huey"
    assert calls == ["postgresql://u@db/t2a"] * 2
    calls.clear()

    def broken(name: str, **kwargs: Any) -> str:
        raise ValueError("not a race")

    monkeypatch.setattr(queue_module, "PostgresHuey", broken)
    with pytest.raises(ValueError, match="not a race"):  # anything else: at once
        queue_module.make_huey("postgresql://u@db/t2a", "t")


def test_a_running_job_whose_worker_went_silent_says_so_instead_of_a_frozen_eta(
    tmp_path: Path, models: ModelCache
) -> None:
    config = jobs_config(tmp_path, stale_after_seconds=30)
    with serving(config, models, paused=True) as client:
        store = client.app.state.jobs.store  # type: ignore[attr-defined]
        now = time.time()
        add_job(store, "e" * 32, status=RUNNING, worker_id="gone@host", started_at=now - 100,
                heartbeat_at=now - 95, iteration=10, total=20, run_seconds=5.0)  # fmt: skip
        add_job(store, "f" * 32, status=RUNNING, worker_id="alive@host", started_at=now - 10,
                heartbeat_at=now, iteration=10, total=20, run_seconds=5.0)  # fmt: skip
        silent = client.get(f"/jobs/{'e' * 32}").json()
        alive = client.get(f"/jobs/{'f' * 32}").json()
    assert silent["eta_seconds"] is None
    assert silent["warning"].startswith("its worker has not been heard from for 9")
    assert "takes it over" in silent["warning"] or "no worker is alive" in silent["warning"]
    assert alive["warning"] is None and alive["eta_seconds"] == 5.0  # 10 more at 0.5 s each
