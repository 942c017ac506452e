"""One composition point (`api.services`), one configuration loaded once, one submission sequence.

- Building the services does no I/O; `start()` does, and `stop()` undoes it.
- `serve` and `worker` build through `build_services`; the config is read from the environment
  once, by the entry point, and every service holds that same object.
- A worker's preflight checks the very objects it will run with (nothing is opened twice).
- A submission that fails after its uploads were stored leaves nothing behind.
- A cancel never holds a thread while the worker stops.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from helpers import FORM, jobs_config, png_bytes, serving, submit, wait_for

import api.artifacts
import api.services
from api.app import create_app
from api.cli_worker import device_error
from api.config import ServiceConfig
from api.jobs.preflight import preflight
from api.jobs.store import RUNNING
from api.services import Services, build_services
from engine import ModelCache


def test_building_the_services_does_no_io(tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = jobs_config(out, queue_url=f"sqlite:///{tmp_path / 'q' / 'queue.db'}")
    services = build_services(config, "worker")
    assert not out.exists() and not (tmp_path / "q").exists()  # nothing made yet
    assert services.jobs.config is config and services.config is config
    assert services.jobs.artifacts is services.artifacts and services.jobs.gpu is services.gpu
    services.start(run_worker=False)
    try:
        assert (out / "jobs.db").is_file() and (tmp_path / "q" / "queue.db").is_file()
        assert (out / ".text2art").is_dir()  # the storage identity's marker
    finally:
        services.stop()


def test_a_database_that_is_down_fails_at_start_not_when_built(tmp_path: Path) -> None:
    url = "postgresql+psycopg://u:p@127.0.0.1:9/t2a?connect_timeout=1"  # port 9: nobody
    services = build_services(jobs_config(tmp_path, database_url=url))  # no error: no I/O
    with pytest.raises(Exception, match="127.0.0.1"):
        services.start(run_worker=False)
    services.stop()  # stopping what never started is harmless


def test_the_app_reads_the_environment_once_and_shares_one_config(
    tmp_path: Path, models: ModelCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = jobs_config(tmp_path)
    built: list[ServiceConfig] = []
    real = api.services.build_services

    def spy(given: ServiceConfig, *args: Any, **kwargs: Any) -> Services:
        built.append(given)
        return real(given, *args, **kwargs)

    reads = [0]
    init = ServiceConfig.__init__

    def counted(self: ServiceConfig, **values: Any) -> None:
        reads[0] += 1
        init(self, **values)

    monkeypatch.setattr("api.app.build_services", spy)
    monkeypatch.setattr(ServiceConfig, "__init__", counted)
    with TestClient(create_app(config, models=models)) as client:
        state = client.app.state  # type: ignore[attr-defined]
        assert state.config is config and state.jobs.config is config
        assert state.models is models and state.jobs.runner.models is models
    assert built == [config] and built[0] is config
    assert reads == [0]  # the config given is the config used: no second read


def test_the_worker_preflight_checks_its_own_parts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = build_services(jobs_config(tmp_path), "worker")

    def second_store(*_: Any) -> Any:
        raise AssertionError("the preflight opened a second artifact store")

    monkeypatch.setattr(api.artifacts, "open_artifact_store", second_store)
    monkeypatch.setattr(api.services, "open_artifact_store", second_store)
    assert preflight(services.jobs, device_error) == []
    services.start(run_worker=False)  # what the preflight opened is what runs
    services.stop()


def test_the_worker_preflight_names_each_part_it_cannot_reach(tmp_path: Path) -> None:
    down = "postgresql+psycopg://u:secret@127.0.0.1:9/t2a?connect_timeout=1"
    config = jobs_config(tmp_path, database_url=down, device="cuda:7")
    problems = preflight(build_services(config, "worker").jobs, device_error)
    parts = {problem.part: problem for problem in problems}
    assert set(parts) == {"database", "device"}
    assert "secret" not in parts["database"].line and "127.0.0.1:9" in parts["database"].line
    assert "\n" not in parts["database"].line


def test_a_failed_submission_leaves_no_upload_behind(
    tmp_path: Path, models: ModelCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serving(jobs_config(tmp_path), models, paused=True) as client:

        def database_fails(*args: Any) -> Any:
            raise OSError("disk full")

        monkeypatch.setattr("api.jobs.admission.admit", database_fails)  # records the job
        files = {"init_image": ("init.png", io.BytesIO(png_bytes(size=(16, 16))), "image/png")}
        with pytest.raises(OSError, match="disk full"):
            client.post("/jobs", data=FORM, files=files)
        uploads = tmp_path / "uploads"
        assert not uploads.exists() or list(uploads.iterdir()) == []


def test_a_bad_field_is_422_before_the_rate_limit_counts(
    tmp_path: Path, models: ModelCache
) -> None:
    with serving(jobs_config(tmp_path, rate_limit=1), models, paused=True) as client:
        bad = client.post("/jobs", data={**FORM, "iterations": "0"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "iterations"]
        assert client.post("/jobs", data=FORM).status_code == 202  # the 422 took no slot
        over = client.post("/jobs", data=FORM)
        assert over.status_code == 429 and int(over.headers["retry-after"]) >= 1
        bad_again = client.post("/jobs", data={**FORM, "iterations": "0"})
        assert bad_again.status_code == 422  # the field is wrong whatever the limits


def test_cancel_never_sleeps_in_a_request_thread(
    tmp_path: Path, models: ModelCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serving(jobs_config(tmp_path), models) as client:
        job = submit(client, iterations=3000)
        wait_for(lambda: client.get(f"/jobs/{job['id']}").json()["status"] == RUNNING,
                 what="the job to run")  # fmt: skip

        def no_sleep(seconds: float) -> None:
            raise AssertionError(f"a thread slept {seconds} s")

        monkeypatch.setattr(time, "sleep", no_sleep)  # the route waits in the event loop
        headers = {"X-Delete-Token": job["delete_token"]}
        answer = client.post(f"/jobs/{job['id']}/cancel", headers=headers)
        monkeypatch.undo()
        assert answer.status_code in (200, 202), answer.text
        wait_for(lambda: client.get(f"/jobs/{job['id']}").json()["status"] == "cancelled",
                 what="the job to be cancelled")  # fmt: skip


def test_a_missing_database_driver_is_a_preflight_line_not_a_traceback(tmp_path: Path) -> None:
    url = "postgresql+pg8000://u:secret@127.0.0.1:9/t2a"  # pg8000 is not installed
    services = build_services(jobs_config(tmp_path, database_url=url), "worker")  # no import yet
    problems = {p.part: p.line for p in preflight(services.jobs, device_error)}
    assert list(problems) == ["database"]
    assert "ModuleNotFoundError: No module named 'pg8000'" in problems["database"]
    assert "secret" not in problems["database"]
