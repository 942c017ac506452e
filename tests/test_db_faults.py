"""Database faults between a worker or an API node and a real PostgreSQL, through a TCP proxy
(`faults`): a database that stops answering never stops the engine's loop (progress and
previews are written off its thread), and a pooled connection that dies is reconnected or
answered with a 503, never a 500."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from faults import FaultProxy
from helpers import FORM, add_job, http_get, jobs_config, wait_for

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


def test_the_postgres_queue_s_connections_have_the_database_s_deadlines(
    postgres_cluster: Any,
) -> None:
    from api.jobs.queue import JobQueue

    postgres_cluster.start()
    url = postgres_cluster.create_database().replace("+psycopg", "")
    queue = JobQueue(url, "deadlines").open()
    try:
        queue.enqueue("d" * 32)
        conn = queue.huey.storage.conn
        with conn.cursor() as cursor:
            cursor.execute("SHOW statement_timeout")
            shown = cursor.fetchone()[0]
        given = conn.info.get_parameters()
    finally:
        queue.close()
    assert shown == "1min"
    assert given.get("keepalives") == "1" and given.get("tcp_user_timeout") == "30000"
    assert given.get("connect_timeout") == "5"


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


def _lose_the_first_reply(service: Any, proxy: FaultProxy, method: str) -> list[bool]:
    """The COMMIT of the first call of `service.store.<method>` reaches the server, and its
    answer is lost (the connection stays open; the proxy heals 4 s later). The list gets one
    entry per call of the method, False once its reply was lost."""
    from sqlalchemy import event

    armed: list[bool] = []
    call = getattr(service.store, method)

    def once_armed(*args: Any, **kwargs: Any) -> Any:
        armed.append(len(armed) == 0)  # the first try only
        return call(*args, **kwargs)

    def on_commit(conn: Any) -> None:
        if armed and armed[-1]:  # the call's COMMIT: the server commits, its answer is lost
            armed[-1] = False
            proxy.drop_replies()
            threading.Timer(4, proxy.heal).start()

    setattr(service.store, method, once_armed)
    event.listen(service.store.engine, "commit", on_commit)
    return armed


def test_a_lost_reply_to_the_finish_commit_costs_a_deadline_not_the_worker(
    tmp_path: Path, models: ModelCache, postgres_db: str
) -> None:
    proxy, service = _service_behind_proxy(tmp_path, models, postgres_db, db_deadline_seconds=2)
    job_id = uuid.uuid4().hex
    add_job(service.store, job_id)
    ended: list[str] = []
    service.runner._on_finished = ended.append  # type: ignore[method-assign]  # noqa: SLF001
    _lose_the_first_reply(service, proxy, "finish")
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


# -- lost claim replies and stalled heartbeats ----------------------------------------------------
def _long_job(store: Any, job_id: str, iterations: int) -> None:
    settings = resolve(Settings.create(prompts="a castle", style="pixel art", size=(32, 32)))
    run = settings.model_copy(update={"iterations": iterations, "clip_models": ["tiny-random"],
                                      "cutouts": 4, "seed": 1})  # fmt: skip
    add_job(store, job_id, settings=run.to_json_dict(), total=iterations)


def test_a_lost_reply_to_the_claim_commit_costs_neither_the_job_nor_a_try(
    tmp_path: Path, models: ModelCache, postgres_db: str
) -> None:
    proxy, service = _service_behind_proxy(
        tmp_path, models, postgres_db, db_deadline_seconds=2, max_requeues=0
    )
    job_id = uuid.uuid4().hex
    add_job(service.store, job_id)
    ended: list[str] = []
    service.runner._on_finished = ended.append  # type: ignore[method-assign]  # noqa: SLF001
    claims = _lose_the_first_reply(service, proxy, "claim")
    worker = threading.Thread(target=service.runner.run, args=(job_id,))
    try:
        worker.start()
        worker.join(90)
        job = service.store.get(job_id)
    finally:
        proxy.heal()
        service.stop()
        proxy.close()
    assert claims == [False] and not worker.is_alive()  # one claim; its reply was lost
    # Taken up again by the same worker: one try, no second claim counted (max_requeues=0
    # would have failed it as a dead worker's after the first), its notices once.
    assert job is not None and job.status == SUCCEEDED and job.attempts == 1, job
    assert ended == [job_id]


def test_a_job_claimed_here_whose_reply_was_lost_goes_back_without_spending_a_try(
    tmp_path: Path, models: ModelCache
) -> None:
    service = build_services(jobs_config(tmp_path, stale_after_seconds=5), models=models).jobs
    service.store.open()
    me, old = service.runner.worker_id, time.time() - 60
    add_job(service.store, "l" * 32, status="running", worker_id=me, attempts=1, heartbeat_at=old)
    add_job(service.store, "f" * 32, status="running", worker_id=me, attempts=1,
            heartbeat_at=time.time())  # fmt: skip
    enqueued: list[str] = []
    service.runner._enqueue = enqueued.append  # type: ignore[method-assign]  # noqa: SLF001
    try:
        changed = service.reap()
        lost, fresh = service.store.get("l" * 32), service.store.get("f" * 32)
        scrape = service.metrics.render()[0].decode()
    finally:
        service.stop()
    assert changed == ["l" * 32] and enqueued == ["l" * 32]
    assert lost is not None and lost.status == "queued" and lost.attempts == 0
    assert fresh is not None and fresh.status == "running"  # a claim may be taking it up now
    assert 'text2art_jobs_requeued_total{reason="outage"} 1.0' in scrape
    assert 'reason="dead_worker"} 1.0' not in scrape


class _Steps:
    """When each thread's engine reached which iteration (`Progress` is every run's `on_step`)."""

    def __init__(self, monkeypatch: Any) -> None:
        from api.jobs import progress

        self.seen: dict[str, list[tuple[float, int]]] = {}
        call = progress.Progress.__call__

        def record(progress_self: Any, step: Any) -> None:
            name = threading.current_thread().name
            self.seen.setdefault(name, []).append((time.monotonic(), step.iteration))
            call(progress_self, step)

        monkeypatch.setattr(progress.Progress, "__call__", record)

    def last(self, name: str) -> tuple[float, int]:
        return self.seen.get(name, [(0.0, 0)])[-1]


def test_a_worker_whose_heartbeats_stall_pauses_before_another_takes_its_job_over(
    tmp_path: Path, models: ModelCache, postgres_db: str, monkeypatch: Any
) -> None:
    """Worker A's database path stalls without an error (no deadline): A pauses its run when
    half of `stale_after` has passed without a heartbeat, reports not-ready and claims nothing;
    worker B takes the job over only after that, continues it from A's saved state, and A,
    back, drops the run without writing anything: the job ran once at a time, ended once."""
    from api.cli_worker import start_health_server

    timing = {"stale_after_seconds": 3, "heartbeat_seconds": 0.25, "checkpoint_seconds": 0.3}
    proxy = FaultProxy(_server_port(postgres_db))
    stalls = {"database_url": _behind(postgres_db, proxy), "db_deadline_seconds": 0}
    a = build_services(jobs_config(tmp_path, health_port=0, **stalls, **timing), models=models)
    b = build_services(jobs_config(tmp_path, database_url=postgres_db, **timing), models=models)
    a.jobs.store.open()
    b.jobs.store.open()
    job_id, steps = uuid.uuid4().hex, _Steps(monkeypatch)
    _long_job(b.jobs.store, job_id, iterations=600)
    health = start_health_server(a)
    assert health is not None
    runner_a = threading.Thread(target=a.jobs.runner.run, args=(job_id,), name="A")
    runner_b = threading.Thread(target=b.jobs.runner.run, args=(job_id,), name="B")
    safety = threading.Timer(120, proxy.heal)  # a hung test fails, never hangs
    safety.start()
    try:
        runner_a.start()
        wait_for(lambda: steps.last("A")[1] >= 20, what="A's run under way")
        proxy.blackhole()  # A's database calls hang, with no error
        stalled_at = time.monotonic()
        wait_for(a.jobs.runner.stalled, timeout=10, what="A to say it cannot make progress")
        status, body = http_get(f"http://127.0.0.1:{health.port}/readyz", timeout=30)
        ready = status, json.loads(body)
        wait_for(lambda: b.jobs.reap() == [job_id], timeout=20, what="B to judge A dead")
        taken_at = time.monotonic()
        runner_b.start()
        runner_b.join(60)
        proxy.heal()  # A hears again: the job is not its own any more
        runner_a.join(30)
        job = b.jobs.store.get(job_id)
    finally:
        safety.cancel()
        proxy.heal()
        health.stop()
        a.jobs.stop()
        b.jobs.stop()
        proxy.close()
    a_last, b_first = steps.last("A"), steps.seen["B"][0]
    assert not runner_a.is_alive() and not runner_b.is_alive()
    assert a_last[0] < stalled_at + 3 <= taken_at  # A paused within the fence, B came later
    assert a_last[0] < b_first[0]  # never both at once
    assert b_first[1] > 1  # B continued from A's saved state
    assert ready[0] == 503 and ready[1]["ready"] is False
    assert "no heartbeat has reached the database" in ready[1]["jobs"]["error"]
    assert ready[1]["database"]["error"] == "no answer within 3 s"  # not a hung /readyz
    assert job is not None and job.status == SUCCEEDED and job.worker_id == b.jobs.runner.worker_id
    assert job.iteration == 600 and (tmp_path / f"{job_id}.png").exists()


def test_a_short_stall_pauses_the_run_and_it_goes_on_when_the_database_answers(
    tmp_path: Path, models: ModelCache, postgres_db: str, monkeypatch: Any
) -> None:
    timing = {"stale_after_seconds": 2, "heartbeat_seconds": 0.2, "db_deadline_seconds": 0}
    proxy, service = _service_behind_proxy(tmp_path, models, postgres_db, **timing)
    job_id, steps = uuid.uuid4().hex, _Steps(monkeypatch)
    _long_job(service.store, job_id, iterations=200)
    runner = threading.Thread(target=service.runner.run, args=(job_id,), name="A")
    try:
        runner.start()
        wait_for(lambda: steps.last("A")[1] >= 10, what="the run under way")
        proxy.blackhole()
        wait_for(service.runner.stalled, timeout=10, what="the run to pause")
        paused = steps.last("A")
        time.sleep(1.0)
        still = steps.last("A")
        proxy.heal()
        runner.join(60)
        job = service.store.get(job_id)
    finally:
        proxy.heal()
        service.stop()
        proxy.close()
    assert still == paused  # no iteration while the lease had lapsed
    assert service.runner.stalled() is None and not runner.is_alive()
    assert job is not None and job.status == SUCCEEDED and job.attempts == 1
    assert job.iteration == 200


def test_the_watchdog_outlives_a_connection_that_is_already_lost() -> None:
    """psycopg raises for the socket of a lost connection: the watchdog skips it and goes on
    cutting the next late call (the soak once saw it die there, leaving no deadline at all)."""
    import socket

    from api.jobs.watchdog import Watchdog

    class Lost:  # psycopg's PGconn of a lost connection
        @property
        def socket(self) -> int:
            raise RuntimeError("the connection is lost")

    class Live:
        def __init__(self, fd: int) -> None:
            self.socket = fd

    class Conn:  # a DB-API connection as psycopg's: `pgconn.socket` is its descriptor
        def __init__(self, pgconn: Any) -> None:
            self.pgconn = pgconn

    ours, theirs = socket.socketpair()
    dog = Watchdog(0.2)
    dog._calls = {1: (0.0, Conn(Lost())), 2: (time.monotonic() + 0.3, Conn(Live(ours.fileno())))}
    loop = threading.Thread(target=dog._loop, daemon=True)  # noqa: SLF001 (its own thread)
    loop.start()
    theirs.settimeout(5)
    try:
        cut = theirs.recv(1) == b""  # the peer's socket was shut down by the watchdog
    finally:
        ours.close()
        theirs.close()
    assert cut and dog.cuts == 1 and loop.is_alive()


def test_a_worker_with_a_paused_run_claims_nothing_until_it_can_write_again(
    tmp_path: Path, models: ModelCache
) -> None:
    from api.jobs.watch import Lease
    from api.runner import RunStop

    service = build_services(jobs_config(tmp_path, stale_after_seconds=2), models=models).jobs
    service.store.open()
    job_id, clock = uuid.uuid4().hex, [0.0]
    add_job(service.store, job_id)
    paused = Lease("p" * 32, fence=1.0, stop=RunStop(), clock=lambda: clock[0])
    clock[0] = 5.0  # its last heartbeat got through 5 s ago
    service.runner._leases["p" * 32] = paused  # noqa: SLF001 (a run paused in this process)
    worker = threading.Thread(target=service.runner.run, args=(job_id,))
    try:
        worker.start()
        time.sleep(1.5)
        waiting = service.store.get(job_id)
        paused.renew(5.0)  # a heartbeat gets through: the worker may claim again
        wait_for(lambda: not service.runner.stalled(), what="the lease renewed")
        del service.runner._leases["p" * 32]  # noqa: SLF001
        worker.join(60)
        done = service.store.get(job_id)
    finally:
        service.stop()
    assert waiting is not None and waiting.status == "queued" and waiting.attempts == 0
    assert done is not None and done.status == SUCCEEDED and done.attempts == 1
