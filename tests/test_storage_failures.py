"""A run that does not succeed leaves nothing behind, and a storage failure fails the job with
one clear line instead of marking it succeeded (a local directory, and a bucket on a real S3
server on loopback); `StorageError` is its own error, answered as `storage_error`."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from helpers import add_job, job_state, jobs_config, serving, submit, wait_for
from s3_server import TEST_ENV, keys, moto_server, s3_client

from api.errors import RunFailed, StorageError, install_error_handlers
from api.jobs.store import CANCELLED, FAILED
from api.runner import classify, failure_message
from api.services import build_services
from api.storage_local import LocalArtifactStore
from api.storage_s3 import S3ArtifactStore, make_client
from engine import ModelCache


@pytest.fixture
def endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for name, value in TEST_ENV.items():
        monkeypatch.setenv(name, value)
    with moto_server(tmp_path) as url:
        yield url


def test_a_cancelled_run_leaves_no_output_or_preview(tmp_path: Path, models: ModelCache) -> None:
    out = tmp_path / "out"
    with serving(jobs_config(out, preview_every=1), models) as client:
        job = submit(client, iterations=3000)
        wait_for(lambda: (out / "previews" / f"{job['id']}.png").exists())
        token = {"X-Delete-Token": job["delete_token"]}
        assert client.post(f"/jobs/{job['id']}/cancel", headers=token).status_code in (200, 202)
        wait_for(lambda: job_state(client, job["id"], CANCELLED))
    assert not list(out.glob(f"{job['id']}.*"))
    assert not (out / "previews" / f"{job['id']}.png").exists()


def test_a_storage_failure_fails_the_job_with_a_clear_error(
    tmp_path: Path, endpoint: str, models: ModelCache
) -> None:
    bucket = f"t2a-{uuid.uuid4().hex[:12]}"
    raw = s3_client(endpoint)
    raw.create_bucket(Bucket=bucket)
    store = S3ArtifactStore(f"s3://{bucket}/art", tmp_path / "staging", make_client(endpoint, None))
    service = build_services(jobs_config(tmp_path), models=models, artifacts=store).jobs
    service.store.open()  # the job database only: the store is what fails
    try:
        add_job(service.store, "c" * 32)
        raw.delete_bucket(Bucket=bucket)  # the bucket goes away before the job runs
        service.runner.run("c" * 32)
        job = service.store.get("c" * 32)
        assert job is not None and job.status == FAILED and job.outputs == []
        assert job.error is not None and "\n" not in job.error
        assert job.error.startswith(f"cannot save the result in s3://{bucket}/art")
        assert "NoSuchBucket" in job.error
        raw.create_bucket(Bucket=bucket)
        assert keys(raw, bucket) == []
    finally:
        service.stop()


def test_a_storage_error_is_its_own_error_with_the_same_answers() -> None:
    error = StorageError("cannot save the preview in s3://b/art: ClientError: NoSuchBucket")
    assert isinstance(error, OSError) and not isinstance(error, RunFailed)
    assert str(error) == failure_message(error) == error.detail
    run = classify(error)  # raised inside a run (a step's callback): the run fails with its line
    assert (run.code, run.detail, run.status_code) == ("storage_error", error.detail, 500)
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/fail")
    def fail() -> None:
        raise error

    with TestClient(app) as client:
        answer = client.get("/fail")
    assert answer.status_code == 500
    assert answer.json() == {"error": "storage_error", "detail": error.detail}


def test_a_full_local_directory_fails_the_job_with_a_clear_error(
    tmp_path: Path, models: ModelCache
) -> None:
    root = tmp_path / "out"
    store = LocalArtifactStore(root)
    service = build_services(jobs_config(tmp_path), models=models, artifacts=store).jobs
    service.store.open()  # the job database only: the store is what fails
    try:
        add_job(service.store, "d" * 32)
        shutil.rmtree(root, ignore_errors=True)
        root.write_bytes(b"")  # a file where the directory should be: every write fails
        service.runner.run("d" * 32)
        job = service.store.get("d" * 32)
        assert job is not None and job.status == FAILED and job.outputs == []
        assert job.error is not None and "\n" not in job.error
        assert job.error.startswith(f"cannot save the result in the directory {root.resolve()}")
    finally:
        service.stop()
