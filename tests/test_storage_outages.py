"""A storage outage is an outage, not a failed job: a bucket behind a TCP proxy (`faults`) that
refuses or black-holes connections while jobs finish, on a real S3 server (moto) on loopback.
Every job succeeds on its first attempt once the store is back, with its outputs stored; the API
answers 503 with Retry-After meanwhile; a store that refuses for good still fails the job."""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from faults import FaultProxy
from helpers import add_job, jobs_config, serving, wait_for
from s3_server import TEST_ENV, keys, moto_server, s3_client

from api.errors import StorageError, unreachable
from api.jobs.outage import unavailable_service
from api.jobs.store import SUCCEEDED
from api.services import build_services
from api.storage_s3 import S3ArtifactStore
from engine import ModelCache

JOBS = 3


@pytest.fixture
def endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for name, value in TEST_ENV.items():
        monkeypatch.setenv(name, value)
    with moto_server(tmp_path) as url:
        yield url


def _client(endpoint: str) -> Any:
    """An S3 client with short timeouts, so that a black hole is noticed in seconds."""
    import boto3

    config = Config(signature_version="s3v4", s3={"addressing_style": "path"},
                    retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=1,
                    read_timeout=2)  # fmt: skip
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", config=config)


@pytest.fixture
def bucket_behind_proxy(endpoint: str, tmp_path: Path) -> Iterator[tuple[Any, str, FaultProxy]]:
    raw = s3_client(endpoint)
    bucket = f"t2a-{uuid.uuid4().hex[:12]}"
    raw.create_bucket(Bucket=bucket)
    proxy = FaultProxy(int(endpoint.rsplit(":", 1)[1]))
    try:
        yield raw, bucket, proxy
    finally:
        proxy.close()


