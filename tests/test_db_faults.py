"""Database faults between a worker or an API node and a real PostgreSQL, through a TCP proxy
(`faults`): a database that stops answering never stops the engine's loop (progress and
previews are written off its thread), and a pooled connection that dies is reconnected or
answered with a 503, never a 500."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from faults import FaultProxy
from helpers import FORM, add_job, jobs_config

from api.app import create_app
from api.jobs.store import SUCCEEDED
from api.services import build_services
from engine import ModelCache, Settings, resolve

ITERATIONS = 40


def _behind(url: str, proxy: FaultProxy) -> str:
    """The database URL with the proxy's port in place of the server's."""
    head, _, tail = url.rpartition(":")
    return f"{head}:{proxy.port}/{tail.split('/', 1)[1]}"


def _server_port(url: str) -> int:
    return int(url.rpartition(":")[2].split("/", 1)[0])


def _service_behind_proxy(
    tmp_path: Path, models: ModelCache, postgres_db: str, **config: Any
) -> tuple[FaultProxy, Any]:
    """A proxy in front of the database and a jobs service (its store open) that goes through it."""
    proxy = FaultProxy(_server_port(postgres_db))
    settings = jobs_config(tmp_path, database_url=_behind(postgres_db, proxy), **config)
    service = build_services(settings, models=models).jobs
    service.store.open()
    return proxy, service


def test_a_database_that_stops_answering_does_not_stop_the_engine(
    tmp_path: Path, models: ModelCache, postgres_db: str
) -> None:
    proxy, service = _service_behind_proxy(tmp_path, models, postgres_db, preview_every=2)
    job_id = uuid.uuid4().hex
    settings = resolve(Settings.create(prompts="a castle", style="pixel art", size=(32, 32)))
    run = settings.model_copy(update={"iterations": ITERATIONS, "clip_models": ["tiny-random"],
                                      "cutouts": 4, "seed": 1})  # fmt: skip
    add_job(service.store, job_id, settings=run.to_json_dict(), total=ITERATIONS)
    store = service.runner.artifacts
    seen: dict[str, Any] = {}
    preview, save = store.save_preview, store.save_result

    def first_preview(job_id: str, image: Any) -> None:
        if "hole" not in seen:  # the run is under way: the database stops answering
            seen["hole"] = time.monotonic()
            proxy.blackhole()
        preview(job_id, image)

    def engine_done(result: Any, job_id: str) -> list[str]:
        seen["done"] = proxy.mode  # reached while the database is still away
        proxy.heal()
        return save(result, job_id)

    store.save_preview = first_preview  # type: ignore[method-assign]
    store.save_result = engine_done  # type: ignore[method-assign]
    safety = threading.Timer(120, proxy.heal)  # a hung loop fails the test, never hangs it
    safety.start()
    try:
        service.runner.run(job_id)
        done = service.store.get(job_id)
    finally:
        safety.cancel()
        service.stop()
        proxy.close()
    assert "hole" in seen and seen["done"] == "blackhole"
    assert done is not None and done.status == SUCCEEDED and done.attempts == 1
    assert done.iteration == ITERATIONS


def test_a_pooled_connection_that_dies_is_reconnected_or_a_503(
    tmp_path: Path, models: ModelCache, postgres_db: str
) -> None:
    proxy = FaultProxy(_server_port(postgres_db))
    config = jobs_config(tmp_path, database_url=_behind(postgres_db, proxy))
    try:
        with TestClient(create_app(config, models=models)) as client:
            client.app.state.jobs.queue.stop_consumer(0)  # type: ignore[attr-defined]
            assert client.post("/jobs", data=FORM).status_code == 202  # the pool is warm
            proxy.refuse()  # every pooled connection dies, and new ones are refused
            down = client.post("/jobs", data=FORM)
            proxy.heal()  # the server is back: the dead pooled connections are replaced
            back = [client.post("/jobs", data=FORM).status_code for _ in range(3)]
    finally:
        proxy.close()
    assert down.status_code == 503, down.text
    assert down.headers["retry-after"] and down.json()["service"] == "database"
    assert back == [202, 202, 202]


def test_every_database_connection_has_deadlines(tmp_path: Path, postgres_db: str) -> None:
    from sqlalchemy import text

    from api.jobs.engine import make_engine

    engine = make_engine(postgres_db)
    try:
        with engine.connect() as conn:
            shown = {
                name: conn.execute(text(f"SHOW {name}")).scalar()
                for name in ("statement_timeout", "idle_in_transaction_session_timeout")
            }
            keepalive = conn.connection.dbapi_connection.info.get_parameters()  # type: ignore[union-attr]
    finally:
        engine.dispose()
    assert shown == {"statement_timeout": "1min", "idle_in_transaction_session_timeout": "1min"}
    assert keepalive.get("keepalives") == "1" and keepalive.get("tcp_user_timeout") == "30000"


def test_the_postgres_queue_reconnects_after_a_restart(postgres_cluster: Any) -> None:
    from api.jobs.queue import JobQueue

    postgres_cluster.start()
    url = postgres_cluster.create_database().replace("+psycopg", "")
    queue = JobQueue(url, "restart").open()
    try:
        queue.enqueue("a" * 32)
        postgres_cluster.stop("fast")  # every connection is closed by the server
        postgres_cluster.start()
        queue.enqueue("b" * 32)  # the first call after the restart: no 503
        assert queue.pending_ids() == {"a" * 32, "b" * 32}
    finally:
        queue.close()


def test_a_lost_reply_to_the_finish_commit_costs_a_deadline_not_the_worker(
    tmp_path: Path, models: ModelCache, postgres_db: str
) -> None:
    from sqlalchemy import event

    proxy, service = _service_behind_proxy(tmp_path, models, postgres_db, db_deadline_seconds=2)
    job_id = uuid.uuid4().hex
    add_job(service.store, job_id)
    ended: list[str] = []
    service.runner._on_finished = ended.append  # type: ignore[method-assign]  # noqa: SLF001
    armed: list[bool] = []
    finish = service.store.finish

    def finish_once_armed(*args: Any, **kwargs: Any) -> bool:
        armed.append(len(armed) == 0)  # the first try only
        return finish(*args, **kwargs)

    def on_commit(conn: Any) -> None:
        if armed and armed[-1]:  # the finish's COMMIT: the server commits, its answer is lost
            armed[-1] = False
            proxy.drop_replies()
            threading.Timer(4, proxy.heal).start()

    service.store.finish = finish_once_armed  # type: ignore[method-assign]
    event.listen(service.store.engine, "commit", on_commit)
    worker = threading.Thread(target=service.runner.run, args=(job_id,))
    try:
        worker.start()
        worker.join(90)  # without a deadline it would wait for the lost answer for ever
        job = service.store.get(job_id)
    finally:
        proxy.heal()
        service.stop()
        proxy.close()
    assert not worker.is_alive()
    assert job is not None and job.status == SUCCEEDED and job.attempts == 1
    assert ended == [job_id]  # its notifications go out once


def test_a_result_outlives_an_outage_three_times_the_retry_window(
    tmp_path: Path, models: ModelCache, postgres_db: str
) -> None:
    proxy, service = _service_behind_proxy(tmp_path, models, postgres_db, db_retry_seconds=1)
    job_id = uuid.uuid4().hex
    add_job(service.store, job_id)
    finish, outage = service.store.finish, threading.Timer(3, proxy.heal)

    def finish_in_an_outage(*args: Any, **kwargs: Any) -> bool:
        if outage.ident is None:  # the run is done and stored: the database goes away for 3 s
            proxy.refuse()
            outage.start()
        return finish(*args, **kwargs)

    service.store.finish = finish_in_an_outage  # type: ignore[method-assign]
    try:
        service.runner.run(job_id)
        job = service.store.get(job_id)
    finally:
        proxy.heal()
        service.stop()
        proxy.close()
    assert job is not None and job.status == SUCCEEDED and job.attempts == 1
    assert (tmp_path / f"{job_id}.png").exists()  # kept, not thrown away as a failed run's
