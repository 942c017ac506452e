"""The queue survives restarts, and the dead-worker policy: queued again once, then failed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import ROOT, add_job, jobs_config, serving, submit, wait_for
from huey import MemoryHuey, SqliteHuey

from api.cli_worker import run_worker
from api.jobs.policy import WorkerIdentity, dead_message, reap_dead, worker_gone
from api.jobs.queue import JobQueue, make_huey
from api.jobs.store import FAILED, QUEUED, RUNNING, SUCCEEDED, JobStore
from api.services import build_services
from engine import ModelCache


def status_of(store: JobStore, job_id: str) -> str | None:
    job = store.get(job_id)
    return job.status if job is not None else None


def test_queued_jobs_run_after_a_restart(tmp_path: Path, models: ModelCache) -> None:
    with serving(jobs_config(tmp_path, run_worker_in_process=False), models) as client:
        ids = [submit(client, iterations=3, seed=i)["id"] for i in range(2)]
        assert [client.get(f"/jobs/{i}").json()["status"] for i in ids] == [QUEUED, QUEUED]
    with serving(jobs_config(tmp_path), models) as client:  # a new process on the same files
        for job_id in ids:
            job = wait_for(lambda job_id=job_id: client.get(f"/jobs/{job_id}").json()
                           if client.get(f"/jobs/{job_id}").json()["status"] == SUCCEEDED
                           else None)  # fmt: skip
            assert job["attempts"] == 1 and client.get(job["links"]["image"]).status_code == 200


def test_jobs_lost_by_the_queue_are_enqueued_again(tmp_path: Path, models: ModelCache) -> None:
    config = jobs_config(tmp_path, run_worker_in_process=False)
    with serving(config, models) as client:
        job_id = submit(client, iterations=3)["id"]
        jobs = client.app.state.jobs  # type: ignore[attr-defined]
        assert jobs.queue.pending_ids() == {job_id}
        jobs.queue.huey.flush()  # as if a worker died between taking it and starting it
        assert jobs.queue.pending_ids() == set()
    service = build_services(jobs_config(tmp_path), models=models).jobs
    try:
        assert service.recover_queue() == [job_id]
        assert service.recover_queue() == []  # never twice
        service.start()
        wait_for(lambda: status_of(service.store, job_id) == SUCCEEDED)
    finally:
        service.stop()


def test_a_clean_shutdown_hands_the_running_job_back(tmp_path: Path, models: ModelCache) -> None:
    with serving(jobs_config(tmp_path), models) as client:
        job_id = submit(client, iterations=3000)["id"]
        wait_for(lambda: client.get(f"/jobs/{job_id}").json()["progress"]["iteration"] >= 2)
    store = JobStore(jobs_config(tmp_path).resolved_database_url(tmp_path)).open()
    job = store.get(job_id)
    store.close()
    assert job is not None and job.status == QUEUED and job.attempts == 0  # it did not count
    service = build_services(jobs_config(tmp_path), models=models).jobs
    try:
        assert job_id in service.queue.pending_ids()
    finally:
        service.stop()


def test_dead_worker_policy_requeues_once_then_fails(tmp_path: Path) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}").open()
    config = jobs_config(tmp_path, stale_after_seconds=5, max_requeues=1)
    me = WorkerIdentity.current()
    queued: list[str] = []
    failed: list[str] = []
    add_job(store, "a" * 32)

    def crash_while_running(worker: str) -> None:  # claimed, then silent for 10 s
        assert store.claim("a" * 32, worker) is not None
        store.set_fields("a" * 32, heartbeat_at=time.time() - 10)

    crash_while_running("gpu-box-1:11:aaaa")
    assert reap_dead(store, me, config, queued.append, failed.append) == ["a" * 32]
    job = store.get("a" * 32)
    assert job is not None and job.status == QUEUED and job.attempts == 1 and queued == ["a" * 32]
    crash_while_running("gpu-box-2:22:bbbb")
    assert reap_dead(store, me, config, queued.append, failed.append) == ["a" * 32]
    job = store.get("a" * 32)
    assert job is not None and job.status == FAILED and failed == ["a" * 32]
    assert job.error == dead_message(2) and "not tried again" in job.error
    assert reap_dead(store, me, config, queued.append, failed.append) == []  # nothing loops
    assert queued == ["a" * 32]
    store.close()


def test_live_workers_are_left_alone_and_vanished_local_ones_are_dead(tmp_path: Path) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}").open()
    config = jobs_config(tmp_path, stale_after_seconds=60)
    me = WorkerIdentity.current()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid of this host that no longer runs
    workers = {
        "b" * 32: f"{me.host}:{gone.pid}:dead",  # this host, process gone: dead at once
        "c" * 32: f"{me.host}:{me.pid}:older",  # our pid, another token: a restarted container
        "d" * 32: "elsewhere:42:live",  # another host with a fresh heartbeat: alive
        "e" * 32: str(me),  # ourselves
        "8" * 32: "elsewhere:43:gone",  # stale, cancel requested: cancelled, not run again
    }
    for job_id, worker in workers.items():
        add_job(store, job_id, status=RUNNING, worker_id=worker, attempts=1)
        store.set_fields(job_id, heartbeat_at=time.time())
    store.set_fields("8" * 32, heartbeat_at=time.time() - 600, cancel_requested=True)
    requeued: list[str] = []
    ended: list[str] = []
    changed = reap_dead(store, me, config, requeued.append, ended.append)
    assert sorted(requeued) == ["b" * 32, "c" * 32] and ended == ["8" * 32]
    assert sorted(changed) == ["8" * 32, "b" * 32, "c" * 32]
    assert status_of(store, "8" * 32) == "cancelled"
    assert [status_of(store, i) for i in ("d" * 32, "e" * 32)] == [RUNNING, RUNNING]
    assert worker_gone("not a worker id", me) is False
    store.close()


def test_dead_job_found_at_start_up_runs_again(tmp_path: Path, models: ModelCache) -> None:
    store = JobStore(jobs_config(tmp_path).resolved_database_url(tmp_path)).open()
    add_job(store, "f" * 32, status=RUNNING, worker_id="crashed:1:zz", attempts=1)
    add_job(store, "9" * 32, status=RUNNING, worker_id="crashed:1:zz", attempts=2)
    store.close()
    service = build_services(jobs_config(tmp_path), models=models).jobs
    try:
        service.start()
        wait_for(lambda: status_of(service.store, "f" * 32) == SUCCEEDED)
        job = service.store.get("f" * 32)
        assert job is not None and job.attempts == 2 and job.error is None
        failed = service.store.get("9" * 32)
        assert failed is not None and failed.status == FAILED and failed.error == dead_message(2)
    finally:
        service.stop()


def test_worker_command_runs_queued_jobs_until_stopped(tmp_path: Path, models: ModelCache) -> None:
    with serving(jobs_config(tmp_path, run_worker_in_process=False), models) as client:
        job_id = submit(client, iterations=3)["id"]
    stop = threading.Event()
    store = JobStore(jobs_config(tmp_path).resolved_database_url(tmp_path)).open()

    def stop_when_done() -> None:
        wait_for(lambda: status_of(store, job_id) == SUCCEEDED)
        stop.set()

    watcher = threading.Thread(target=stop_when_done)
    watcher.start()
    config = jobs_config(tmp_path, run_worker_in_process=False)
    run_worker(build_services(config, "worker", models=models), stop)
    watcher.join()
    assert status_of(store, job_id) == SUCCEEDED and (tmp_path / f"{job_id}.png").is_file()
    store.close()


@pytest.mark.slow  # a fresh process imports torch and builds the tiny CLIP (~20-40 s here)
def test_standalone_worker_process_runs_jobs_and_stops_on_sigterm(
    tmp_path: Path, models: ModelCache
) -> None:
    with serving(jobs_config(tmp_path, run_worker_in_process=False), models) as client:
        job_id = submit(client, iterations=3)["id"]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "T2A_OUTPUT_DIR": str(tmp_path),
        "T2A_DEVICE": "cpu",
    }
    code = "from api.cli_worker import worker; worker()"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    store = JobStore(jobs_config(tmp_path).resolved_database_url(tmp_path)).open()
    try:
        wait_for(lambda: status_of(store, job_id) == SUCCEEDED, timeout=120)
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
        store.close()
    assert proc.returncode == 0, output
    assert "is taking jobs" in output and "stopping" in output
    assert (tmp_path / f"{job_id}.png").is_file()


def test_requeued_jobs_go_ahead_of_newer_ones(tmp_path: Path) -> None:
    queue = JobQueue(f"sqlite:///{tmp_path / 'q.db'}", "t")
    queue.enqueue("new-1")
    queue.enqueue("new-2")
    queue.requeue("old")
    assert [task.args[0] for task in queue.huey.pending()] == ["old", "new-1", "new-2"]
    queue.close()


def test_queue_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert isinstance(make_huey("sqlite:///rel/q.db", "t"), SqliteHuey)
    assert (tmp_path / "rel" / "q.db").is_file()  # three slashes: relative, as in SQLAlchemy
    make_huey(f"sqlite:///{tmp_path / 'abs.db'}", "t")
    assert (tmp_path / "abs.db").is_file()
    assert isinstance(make_huey("memory://", "t"), MemoryHuey)
    with pytest.raises(ValueError, match="use one of the schemes sqlite, redis"):
        make_huey("amqp://broker/", "t")