@pytest.mark.parametrize("fault", ["refuse", "blackhole"])
def test_jobs_that_end_in_a_storage_outage_all_succeed_on_their_first_attempt(
    tmp_path: Path,
    models: ModelCache,
    bucket_behind_proxy: tuple[Any, str, FaultProxy],
    fault: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    raw, bucket, proxy = bucket_behind_proxy
    store = S3ArtifactStore(f"s3://{bucket}/art", tmp_path / "staging", _client(proxy.endpoint))
    service = build_services(jobs_config(tmp_path, preview_every=1), models=models,
                             artifacts=store).jobs  # fmt: skip
    service.store.open()
    ids = [uuid.uuid4().hex for _ in range(JOBS)]
    for job_id in ids:
        add_job(service.store, job_id)
    caplog.set_level(logging.INFO, logger="api.jobs")
    try:
        # Long enough for a black-holed upload to time out (about 6 s with these timeouts).
        healing = threading.Timer(6 if fault == "refuse" else 10, proxy.heal)
        save = store.save_result

        def save_in_the_outage(result: Any, job_id: str) -> list[str]:
            if healing.ident is None:  # the first run's end starts the outage
                getattr(proxy, fault)()
                healing.start()
            return save(result, job_id)

        store.save_result = save_in_the_outage  # type: ignore[method-assign]
        for job_id in ids:
            service.runner.run(job_id)  # waits the outage out, then records the end
        healing.join()
        jobs = [service.store.get(job_id) for job_id in ids]
        scrape = service.metrics.render()[0].decode()
    finally:
        service.stop()
    assert [(j.status, j.attempts, j.error) for j in jobs if j] == [(SUCCEEDED, 1, None)] * JOBS
    failed = re.search(r'text2art_infra_errors_total\{service="storage"\} (\S+)', scrape)
    assert failed and float(failed.group(1)) >= 1  # the outage is counted as the storage's
    assert 'text2art_infra_errors_total{service="database"} 0.0' in scrape
    stored = keys(raw, bucket)
    for job_id in ids:
        assert f"art/{job_id}.png" in stored
    assert not [k for k in stored if "previews/" in k]  # no preview left behind
    # One warning per job that met the outage (when it started), not one per try.
    met = "store the result: the storage is unavailable"
    starts = Counter(r.message.split(":")[0] for r in caplog.records if met in r.message)
    assert starts and set(starts.values()) == {1}
    assert any("store the result: done after" in r.message for r in caplog.records)


def test_the_api_answers_503_with_retry_after_while_the_store_is_away(
    tmp_path: Path, models: ModelCache, bucket_behind_proxy: tuple[Any, str, FaultProxy]
) -> None:
    raw, bucket, proxy = bucket_behind_proxy
    job_id = uuid.uuid4().hex
    config = jobs_config(tmp_path, storage_url=f"s3://{bucket}/art", s3_endpoint_url=proxy.endpoint)
    with serving(config, models, paused=True) as client:
        add_job(client.app.state.jobs.store, job_id, status=SUCCEEDED, outputs=["png"])
        raw.put_object(Bucket=bucket, Key=f"art/{job_id}.png", Body=b"\x89PNG")
        assert client.get(f"/outputs/{job_id}.png").status_code == 200
        proxy.refuse()
        answers = [client.get(f"/outputs/{job_id}.png"), client.get(f"/jobs/{job_id}/preview.png")]
        down = wait_for(lambda: _unready(client), what="/readyz to see the storage gone")
        proxy.heal()
        back = client.get(f"/outputs/{job_id}.png")
        wait_for(lambda: client.get("/readyz").json()["storage"]["ok"], what="/readyz to recover")
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == "10"
        assert answer.json()["error"] == "unavailable" and answer.json()["service"] == "storage"
    assert back.status_code == 200
    assert (
        down["ready"] is False
        and down["database"]["ok"]
        and "EndpointConnectionError" in (down["storage"]["error"])
    )


def _unready(client: Any) -> dict[str, Any] | None:
    answer = client.get("/readyz")
    return answer.json() if answer.status_code == 503 else None


def test_what_counts_as_an_unreachable_store() -> None:
    refused = EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    timed_out = ReadTimeoutError(endpoint_url="http://127.0.0.1:1")
    slow = ClientError({"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}},
                       "PutObject")  # fmt: skip
    gone = ClientError({"Error": {"Code": "NoSuchBucket"},
                        "ResponseMetadata": {"HTTPStatusCode": 404}}, "PutObject")  # fmt: skip
    denied = ClientError({"Error": {"Code": "AccessDenied"},
                          "ResponseMetadata": {"HTTPStatusCode": 403}}, "PutObject")  # fmt: skip
    assert [unreachable(e) for e in (refused, timed_out, slow, gone, denied)] == [
        True, True, True, False, False,
    ]  # fmt: skip
    try:
        try:
            raise refused
        except Exception as exc:
            raise StorageError("cannot save", unreachable(exc)) from exc
    except StorageError as wrapped:
        assert wrapped.unavailable and unavailable_service(wrapped) == "storage"
    assert unavailable_service(StorageError("cannot save: NoSuchBucket")) is None


def test_a_store_that_stays_away_past_a_shutdown_leaves_the_job_to_the_next_worker(
    tmp_path: Path, models: ModelCache, bucket_behind_proxy: tuple[Any, str, FaultProxy]
) -> None:
    raw, bucket, proxy = bucket_behind_proxy
    store = S3ArtifactStore(f"s3://{bucket}/art", tmp_path / "staging", _client(proxy.endpoint))
    service = build_services(jobs_config(tmp_path), models=models, artifacts=store).jobs
    service.store.open()
    job_id = uuid.uuid4().hex
    add_job(service.store, job_id)
    proxy.refuse()
    try:
        worker = threading.Thread(target=service.runner.run, args=(job_id,))
        worker.start()
        time.sleep(3)  # the run is done; its result waits for the store
        service.runner.shutdown()
        worker.join(30)
        job = service.store.get(job_id)
    finally:
        service.stop()
    assert not worker.is_alive()
    assert job is not None and job.status == "queued" and job.attempts == 0  # no try spent
    assert job.error is None
