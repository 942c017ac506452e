"""The S3-compatible artifact store against a real server on loopback (moto's, started here):
upload, serve (streamed with Range, and by presigned redirect), delete, a failure mid-upload,
a job run by a worker that shares only the bucket with the API node, and the same names for
every artifact as the local store."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import FORM, Inbox, a_result, jobs_config, serving, submit, wait_for
from PIL import Image
from s3_server import TEST_ENV, CuttingProxy, keys, moto_server, s3_client

from api.artifacts import open_artifact_store
from api.cli import main
from api.cli_worker import run_worker
from api.errors import StorageError
from api.jobs.identity import StorageMismatch
from api.routes.outputs import to_response
from api.services import build_services
from api.storage import ServedRedirect, ServedStream, artifact_name, new_job_id
from api.storage_local import LocalArtifactStore
from api.storage_s3 import S3ArtifactStore, make_client
from engine import ModelCache

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in TEST_ENV.items():
            patch.setenv(name, value)
        with moto_server(tmp_path_factory.mktemp("moto")) as url:
            yield url


def s3_config(out: Path, endpoint: str, bucket: str, **overrides: Any) -> Any:
    values = {"storage_url": f"s3://{bucket}/art", "s3_endpoint_url": endpoint, **overrides}
    return jobs_config(out, **values)


def test_a_result_is_uploaded_streamed_with_ranges_and_deleted(
    tmp_path: Path, endpoint: str, bucket: str, models: ModelCache
) -> None:
    config = s3_config(tmp_path / "api", endpoint, bucket)
    with serving(config, models) as client:
        store = client.app.state.artifacts  # type: ignore[attr-defined]
        assert isinstance(store, S3ArtifactStore)
        job_id = new_job_id()
        result = a_result(store, job_id, svg="<svg/>", video=True)
        store.video_path(job_id).write_bytes(bytes(range(256)) * 40)  # a 10240-byte "MP4"
        assert sorted(store.save_result(result, job_id)) == ["mp4", "png", "svg"]
        raw = s3_client(endpoint)
        assert {f"art/{job_id}.{e}" for e in ("png", "svg", "mp4")} <= set(keys(raw, bucket))
        assert not (tmp_path / "api" / f"{job_id}.png").exists()  # nothing kept locally
        png = client.get(f"/outputs/{job_id}.png")
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert png.content == raw.get_object(Bucket=bucket, Key=f"art/{job_id}.png")["Body"].read()
        part = client.get(f"/outputs/{job_id}.mp4", headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == (bytes(range(256)) * 40)[100:200]
        assert part.headers["content-range"] == "bytes 100-199/10240"
        outside = client.get(f"/outputs/{job_id}.mp4", headers={"Range": "bytes=20000-"})
        assert outside.status_code == 416 and outside.headers["content-range"] == "bytes */10240"
        assert client.get(f"/outputs/{job_id}.svg").headers["content-security-policy"]
        store.delete(job_id)
        assert not [k for k in keys(raw, bucket) if job_id in k]
        assert client.get(f"/outputs/{job_id}.png").status_code == 404


def test_presigned_redirect_serves_the_object_with_ranges(
    tmp_path: Path, endpoint: str, bucket: str, models: ModelCache
) -> None:
    config = s3_config(tmp_path / "api", endpoint, bucket, s3_presign=True, s3_presign_expiry=60)
    with serving(config, models) as client:
        store = client.app.state.artifacts  # type: ignore[attr-defined]
        job_id = new_job_id()
        result = a_result(store, job_id, video=True)
        store.video_path(job_id).write_bytes(b"0123456789" * 100)
        store.save_result(result, job_id)
        answer = client.get(f"/outputs/{job_id}.mp4", follow_redirects=False)
        assert answer.status_code == 302
        location = answer.headers["location"]
        assert location.startswith(f"{endpoint}/{bucket}/art/{job_id}.mp4?")
        direct = httpx.get(location, headers={"Range": "bytes=5-14"}, timeout=10)
        assert direct.status_code == 206 and direct.content == b"5678901234"
        assert client.get(f"/outputs/{new_job_id()}.png").status_code == 404  # no redirect


def test_a_failure_mid_upload_leaves_no_object_and_says_why(
    tmp_path: Path, endpoint: str, bucket: str
) -> None:
    proxy = CuttingProxy(int(endpoint.rsplit(":", 1)[1]), cut_after=64 * 1024)
    try:
        store = S3ArtifactStore(
            f"s3://{bucket}/art", tmp_path / "staging", make_client(proxy.endpoint, "us-east-1")
        )
        store.prepare()
        job_id = new_job_id()
        result = a_result(store, job_id, video=True)
        store.video_path(job_id).write_bytes(b"\0" * (1024 * 1024))  # dies half-way
        with pytest.raises(StorageError, match=f"cannot save the result in s3://{bucket}/art"):
            store.save_result(result, job_id)
        assert proxy.cuts >= 1
        assert not [k for k in keys(s3_client(endpoint), bucket) if job_id in k]
        assert not (tmp_path / "staging" / "staging" / job_id).exists()
    finally:
        proxy.close()


def test_start_up_check_fails_clearly_when_the_bucket_is_missing(
    tmp_path: Path, endpoint: str, bucket: str
) -> None:
    config = s3_config(tmp_path, endpoint, "no-such-bucket-here")
    store = open_artifact_store(config)
    with pytest.raises(StorageError, match="cannot use s3://no-such-bucket-here/art"):
        store.check()


def test_api_node_serves_a_job_run_by_a_worker_that_shares_only_the_bucket(
    tmp_path: Path, endpoint: str, bucket: str, models: ModelCache
) -> None:
    shared_db = {
        "database_url": f"sqlite:///{tmp_path / 'db' / 'jobs.db'}",
        "queue_url": f"sqlite:///{tmp_path / 'db' / 'queue.db'}",
        "run_worker_in_process": False,
    }
    (tmp_path / "db").mkdir()
    api = s3_config(tmp_path / "api", endpoint, bucket, **shared_db)
    worker = s3_config(tmp_path / "worker", endpoint, bucket, **shared_db)
    with serving(api, models) as client:
        init = tmp_path / "init.png"
        Image.new("RGB", (16, 16), "red").save(init)
        with init.open("rb") as fh:
            files = {"init_image": ("init.png", fh, "image/png")}
            sent = client.post("/jobs", data={**FORM, "iterations": "3"}, files=files)
        assert sent.status_code == 202, sent.text
        job_id, token = sent.json()["id"], sent.json()["delete_token"]
        stop = threading.Event()
        services = build_services(worker, "worker", models=models)
        thread = threading.Thread(target=run_worker, args=(services, stop))
        thread.start()
        try:
            job = wait_for(lambda: _final(client, job_id), timeout=120)
        finally:
            stop.set()
            thread.join(timeout=60)
        assert job["status"] == "succeeded", job
        png = client.get(job["links"]["image"].replace("http://testserver", ""))
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
        assert not list((tmp_path / "api").glob(f"{job_id}.*"))  # served from the bucket
        assert not list((tmp_path / "worker").glob(f"{job_id}.*"))
        assert not (tmp_path / "worker" / "uploads" / job_id).exists()  # staged copies gone
        assert not (tmp_path / "worker" / "staging" / job_id).exists()
        raw = s3_client(endpoint)
        assert f"art/{job_id}.png" in keys(raw, bucket)
        assert f"art/uploads/{job_id}/init.png" in keys(raw, bucket)
        gone = client.delete(f"/jobs/{job_id}", headers={"X-Delete-Token": token})
        assert gone.status_code == 204
        assert not [k for k in keys(raw, bucket) if job_id in k]


def _final(client: Any, job_id: str) -> dict[str, Any] | None:
    body: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
    return body if body["status"] in ("succeeded", "failed", "cancelled") else None


def test_a_worker_with_its_own_directory_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shared = {"database_url": f"sqlite:///{tmp_path / 'jobs.db'}", "run_worker_in_process": False}
    api = build_services(jobs_config(tmp_path / "api", **shared)).jobs
    api.start()
    worker = build_services(jobs_config(tmp_path / "worker", **shared)).jobs
    try:
        with pytest.raises(StorageMismatch, match="would be invisible") as caught:
            worker.start(run_worker=True)
        assert str(tmp_path / "worker") in str(caught.value)
        assert "\n" not in str(caught.value)
        monkeypatch.setenv("T2A_OUTPUT_DIR", str(tmp_path / "other"))
        monkeypatch.setenv("T2A_DATABASE_URL", shared["database_url"])
        with pytest.raises(SystemExit) as exited:
            main(["worker", "--device", "cpu"])  # `text2art worker`: one line, exit 1
        err = capsys.readouterr().err
        assert exited.value.code == 1 and err.count("\n") == 1
        assert err.startswith("error: the worker cannot start: this process stores outputs in")
        same = build_services(jobs_config(tmp_path / "api", **shared)).jobs
        same.start(run_worker=False)  # the API node's own directory passes
        same.stop()
    finally:
        worker.stop()
        api.stop()


def test_generate_and_the_email_work_with_a_bucket(
    tmp_path: Path, endpoint: str, bucket: str, models: ModelCache, smtp_inbox: tuple[Inbox, int]
) -> None:
    inbox, port = smtp_inbox
    config = s3_config(
        tmp_path / "api", endpoint, bucket, smtp_host="127.0.0.1", smtp_port=port,
        smtp_security="none", notify_backoff=0.05, public_url="https://art.example.org",
    )  # fmt: skip
    raw = s3_client(endpoint)
    with serving(config, models) as client:
        made = client.post("/generate", data={**FORM, "iterations": "2"})
        assert made.status_code == 200 and made.content.startswith(b"\x89PNG")
        job_id = made.headers["x-job-id"]
        stored = raw.get_object(Bucket=bucket, Key=f"art/{job_id}.png")["Body"].read()
        assert stored == made.content
        job = submit(client, iterations=4, make_video="true", email="ada@example.org")
        done = wait_for(lambda: (j := client.get(f"/jobs/{job['id']}").json())["notifications"]
                        ["email"] not in (None, "pending") and j, timeout=60)  # fmt: skip
    assert done["status"] == "succeeded" and done["notifications"]["email"] == "sent"
    files = {part.get_filename(): part for part in inbox.message().iter_attachments()}
    mp4 = raw.get_object(Bucket=bucket, Key=f"art/{job['id']}.mp4")["Body"].read()
    assert files[f"{job['id']}.mp4"].get_content() == mp4
    assert not list((tmp_path / "api").glob(f"{job['id']}.*"))


def test_variations_are_objects_of_their_own_served_and_deleted(
    tmp_path: Path, endpoint: str, bucket: str, models: ModelCache
) -> None:
    config = s3_config(tmp_path / "api", endpoint, bucket)
    with serving(config, models) as client:
        store = client.app.state.artifacts  # type: ignore[attr-defined]
        job_id = new_job_id()
        result = a_result(store, job_id, svg="<svg/>", variations=2)
        kept = store.save_result(result, job_id)
        assert kept == ["png", "svg", "1.png", "1.svg", "2.png", "2.svg"]
        raw = s3_client(endpoint)
        names = {f"art/{job_id}.png", f"art/{job_id}-1.png", f"art/{job_id}-2.svg"}
        assert names <= set(keys(raw, bucket)) and store.kept(job_id) == kept
        second = client.get(f"/outputs/{job_id}-2.png")
        assert second.status_code == 200 and second.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(second.content)).getpixel((0, 0)) == (40, 0, 0)
        assert client.get(f"/outputs/{job_id}-2.svg").content == b'<svg id="1"/>'
        files = store.local_files(job_id, ["1.png", "2.png"])  # e-mail attachments
        assert [p.name for p in files.values()] == [f"{job_id}-1.png", f"{job_id}-2.png"]
        store.delete(job_id)
        assert not [k for k in keys(raw, bucket) if job_id in k]
        assert client.get(f"/outputs/{job_id}-1.png").status_code == 404


def test_both_stores_name_every_artifact_alike(tmp_path: Path, endpoint: str, bucket: str) -> None:
    local = LocalArtifactStore(tmp_path / "local")
    s3 = S3ArtifactStore(f"s3://{bucket}/art", tmp_path / "staging", make_client(endpoint, None))
    job_id, kept = new_job_id(), []
    for store in (local, s3):
        store.prepare()
        result = a_result(store, job_id, svg="<svg/>", video=True, variations=2)
        store.commit_uploads(job_id)  # the bucket: uploads/{id}/init.png
        kept.append(store.save_result(result, job_id))
        store.save_preview(job_id, Image.new("RGB", (4, 4)))
        store.save_state(job_id, b"state")
        store.write_marker("m", b"1")
        assert store.upload_dir(job_id) == store.root / artifact_name("uploads", job_id)
    assert kept[0] == kept[1]
    names = {artifact_name("result", job_id, key) for key in kept[0]}
    names |= {artifact_name("preview", job_id), artifact_name("marker", "m")}
    names |= {artifact_name("uploads", job_id, "init.png"), artifact_name("state", job_id)}
    files = {p.relative_to(local.root).as_posix() for p in local.root.rglob("*") if p.is_file()}
    objects = {key.removeprefix("art/") for key in keys(s3_client(endpoint), bucket)}
    assert files == names == objects and len(names) == 11
    for name in names:  # a local path under the root is the object key under the prefix
        assert s3.key(name) == "art/" + local.file(name).relative_to(local.root).as_posix()


def test_a_run_state_is_kept_replaced_kept_by_discard_and_gone_with_the_job(
    tmp_path: Path, endpoint: str, bucket: str
) -> None:
    local = LocalArtifactStore(tmp_path / "local")
    s3 = S3ArtifactStore(f"s3://{bucket}/st", tmp_path / "staging", make_client(endpoint, None))
    for store in (local, s3):
        store.prepare()
        job_id = new_job_id()
        assert store.read_state(job_id) is None
        store.save_state(job_id, b"first")
        store.save_state(job_id, b"second")  # replaced whole
        assert store.read_state(job_id) == b"second"
        store.discard(job_id)  # a handed-back run: the next attempt continues from it
        assert store.read_state(job_id) == b"second"
        store.remove_state(job_id)
        store.remove_state(job_id)  # gone already: no error
        assert store.read_state(job_id) is None
        store.save_state(job_id, b"third")
        store.delete(job_id)  # the job is deleted: everything of it goes
        assert store.read_state(job_id) is None
    assert not [k for k in keys(s3_client(endpoint), bucket) if k.startswith("st/states/")]


def test_a_state_write_to_an_unreachable_bucket_is_a_storage_error(tmp_path: Path) -> None:
    dead = make_client(f"http://127.0.0.1:{_closed_port()}", None)
    store = S3ArtifactStore("s3://nowhere/x", tmp_path / "staging", dead)
    with pytest.raises(StorageError, match="cannot save the run state in s3://nowhere/x"):
        store.save_state(new_job_id(), b"s")
    with pytest.raises(StorageError, match="cannot read the run state in s3://nowhere/x"):
        store.read_state(new_job_id())


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_bucket_serves_a_stream_a_range_or_a_redirect(
    tmp_path: Path, endpoint: str, bucket: str
) -> None:
    store = S3ArtifactStore(f"s3://{bucket}/art", tmp_path / "staging", make_client(endpoint, None))
    job_id = new_job_id()
    result = a_result(store, job_id, video=True)
    store.video_path(job_id).write_bytes(b"0123456789" * 10)
    store.save_result(result, job_id)
    whole = store.serve(job_id, "png", None)
    assert isinstance(whole, ServedStream) and whole.status == 200 and whole.chunks is not None
    assert b"".join(whole.chunks) == store.read(job_id, "png")
    answer = to_response(whole, "png")  # what GET /outputs sends
    assert answer.headers["x-content-type-options"] == "nosniff" and answer.headers["etag"]
    assert answer.headers["content-disposition"] == f'inline; filename="{job_id}.png"'
    assert answer.headers["last-modified"].endswith(" GMT")
    part = store.serve(job_id, "mp4", "bytes=5-14")
    assert isinstance(part, ServedStream) and part.chunks is not None
    assert (part.status, part.headers["Content-Range"]) == (206, "bytes 5-14/100")
    assert b"".join(part.chunks) == b"5678901234" and part.media_type == "video/mp4"
    outside = store.serve(job_id, "mp4", "bytes=500-")
    assert outside == ServedStream(
        416, "video/mp4", f"{job_id}.mp4", {"Content-Range": "bytes */100"}
    )
    assert store.serve(new_job_id(), "png", None) is None and store.serve("x", "png", None) is None
    store.presign_seconds = 60
    moved = store.serve(job_id, "mp4", None)
    assert isinstance(moved, ServedRedirect) and to_response(moved, "mp4").status_code == 302
    assert httpx.get(moved.url, timeout=10).content == b"0123456789" * 10
    assert store.serve(new_job_id(), "mp4", None) is None


def test_intermediate_pictures_are_kept_served_by_name_and_gone_with_the_job(
    tmp_path: Path, endpoint: str, bucket: str
) -> None:
    """save_every's pictures: `steps/{id}/step-0010.png` in both stores, served as
    `{id}-step-0010.png`, kept by discard (a continued run keeps the earlier ones), deleted with
    the job."""
    local = LocalArtifactStore(tmp_path / "local")
    s3 = S3ArtifactStore(f"s3://{bucket}/sv", tmp_path / "staging", make_client(endpoint, None))
    for store in (local, s3):
        store.prepare()
        job_id = new_job_id()
        assert store.steps(job_id) == []
        for i in (20, 10):
            assert store.save_step(job_id, i, Image.new("RGB", (4, 4), (i, 0, 0))) == (
                f"step-{i:04d}.png"
            )
        assert store.steps(job_id) == ["step-0010.png", "step-0020.png"]
        assert artifact_name("result", job_id, "step-0010.png") == f"steps/{job_id}/step-0010.png"
        data = store.read(f"{job_id}-step-0020", "png")
        assert data is not None and Image.open(io.BytesIO(data)).getpixel((0, 0)) == (20, 0, 0)
        store.discard(job_id)
        assert store.steps(job_id) == ["step-0010.png", "step-0020.png"]
        store.delete(job_id)
        assert store.steps(job_id) == [] and store.read(f"{job_id}-step-0010", "png") is None
    assert not [k for k in keys(s3_client(endpoint), bucket) if k.startswith("sv/steps/")]
