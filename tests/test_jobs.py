"""The jobs API end to end on the tiny models: submit, progress, SSE, cancel, delete, gallery,
limits and validation."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from helpers import FORM, job_state, jobs_config, parse_sse, serving, submit, wait_for
from PIL import Image

from engine import ModelCache


def test_submit_progress_succeeded(client: TestClient, tmp_path: Path) -> None:
    created = client.post("/jobs", data={**FORM, "seed": "3"})
    assert created.status_code == 202
    body = created.json()
    assert set(body) == {"id", "status", "position", "links", "delete_token"}
    assert body["status"] == "queued" and body["position"] == 0
    assert created.headers["location"] == body["links"]["self"]
    job_id = body["id"]
    seen = []

    def done() -> dict[str, Any] | None:
        job = client.get(f"/jobs/{job_id}").json()
        seen.append(job["progress"]["iteration"])
        return job if job["status"] == "succeeded" else None

    job = wait_for(done)
    assert job["progress"] == {
        "iteration": 30, "total": 30, "fraction": 1.0, "frame": 0, "frames": 0
    }  # fmt: skip
    assert job["error"] is None and job["eta_seconds"] is None and job["attempts"] == 1
    assert job["settings"]["seed"] == 3 and job["settings"]["size"] == [32, 32]
    assert job["started_at"] >= job["created_at"] and job["finished_at"] >= job["started_at"]
    assert seen == sorted(seen)  # progress never goes back
    image = client.get(job["links"]["image"])
    assert Image.open(io.BytesIO(image.content)).size == (32, 32)
    preview = client.get(job["links"]["preview"])  # the final image once it succeeded
    assert preview.content == image.content
    assert "delete_token" not in job and job["notifications"] == {"email": None, "webhook": None}
    assert not (tmp_path / "previews" / f"{job_id}.png").exists()


def test_events_show_rising_progress_and_end_with_the_final_state(client: TestClient) -> None:
    job_id = submit(client)["id"]
    stream = client.get(f"/jobs/{job_id}/events")
    assert stream.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(stream.text)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "status" and kinds[-1] == "status" and "preview" in kinds
    assert events[-1]["data"]["status"] == "succeeded"
    assert events[-1]["data"]["links"]["image"].endswith(f"/outputs/{job_id}.png")
    iterations = [e["data"]["iteration"] for e in events if e["event"] == "progress"]
    assert len(iterations) >= 3 and iterations == sorted(set(iterations))
    assert iterations[-1] == 30
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids)
    # A client that has the final state is told to stop reconnecting; one that missed it
    # gets it again.
    last = ids[-1]
    assert (
        client.get(f"/jobs/{job_id}/events", headers={"Last-Event-ID": str(last)}).status_code
        == 204
    )
    resumed = parse_sse(client.get(f"/jobs/{job_id}/events?after={ids[0]}").text)
    assert resumed[-1]["data"]["status"] == "succeeded"


def test_a_job_waiting_behind_generate_shows_its_place_for_the_gpu(client: TestClient) -> None:
    """The worker took the job, but a POST /generate holds the GPU: not "running at iteration
    0" with no position, but the runs ahead of it."""

    def waiting(job_id: str) -> dict[str, Any] | None:
        job = job_state(client, job_id, "running")
        return job if job and job["gpu_position"] is not None else None

    gpu = client.app.state.gpu  # type: ignore[attr-defined]
    with gpu.slot():  # what a POST /generate holds while it runs
        job_id = submit(client, iterations=2)["id"]
        job = wait_for(lambda: waiting(job_id), 20, "the worker waiting for the GPU")
        assert (job["gpu_position"], job["progress"]["iteration"]) == (1, 0)
    done = wait_for(lambda: job_state(client, job_id, "succeeded"), 30, "the job ending")
    assert done["gpu_position"] is None


