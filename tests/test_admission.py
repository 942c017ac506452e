"""Admission is atomic (issue 30, points 1 and 3): 50 concurrent submissions on a real server
never get past the rate limit or the queue bound, on SQLite and on PostgreSQL; `POST /generate`
is admitted like a job in every mode."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import FORM, jobs_config, running, serving, submit

from api.app import create_app
from engine import ModelCache

CONCURRENT = 50


def storm(url: str, path: str, headers: dict[str, str]) -> Counter[int]:
    """POST `path` CONCURRENT times at once (released together); counts by status."""
    start = threading.Barrier(CONCURRENT)

    def post(_: int) -> int:
        with httpx.Client(base_url=url, timeout=120) as http:
            start.wait()
            return http.post(path, data=FORM, headers=headers).status_code

    with ThreadPoolExecutor(CONCURRENT) as pool:
        return Counter(pool.map(post, range(CONCURRENT)))


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """The job database: the default SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("postgres_db")
    return url


def queued(app: Any) -> int:
    return int(app.state.jobs.store.count("queued"))


def test_fifty_concurrent_submissions_never_pass_the_rate_limit(
    tmp_path: Path, models: ModelCache, database: str | None
) -> None:
    config = jobs_config(tmp_path, database_url=database, run_worker_in_process=False,
                         api_keys=["k1"], rate_limit=10)  # fmt: skip
    app = create_app(config, models=models)
    with running(app) as url:
        answers = storm(url, "/jobs", {"Authorization": "Bearer k1"})
        assert answers == {202: 10, 429: 40}
        assert queued(app) == 10


def test_fifty_concurrent_submissions_never_pass_the_queue_bound(
    tmp_path: Path, models: ModelCache, database: str | None
) -> None:
    config = jobs_config(tmp_path, database_url=database, run_worker_in_process=False,
                         max_queued=5)  # fmt: skip
    app = create_app(config, models=models)
    with running(app) as url:
        answers = storm(url, "/jobs", {})
        assert answers == {202: 5, 503: 45}
        assert queued(app) == 5


def test_the_per_client_cap_holds_under_concurrency(
    tmp_path: Path, models: ModelCache, database: str | None
) -> None:
    config = jobs_config(tmp_path, database_url=database, run_worker_in_process=False,
                         api_keys=["k1", "k2"], max_jobs_per_client=3)  # fmt: skip
    app = create_app(config, models=models)
    with running(app) as url:
        assert storm(url, "/jobs", {"Authorization": "Bearer k1"}) == {202: 3, 429: 47}
        with httpx.Client(base_url=url) as http:
            other = http.post("/jobs", data=FORM, headers={"Authorization": "Bearer k2"})
        assert other.status_code == 202  # another client has its own share
        assert "T2A_MAX_JOBS_PER_CLIENT" in http_detail(url, "k1")


def http_detail(url: str, key: str) -> str:
    with httpx.Client(base_url=url) as http:
        answer = http.post("/jobs", data=FORM, headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 429 and answer.headers["retry-after"] == "30"
    return str(answer.json()["detail"])


def test_generate_is_rate_limited_when_it_runs_in_process(
    tmp_path: Path, models: ModelCache
) -> None:
    fast = {**FORM, "iterations": "1"}
    with serving(jobs_config(tmp_path, rate_limit=2), models, paused=True) as client:
        assert client.post("/generate", data=fast).status_code == 200
        submit(client)  # a job counts against the same limit
        limited = client.post("/generate", data=fast)
        assert limited.status_code == 429 and "at most 2 jobs per 60 s" in limited.text
        assert client.post("/jobs", data=FORM).status_code == 429


def test_fifty_concurrent_generate_calls_never_pass_the_rate_limit(
    tmp_path: Path, models: ModelCache
) -> None:
    config = jobs_config(tmp_path, rate_limit=3, max_waiting=100)
    app = create_app(config, models=models)
    with running(app) as url:
        answers = storm(url, "/generate", {})
        assert answers[200] == 3 and answers[429] == CONCURRENT - 3


def test_deleting_a_job_gives_no_quota_back(tmp_path: Path, models: ModelCache) -> None:
    with serving(jobs_config(tmp_path, rate_limit=1), models, paused=True) as client:
        job = submit(client)
        gone = client.delete(f"/jobs/{job['id']}", headers={"X-Delete-Token": job["delete_token"]})
        assert gone.status_code == 204
        assert client.post("/jobs", data=FORM).status_code == 429
