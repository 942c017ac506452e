"""Jobs resume: a worker saves the running job's state every T2A_CHECKPOINT_SECONDS and when it
stops; whoever runs the job next continues from it (`resumed_from`), to the bytes of an
uninterrupted run; a state that cannot be used is a warning and a fresh start."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import (
    ROOT,
    job_state,
    jobs_config,
    parse_sse,
    serving,
    submit,
    tiny_settings,
    wait_for,
)
from servers import free_port

from api.jobs.resume import Checkpoints
from api.jobs.store import QUEUED, RUNNING, SUCCEEDED, JobStore
from api.storage_local import LocalArtifactStore
from engine import (
    Cancelled,
    ModelCache,
    ResolvedSettings,
    decode_state,
    encode_state,
    generate,
    read_state,
    resolve,
)

FIELDS = {"iterations": 150, "seed": 3}  # seconds of work on the tiny CLIP


def state_file(out: Path, job_id: str) -> Path:
    return out / "states" / f"{job_id}.safetensors"


def done(client: Any, job_id: str) -> dict[str, Any]:
    body: dict[str, Any] = wait_for(lambda: job_state(client, job_id, SUCCEEDED), 120, "the job")
    return body


def image_of(client: Any, body: dict[str, Any]) -> bytes:
    response = client.get(body["links"]["image"])
    assert response.status_code == 200
    return bytes(response.content)


def test_a_stopped_service_saves_the_job_and_the_next_start_resumes_it(
    tmp_path: Path, models: ModelCache
) -> None:
    config = jobs_config(tmp_path, checkpoint_seconds=0.3)
    with serving(config, models) as client:
        job_id = submit(client, **FIELDS)["id"]
        wait_for(
            lambda: (j := job_state(client, job_id, RUNNING)) and j["progress"]["iteration"] >= 10,
            60, "the job at iteration 10",
        )  # fmt: skip
    # The service stopped (a SIGTERM): the job went back to the queue with its state.
    saved = read_state(state_file(tmp_path, job_id))
    assert 10 <= saved.iteration < FIELDS["iterations"]
    store = JobStore(config.resolved_database_url(tmp_path)).open()
    record = store.get(job_id)
    store.close()
    assert record is not None and (record.status, record.attempts) == (QUEUED, 0)
    with serving(config, models) as client:
        resumed = done(client, job_id)
        assert resumed["resumed_from"] == saved.iteration and resumed["warning"] is None
        events = parse_sse(client.get(f"/jobs/{job_id}/events").text)  # replayed at the end
        assert events[-1]["data"]["resumed_from"] == saved.iteration
        reference = done(client, submit(client, **FIELDS)["id"])
        assert reference["resumed_from"] == 0
        assert image_of(client, resumed) == image_of(client, reference)
        metrics = client.get("/metrics").text
        assert "text2art_jobs_resumed_total 1.0" in metrics
        assert f"text2art_resume_iterations_saved_total {float(saved.iteration)}" in metrics
    assert not (tmp_path / "states").exists() or not any((tmp_path / "states").iterdir())


def test_a_handed_back_job_cancelled_in_the_queue_leaves_no_state(
    tmp_path: Path, models: ModelCache
) -> None:
    config = jobs_config(tmp_path, checkpoint_seconds=0.3)
    with serving(config, models) as client:
        created = submit(client, **FIELDS)
        job_id = created["id"]
        wait_for(lambda: (j := job_state(client, job_id, RUNNING)) and j["progress"]["iteration"],
                 60, "the job running")  # fmt: skip
    assert state_file(tmp_path, job_id).is_file()  # handed back with its state
    with serving(config, models, paused=True) as client:  # nobody takes it
        token = {"X-Delete-Token": created["delete_token"]}
        answer = client.post(f"/jobs/{job_id}/cancel", headers=token)
        assert answer.status_code == 200 and answer.json()["status"] == "cancelled"
    assert not state_file(tmp_path, job_id).exists()


def _queued_job(tmp_path: Path, models: ModelCache) -> tuple[Any, str, dict[str, Any]]:
    """A queued job (nobody runs it yet): the config that will, its id and its settings."""
    with serving(jobs_config(tmp_path, run_worker_in_process=False), models) as client:
        job_id = submit(client, **FIELDS)["id"]
        settings = client.get(f"/jobs/{job_id}").json()["settings"]
    return jobs_config(tmp_path, checkpoint_seconds=0.3), job_id, settings


def _save(tmp_path: Path, job_id: str, data: bytes) -> None:
    path = state_file(tmp_path, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_a_hostile_saved_state_is_a_warning_and_a_fresh_start(
    tmp_path: Path, models: ModelCache
) -> None:
    class Boom:
        def __reduce__(self) -> Any:
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    config, job_id, _ = _queued_job(tmp_path, models)
    _save(tmp_path, job_id, pickle.dumps(Boom()))
    with serving(config, models) as client:
        body = done(client, job_id)
        reference = done(client, submit(client, **FIELDS)["id"])
        assert image_of(client, body) == image_of(client, reference)
    assert body["resumed_from"] == 0 and body["attempts"] == 1
    assert body["warning"] == (
        "the saved state is not a text2art run state (truncated, or another format); "
        "the run started afresh"
    )
    assert not (tmp_path / "ran").exists()  # nothing in the file ran
    assert not state_file(tmp_path, job_id).exists()  # the job ended: its state is gone


def test_a_state_of_another_run_is_a_warning_and_a_fresh_start(
    tmp_path: Path, models: ModelCache
) -> None:
    config, job_id, settings = _queued_job(tmp_path, models)
    # A real state of the job's settings with another seed (99; the job's is 3).
    calls = [0]

    def stop() -> bool:
        calls[0] += 1
        return calls[0] > 4

    with pytest.raises(Cancelled) as caught:
        other = ResolvedSettings.create(**{**settings, "seed": 99, "device": "cpu"})
        generate(other, should_stop=stop, models=models)
    assert caught.value.state is not None
    _save(tmp_path, job_id, encode_state(caught.value.state()))
    with serving(config, models) as client:
        body = done(client, job_id)
    assert body["resumed_from"] == 0 and body["status"] == SUCCEEDED
    assert body["warning"].startswith(
        "the saved state does not fit: the state belongs to another run: seed is 99 there, 3 here"
    )
    assert body["warning"].endswith("; the run started afresh")


# -- kill -9 of the single-process server -------------------------------------------------------
class Server:
    """`text2art serve` in its own process (API and worker in one), on a free port."""

    def __init__(self, out: Path, port: int, log: Path):
        env = {k: v for k, v in os.environ.items() if not k.startswith("T2A_")}
        env.update(
            PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", T2A_OUTPUT_DIR=str(out),
            T2A_PORT=str(port), T2A_CLIP_MODELS="tiny-random", T2A_CUTOUTS="4",
            T2A_DEVICE="cpu", T2A_PRELOAD="false", T2A_RATE_LIMIT="0",
            T2A_CHECKPOINT_SECONDS="0.3", T2A_PROGRESS_INTERVAL="0.1",
            T2A_HEARTBEAT_SECONDS="0.5", T2A_STALE_AFTER_SECONDS="4",
        )  # fmt: skip
        code = "from api.cli import main; main(['serve'])"
        self.log = log
        with log.open("ab") as sink:
            self.proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT,
                                         stdout=sink, stderr=sink)  # fmt: skip
        self.url = f"http://127.0.0.1:{port}"
        wait_for(self._up, 120, "the server")

    def _up(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()[-3000:]
        try:
            return httpx.get(self.url + "/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def job(self, job_id: str) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{self.url}/jobs/{job_id}", timeout=10).json()
        return body

    def submit(self, **fields: Any) -> str:
        data = {"prompts": "a castle", "style": "pixel art", "size": "32x32"}
        data.update({k: str(v) for k, v in fields.items()})
        response = httpx.post(self.url + "/jobs", data=data, timeout=30)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def finished(self, job_id: str) -> dict[str, Any]:
        body = wait_for(lambda: (j := self.job(job_id))["status"] == SUCCEEDED and j, 180, "job")
        return dict(body)

    def image(self, job_id: str) -> bytes:
        return httpx.get(f"{self.url}/outputs/{job_id}.png", timeout=10).content

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)


def test_kill_9_of_the_server_mid_job_resumes_after_restart(tmp_path: Path) -> None:
    out, port, log = tmp_path / "out", free_port(), tmp_path / "serve.log"
    fields = {"iterations": 300, "seed": 5}
    server = Server(out, port, log)
    try:
        job_id = server.submit(**fields)
        path = state_file(out, job_id)
        wait_for(lambda: path.is_file() and read_state(path).iteration >= 20, 120, "a state")
        server.kill()
        saved = read_state(state_file(out, job_id))
        server = Server(out, port, log)  # the same files: its dead worker's job is run again
        body = server.finished(job_id)
        assert body["attempts"] == 2 and body["resumed_from"] >= saved.iteration >= 20, body
        reference = server.finished(server.submit(**fields))
        assert reference["resumed_from"] == 0
        assert server.image(job_id) == server.image(reference["id"])
        assert not state_file(out, job_id).exists()
        print(f"\nkill -9 at iteration >= {saved.iteration}; resumed at {body['resumed_from']}")
    finally:
        server.stop()


# -- the background upload ------------------------------------------------------------------------
class SlowStore(LocalArtifactStore):
    """A directory whose state writes wait for `release` (a slow bucket)."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.release = threading.Event()
        self.started = threading.Event()
        self.writes: list[int] = []

    def save_state(self, job_id: str, data: bytes) -> None:
        self.started.set()
        assert self.release.wait(30)
        self.writes.append(decode_state(data).iteration)
        super().save_state(job_id, data)


def test_uploads_never_hold_the_loop_and_only_the_newest_waits(
    tmp_path: Path, models: ModelCache
) -> None:
    store = SlowStore(tmp_path)
    store.prepare()
    s = resolve(tiny_settings(iterations=8))
    states = []

    class Keep:
        def due(self, iteration: int) -> bool:
            return True

        def save(self, state: Any) -> None:
            states.append(state)

    generate(s, models=models, checkpoint=Keep())  # states before iterations 1..7
    with Checkpoints(store, "a" * 32, every=60) as checkpoints:
        checkpoints.save(states[0])  # its upload starts and hangs on the slow store
        assert store.started.wait(30)
        for state in states[1:]:
            checkpoints.save(state)  # returns at once: each overtakes the one before
        store.release.set()
    # Leaving the block waited for the newest: the first (under way) and the last were stored.
    assert store.writes == [1, 7] and checkpoints.uploaded == 2
    data = store.read_state("a" * 32)
    assert data is not None and decode_state(data).iteration == 7