def test_cancel_queued_and_running_jobs(client: TestClient) -> None:
    gpu = client.app.state.gpu  # type: ignore[attr-defined]
    with gpu.slot():  # the worker shares /generate's GPU lock: the first job waits for it
        first = submit(client, iterations=3000)
        second = submit(client)
        wait_for(lambda: job_state(client, first["id"], "running"))
        assert client.get(f"/jobs/{second['id']}").json()["position"] == 0
        assert client.get(f"/jobs/{first['id']}").json()["progress"]["iteration"] == 0
        token = {"X-Delete-Token": second["delete_token"]}
        cancelled = client.post(f"/jobs/{second['id']}/cancel", headers=token)
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    wait_for(lambda: client.get(f"/jobs/{first['id']}").json()["progress"]["iteration"] >= 3)
    url = f"/jobs/{first['id']}/cancel"
    assert client.post(url).status_code == 401
    assert client.post(url, headers={"X-Delete-Token": "wrong"}).status_code == 403
    stopped = client.post(url, params={"delete_token": first["delete_token"]})
    assert stopped.status_code == 200
    job = stopped.json()
    assert job["status"] == "cancelled" and job["cancel_requested"]
    assert 3 <= job["progress"]["iteration"] < 3000
    never = client.get(f"/jobs/{second['id']}").json()
    assert never["started_at"] is None and never["attempts"] == 0
    again = client.post(url, headers={"X-Delete-Token": first["delete_token"]})
    assert again.status_code == 409


def test_delete_needs_the_token_and_removes_job_and_files(
    client: TestClient, tmp_path: Path
) -> None:
    job = submit(client, iterations=3)
    done = wait_for(lambda: job_state(client, job["id"], "succeeded"))
    png = tmp_path / f"{job['id']}.png"
    assert png.is_file() and client.get(done["links"]["image"]).status_code == 200
    url = f"/jobs/{job['id']}"
    assert client.delete(url).status_code == 401
    assert (
        client.delete(url, headers={"X-Delete-Token": job["delete_token"] + "x"}).status_code == 403
    )
    assert client.delete(url, params={"delete_token": "nope"}).status_code == 403
    assert client.get(url).status_code == 200  # still there after the refusals
    assert client.delete(url, headers={"X-Delete-Token": job["delete_token"]}).status_code == 204
    assert client.get(url).status_code == 404
    assert client.get(done["links"]["image"]).status_code == 404 and not png.exists()
    assert client.delete(url, headers={"X-Delete-Token": job["delete_token"]}).status_code == 404


INVALID = [
    ({"style": "watercolour"}, "style", "pixel art"),
    ({"iterations": "0"}, "iterations", "greater than or equal to 1"),
    ({"iterations": str(10**9)}, "iterations", "between 1 and"),
    ({"scale": "-1"}, "scale", "greater than 0"),
    ({"size": "5000x5000"}, "size", "at most"),
    ({"prompts": ""}, "prompts", ""),
    ({"quality": "ultra"}, "quality", "draft"),
    ({"email": "not-an-address"}, "email", "not a valid e-mail address"),
    ({"email": "a@b.org", "smtp_off": "1"}, "email", "no SMTP server"),
    ({"webhook_url": "ftp://example.org/hook"}, "webhook_url", "http:// or https://"),
    ({"webhook_url": "http://127.0.0.1:9/hook"}, "webhook_url", "private"),
    ({"public": "maybe"}, "public", ""),
]


@pytest.mark.parametrize(("fields", "field", "message"), INVALID, ids=[f for _, f, _ in INVALID])
def test_every_invalid_field_is_422_naming_it(
    tmp_path: Path, models: ModelCache, fields: dict[str, str], field: str, message: str
) -> None:
    smtp = (
        {}
        if fields.pop("smtp_off", None)
        else {"smtp_host": "127.0.0.1", "public_url": "https://art.example.org"}
    )
    with serving(jobs_config(tmp_path, run_worker_in_process=False, **smtp), models) as client:
        response = client.post("/jobs", data={**FORM, **fields})
        assert response.status_code == 422, response.text
        detail = response.json()["detail"][0]
        assert detail["loc"][-1] == field and message in detail["msg"]
        assert client.app.state.jobs.store.count("queued") == 0  # type: ignore[attr-defined]


