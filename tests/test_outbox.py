"""Exactly-once notices through the outbox (`t2a_outbox`, `api.jobs.outbox`): a job's end makes
one row per notice in its own transaction, a retried end makes none, senders in several
processes on PostgreSQL deliver each e-mail and webhook once (counted at a real SMTP server and
a real webhook receiver), a sender that died holding a lease is replaced when the lease runs
out, a failing webhook is retried with backoff, and an API-only node sends the webhook of a job
cancelled in the queue."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from faults import FaultProxy
from helpers import (
    Inbox,
    add_job,
    hook_url,
    jobs_config,
    serving,
    smtp_config,
    submit,
    wait_for,
)
from sqlalchemy import select

from api.jobs.outage import Outages
from api.jobs.outbox import OutboxSender, claim_due, settle
from api.jobs.outbox_table import OutboxRow
from api.jobs.service import JobService
from api.jobs.store import CANCELLED, FAILED, RUNNING, SUCCEEDED, JobStore
from api.services import build_services
from engine import ModelCache

BACKOFF = 0.2


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh job database: a SQLite file, or a database on the real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    url: str = request.getfixturevalue("postgres_db")
    return url


def rows(store: JobStore, job_id: str | None = None) -> list[OutboxRow]:
    """The outbox rows (of one job), oldest first."""
    query = select(OutboxRow).order_by(OutboxRow.id)
    if job_id is not None:
        query = query.where(OutboxRow.job_id == job_id)
    with store.session() as s:
        return list(s.scalars(query))


def kinds(store: JobStore, job_id: str) -> list[str]:
    return sorted(row.kind for row in rows(store, job_id))


def ended(store: JobStore, job_id: str, status: str = SUCCEEDED) -> None:
    """Run the job to `status` as a worker would record it."""
    assert store.claim(job_id, "w") is not None
    assert store.finish(job_id, "w", status)


def proxied(url: str) -> tuple[FaultProxy, str]:
    """A fault proxy in front of the PostgreSQL server of `url`, and the URL through it."""
    head, _, tail = url.rpartition(":")
    port, name = tail.split("/", 1)
    proxy = FaultProxy(int(port))
    return proxy, f"{head}:{proxy.port}/{name}"


@contextmanager
def api_only(config: Any, count: int = 1) -> Iterator[list[JobService]]:
    """`count` API-only jobs services (no worker, each with its outbox sender) on one config."""
    with ExitStack() as stack:
        services = []
        for _ in range(count):
            service = build_services(config).jobs
            service.start(run_worker=False)
            stack.callback(service.stop)
            services.append(service)
        yield services


# -- the rows: made with the end, once ---------------------------------------------------------
def test_a_retried_end_makes_one_row_per_kind(database: str) -> None:
    store = JobStore(database).open()
    try:
        both = dict(email="ada@example.org", webhook_url="https://hooks.example.org/h")
        add_job(store, "a" * 32, **both)
        ended(store, "a" * 32)
        assert not store.finish("a" * 32, "w", SUCCEEDED)  # the retry after a lost reply
        done = store.get("a" * 32)
        assert done is not None and not store.end_dead(done, FAILED, "dead")
        assert kinds(store, "a" * 32) == ["email", "webhook"]
        assert (done.email_state, done.webhook_state) == ("pending", "pending")
        add_job(store, "b" * 32, **both)
        assert store.cancel_queued("b" * 32) and not store.cancel_queued("b" * 32)
        assert kinds(store, "b" * 32) == ["webhook"]  # no e-mail for a cancelled job
        add_job(store, "c" * 32, email="ada@example.org")
        assert store.claim("c" * 32, "w") is not None
        running = store.get("c" * 32)
        assert running is not None and running.status == RUNNING
        assert not store.cancel_queued("c" * 32) and not store.finish("c" * 32, "x", FAILED)
        assert kinds(store, "c" * 32) == []  # an end that did not apply makes nothing
        assert store.end_dead(running, FAILED, "its worker died")
        assert kinds(store, "c" * 32) == ["email"]
        add_job(store, "d" * 32)
        ended(store, "d" * 32, FAILED)
        assert kinds(store, "d" * 32) == []  # asked for nothing
        assert store.delete("a" * 32) and kinds(store, "a" * 32) == []  # dropped with the job
        assert len(rows(store)) == 2
    finally:
        store.close()


def test_a_lost_reply_to_the_finish_commit_makes_one_row_per_kind(
    tmp_path: Path, models: ModelCache, postgres_db: str, hooks: Any
) -> None:
    from sqlalchemy import event

    proxy, behind = proxied(postgres_db)
    config = jobs_config(tmp_path, database_url=behind, db_deadline_seconds=2,
                         webhook_allow_private=True)  # fmt: skip
    service = build_services(config, models=models).jobs
    service.store.open()
    job_id = uuid.uuid4().hex
    add_job(service.store, job_id, webhook_url=hook_url(hooks))
    finishes: list[bool] = []  # one a try; armed: the first try's COMMIT loses its answer
    finish = service.store.finish

    def counted(*args: Any, **kwargs: Any) -> bool:
        finishes.append(not finishes)
        return finish(*args, **kwargs)

    def on_commit(conn: Any) -> None:
        if finishes and finishes[-1]:  # the end's COMMIT: the server commits, nobody hears it
            finishes[-1] = False
            proxy.drop_replies()
            threading.Timer(4, proxy.heal).start()

    service.store.finish = counted  # type: ignore[method-assign]
    event.listen(service.store.engine, "commit", on_commit)
    try:
        service.runner.run(job_id)  # records the end, hears nothing, tries again
        assert service.outbox.drain() == 1 and service.outbox.drain() == 0
        job, made = service.store.get(job_id), rows(service.store, job_id)
    finally:
        proxy.heal()
        service.stop()
        proxy.close()
    assert len(finishes) >= 2 and job is not None and job.status == SUCCEEDED
    assert [(row.kind, row.state, row.attempts) for row in made] == [("webhook", "sent", 1)]
    assert len(hooks.received) == 1 and job.webhook_state == "sent"


# -- senders in several processes --------------------------------------------------------------
def test_concurrent_claims_on_postgresql_never_both_win(postgres_db: str) -> None:
    first = JobStore(postgres_db).open()
    for n in range(20):
        add_job(first, f"{n:032d}", webhook_url="https://hooks.example.org/h")
        assert first.cancel_queued(f"{n:032d}")
    stores = [first] + [JobStore(postgres_db).open() for _ in range(7)]
    start = threading.Barrier(len(stores))

    def claim(n: int) -> list[int]:
        start.wait()
        return [lease.id for lease in claim_due(stores[n], f"s{n}", ["webhook"], 60, 50)]

    try:
        with ThreadPoolExecutor(len(stores)) as pool:
            won = list(pool.map(claim, range(len(stores))))
        made = rows(first)
    finally:
        for store in stores:
            store.close()
    taken = [row_id for ids in won for row_id in ids]
    assert sorted(taken) == sorted(row.id for row in made)  # every row once, none twice
    assert {row.lease_owner for row in made} <= {f"s{n}" for n in range(len(stores))}
    assert all(row.attempts == 1 for row in made)


def test_two_processes_senders_send_each_notice_exactly_once_on_postgresql(
    tmp_path: Path, postgres_db: str, smtp_inbox: tuple[Inbox, int], hooks: Any
) -> None:
    inbox, port = smtp_inbox
    config = smtp_config(tmp_path, port, database_url=postgres_db, webhook_allow_private=True,
                         run_worker_in_process=False)  # fmt: skip
    ids = [uuid.uuid4().hex for _ in range(8)]
    with api_only(config, count=2) as (one, two):
        for job_id in ids:
            add_job(one.store, job_id, email="ada@example.org", webhook_url=hook_url(hooks))

        def end(n: int) -> None:  # the jobs end in both processes, each waking both senders
            ended((one, two)[n % 2].store, ids[n])
            one.notify(ids[n])
            two.notify(ids[n])

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(end, range(len(ids))))
        wait_for(lambda: len(inbox.envelopes) >= 8 and len(hooks.received) >= 8, what="8 + 8")
        wait_for(lambda: one.outbox.drain() + two.outbox.drain() == 0, what="nothing left")
        made = rows(one.store)
        jobs = [one.store.get(job_id) for job_id in ids]
    assert len(inbox.envelopes) == 8 and len(hooks.received) == 8  # none twice
    message_ids = {inbox.message(n)["Message-ID"] for n in range(8)}
    assert message_ids == {f"<{job_id}.email@text2art>" for job_id in ids}
    assert {h["X-Text2Art-Delivery"] for h, _ in hooks.received} == {f"{i}.webhook" for i in ids}
    assert len(made) == 16 and {(row.state, row.attempts) for row in made} == {("sent", 1)}
    owners = {row.lease_owner for row in made}
    assert owners == {None}  # released when sent
    assert all(j is not None and (j.email_state, j.webhook_state) == ("sent", "sent") for j in jobs)


def test_a_sender_that_died_holding_a_lease_is_replaced_when_it_runs_out(
    tmp_path: Path, database: str, hooks: Any
) -> None:
    config = jobs_config(tmp_path, database_url=database, webhook_allow_private=True)
    service = build_services(config).jobs  # its parts; its sender is not started
    store = service.store.open()
    add_job(store, "e" * 32, webhook_url=hook_url(hooks))
    assert store.cancel_queued("e" * 32)
    (dead,) = claim_due(store, "dead:1:x", ["webhook"], 1.0, 10)  # claimed, then it died
    taken = time.monotonic()
    sender = OutboxSender(store, config, service.notices.compose, Outages(), "alive", poll=0.1)
    try:
        assert sender.drain() == 0 and hooks.received == []  # leased: not sent twice at once
        sender.start()
        wait_for(lambda: hooks.received, what="the webhook, once the lease ran out")
        assert hooks.times[0] - taken >= 1.0
        wait_for(lambda: rows(store)[0].state == "sent")
        late = settle(store, dead, "dead:1:x", {"state": "sent"}, "sent")  # it was not dead
        assert sender.drain() == 0
    finally:
        sender.stop()
        (row,) = rows(store)
        job = store.get("e" * 32)
        store.close()
    assert not late  # its lease was taken over: it records nothing
    assert len(hooks.received) == 1 and (row.attempts, row.lease_owner) == (2, None)
    assert job is not None and job.webhook_state == "sent"
    assert hooks.received[0][0]["X-Text2Art-Delivery"] == f"{'e' * 32}.webhook"


def test_a_notice_whose_every_try_died_with_its_sender_is_given_up_unsent(
    tmp_path: Path, database: str, hooks: Any
) -> None:
    """A delivery that kills its sender each time (it never records a failure) must not be
    retried for ever: once `notify_attempts` tries began, the next sender gives it up."""
    config = jobs_config(tmp_path, database_url=database, webhook_allow_private=True,
                         notify_attempts=2)  # fmt: skip
    service = build_services(config).jobs
    store = service.store.open()
    add_job(store, "g" * 32, webhook_url=hook_url(hooks))
    assert store.cancel_queued("g" * 32)
    for n in range(2):  # two senders each took it and died before recording anything
        assert len(claim_due(store, f"dead:{n}:x", ["webhook"], 0.01, 10)) == 1
        time.sleep(0.05)
    sender = OutboxSender(store, config, service.notices.compose, Outages(), "alive", poll=0.1)
    try:
        assert sender.drain() == 1
        (row,) = rows(store)
        job = store.get("g" * 32)
    finally:
        store.close()
    assert hooks.received == [] and (row.state, row.attempts) == ("failed", 3)
    assert job is not None and job.webhook_state is not None
    assert job.webhook_state.startswith("failed: 2 tries began and none finished")


# -- what a client sees ----------------------------------------------------------------------
def test_a_failing_webhook_is_retried_with_backoff_until_sent(
    tmp_path: Path, models: ModelCache, hooks: Any
) -> None:
    hooks.statuses = [500, 503]
    config = jobs_config(tmp_path, run_worker_in_process=False, webhook_allow_private=True,
                         notify_backoff=BACKOFF)  # fmt: skip
    with serving(config, models) as client:
        store = client.app.state.jobs.store  # type: ignore[attr-defined]
        job_id = uuid.uuid4().hex
        add_job(store, job_id, webhook_url=hook_url(hooks))
        ended(store, job_id, FAILED)  # by a worker elsewhere: this node's sender polls for it
        seen = wait_for(lambda: hooks.received and client.get(f"/jobs/{job_id}").json())
        done = wait_for(lambda: (j := client.get(f"/jobs/{job_id}").json())["notifications"]
                        ["webhook"] == "sent" and j)  # fmt: skip
        (row,) = rows(store, job_id)
    assert seen["notifications"]["webhook"] == "pending"  # while it is being retried
    assert done["status"] == "failed" and done["notifications"] == {
        "email": None,
        "webhook": "sent",
    }
    assert len(hooks.received) == 3 and (row.state, row.attempts) == ("sent", 3)
    assert row.last_error is None and row.done_at is not None
    gaps = [b - a for a, b in zip(hooks.times, hooks.times[1:], strict=False)]
    assert gaps[0] >= BACKOFF and gaps[1] >= 2 * BACKOFF  # doubled after each failure
    assert {h["X-Text2Art-Delivery"] for h, _ in hooks.received} == {f"{job_id}.webhook"}


def test_a_job_cancelled_in_the_queue_of_an_api_only_node_gets_its_webhook(
    tmp_path: Path, models: ModelCache, hooks: Any, smtp_inbox: tuple[Inbox, int]
) -> None:
    inbox, port = smtp_inbox
    config = smtp_config(tmp_path, port, run_worker_in_process=False, webhook_allow_private=True)
    with serving(config, models) as client:
        job = submit(client, email="ada@example.org", webhook_url=hook_url(hooks))
        assert client.app.state.jobs.worker_running is False  # type: ignore[attr-defined]
        token = {"X-Delete-Token": job["delete_token"]}
        assert client.post(f"/jobs/{job['id']}/cancel", headers=token).status_code == 200
        wait_for(lambda: hooks.received, what="the webhook")
        done = wait_for(lambda: (j := client.get(f"/jobs/{job['id']}").json())["notifications"]
                        ["webhook"] == "sent" and j)  # fmt: skip
    assert done["status"] == CANCELLED and done["notifications"]["email"] is None
    assert len(hooks.received) == 1 and inbox.envelopes == []  # no e-mail for a cancel
    headers, body = hooks.received[0]
    assert headers["X-Text2Art-Delivery"] == f"{job['id']}.webhook"
    assert b'"status":"cancelled"' in body


def test_a_database_outage_while_draining_is_one_warning_and_the_notice_waits(
    tmp_path: Path, postgres_db: str, hooks: Any, caplog: pytest.LogCaptureFixture
) -> None:
    proxy, behind = proxied(postgres_db)
    config = jobs_config(tmp_path, database_url=behind, webhook_allow_private=True)
    service = build_services(config).jobs
    store = service.store.open()
    add_job(store, "f" * 32, webhook_url=hook_url(hooks))
    assert store.cancel_queued("f" * 32)
    outages, failures = Outages(), []
    outages.on_failure = failures.append
    sender = OutboxSender(store, config, service.notices.compose, outages, "me", poll=0.05)
    caplog.set_level(logging.INFO, logger="api.jobs.outbox")
    try:
        proxy.refuse()
        sender.start()
        wait_for(lambda: len(failures) >= 5, what="five polls in the outage")
        assert hooks.received == []
        proxy.heal()
        wait_for(lambda: hooks.received, what="the webhook once the database is back")
        wait_for(lambda: (j := store.get("f" * 32)) and j.webhook_state == "sent")
    finally:
        sender.stop()
        proxy.heal()
        store.close()
        proxy.close()
    said = [r for r in caplog.records if r.name == "api.jobs.outbox"]
    warned = [r.getMessage() for r in said if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "the database is unavailable" in warned[0]  # not one a poll
    assert any("answers again" in r.getMessage() for r in said)
    assert set(failures) == {"database"} and len(hooks.received) == 1