def test_rate_limit_is_429_and_a_full_queue_is_503(tmp_path: Path, models: ModelCache) -> None:
    config = jobs_config(
        tmp_path, run_worker_in_process=False, max_queued=3, rate_limit=2, api_keys=["k1", "k2"]
    )
    with serving(config, models) as client:
        client.headers["Authorization"] = "Bearer k1"
        submit(client)
        submit(client)
        limited = client.post("/jobs", data=FORM)
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert "at most 2 jobs per 60 s" in limited.json()["detail"]
        assert client.post("/jobs", data=FORM, headers={"Authorization": ""}).status_code == 401
        other = {"Authorization": "Bearer k2"}  # another key is another client
        assert client.post("/jobs", data=FORM, headers=other).status_code == 202
        full = client.post("/jobs", data=FORM, headers=other)
        assert full.status_code == 503 and full.headers["retry-after"] == "60"
        assert "queue is full" in full.json()["detail"]
        jobs = client.app.state.jobs  # type: ignore[attr-defined]
        assert jobs.store.count("queued") == 3
        jobs.store.cancel_queued(jobs.store.ids("queued")[0])
        assert client.post("/jobs", data=FORM, headers=other).status_code == 202


def test_rate_limit_ignores_made_up_keys_when_keys_are_off(
    tmp_path: Path, models: ModelCache
) -> None:
    with serving(jobs_config(tmp_path, run_worker_in_process=False, rate_limit=1), models) as c:
        submit(c)
        again = c.post("/jobs", data=FORM, headers={"Authorization": "Bearer made-up"})
        assert again.status_code == 429


def test_an_unreachable_queue_is_503_and_records_nothing(
    tmp_path: Path, models: ModelCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serving(jobs_config(tmp_path, run_worker_in_process=False), models) as client:
        jobs = client.app.state.jobs  # type: ignore[attr-defined]

        def down(*args: object, **kwargs: object) -> None:
            raise ConnectionError("redis is down")

        monkeypatch.setattr(jobs.queue.huey.storage, "enqueue", down)  # the broker refuses
        response = client.post("/jobs", data=FORM)
        assert response.status_code == 503 and response.headers["retry-after"] == "5"
        body = response.json()
        assert body["error"] == "unavailable" and body["service"] == "queue"
        assert body["detail"] == "the job queue is unavailable; retry in 5 s"
        assert jobs.store.count("queued") == 0


def test_gallery_pages_public_succeeded_jobs_newest_first_without_email(
    tmp_path: Path, models: ModelCache
) -> None:
    # E-mail to a closed port: delivery fails, the jobs still succeed.
    config = jobs_config(tmp_path, smtp_host="127.0.0.1", smtp_port=9, smtp_security="none",
                         public_url="https://art.example.org")  # fmt: skip
    with serving(config.model_copy(update={"notify_attempts": 1}), models) as client:
        assert client.get("/info").json()["email_enabled"] is True
        ids = []
        for i, public in enumerate([True, True, False, True]):
            job = submit(client, iterations=2, seed=i, public=public, email="ada@example.org")
            ids.append(job["id"])
        for job_id in ids:
            wait_for(lambda job_id=job_id: job_state(client, job_id, "succeeded"))
        wait_for(
            lambda: job_state(client, ids[-1], "succeeded")["notifications"]["email"] != "pending"
        )
        assert client.get(f"/jobs/{ids[-1]}").json()["notifications"]["email"].startswith("failed")
        first = client.get("/gallery", params={"per_page": 2})
        second = client.get("/gallery", params={"page": 2, "per_page": 2})
        assert first.status_code == second.status_code == 200
        page1, page2 = first.json(), second.json()
        assert [item["id"] for item in page1["items"]] == [ids[3], ids[1]]
        assert [item["id"] for item in page2["items"]] == [ids[0]]
        assert page1["total"] == 3 and page1["pages"] == 2 and page2["page"] == 2
        item = page1["items"][0]
        assert item["prompt"] == "a castle" and item["style"] == "pixel art" and item["seed"] == 3
        assert item["quality"] == "draft" and item["aspect"] == "square"
        assert client.get(item["links"]["image"]).status_code == 200
        assert "ada@example.org" not in first.text + second.text and "email" not in first.text
        assert client.get("/gallery", params={"page": 3}).json()["items"] == []
        for params, field in [({"page": 0}, "page"), ({"per_page": 101}, "per_page")]:
            bad = client.get("/gallery", params=params)
            assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", field]
