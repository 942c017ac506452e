"""Variations in the service: `/generate` answers with the contact sheet and links each picture,
a job keeps and links every picture with its seed, the gallery lists them, the e-mail attaches
them, the server's limit is a 422 naming the field, and each picture reproduces alone."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from helpers import (
    FORM,
    Inbox,
    job_state,
    jobs_config,
    serving,
    smtp_config,
    smtp_server,
    submit,
    wait_for,
)
from PIL import Image

from engine import ModelCache

SHEET_2X2 = (32 * 2 + 4, 32 * 2 + 4)  # 32x32 pictures, 4 pixels of gap


def png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def stored_settings(image: Image.Image) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(image.text["text2art:settings"])  # type: ignore[attr-defined]
    return data


def test_generate_answers_the_sheet_and_links_each_picture_with_its_seed(
    client: TestClient,
) -> None:
    web = {"Origin": "https://art.example"}  # a web page on another origin reads the links
    answer = client.post("/generate", data={**FORM, "seed": "5", "variations": "3"}, headers=web)
    assert answer.status_code == 200, answer.text
    exposed = answer.headers["access-control-expose-headers"]
    assert "X-Variation-Urls" in exposed and "X-Variation-Seeds" in exposed
    sheet = png(answer.content)
    assert sheet.size == SHEET_2X2 and stored_settings(sheet)["variations"] == 3
    job_id = answer.headers["x-job-id"]
    assert answer.headers["x-seed"] == "5"
    assert json.loads(answer.headers["x-settings"])["variations"] == 3
    assert answer.headers["x-variation-seeds"] == "5, 6, 7"
    urls = answer.headers["x-variation-urls"].split(", ")
    assert urls == [f"/outputs/{job_id}-{k}.png" for k in (1, 2, 3)]
    link = answer.headers["link"]
    assert f'</outputs/{job_id}.png>; rel="alternate"' in link
    for k, seed in ((1, 5), (2, 6), (3, 7)):
        assert f'<{urls[k - 1]}>; rel="item"; type="image/png"; title="seed {seed}"' in link
        picture = png(client.get(urls[k - 1]).content)
        assert picture.size == (32, 32)
        solo = stored_settings(picture)
        assert (solo["seed"], solo["variations"]) == (seed, 1)
        # the sheet holds the picture in its cell of the grid
        x, y = (k - 1) % 2 * 36, (k - 1) // 2 * 36
        assert sheet.crop((x, y, x + 32, y + 32)).tobytes() == picture.convert("RGB").tobytes()
    assert client.get(f"/outputs/{job_id}-4.png").status_code == 404  # only three were made
    plain = client.post("/generate", data={**FORM, "seed": "5"})
    assert "x-variation-urls" not in plain.headers and 'rel="item"' not in plain.headers["link"]


def test_a_picture_of_the_batch_is_its_solo_run_through_the_api(client: TestClient) -> None:
    batch = client.post("/generate", data={**FORM, "seed": "11", "variations": "2"})
    second = client.get(batch.headers["x-variation-urls"].split(", ")[1])
    solo = client.post("/generate", data={**FORM, "seed": "12"})
    assert solo.status_code == 200 and second.status_code == 200
    assert png(second.content).tobytes() == png(solo.content).tobytes()  # the same pixels
    again = stored_settings(png(second.content))  # `--from` this PNG makes this picture
    assert again == stored_settings(png(solo.content))


def test_a_job_keeps_links_and_deletes_every_picture(client: TestClient, tmp_path: Path) -> None:
    created = submit(client, seed=40, variations=2, public="true")
    job_id = created["id"]
    job = wait_for(lambda: job_state(client, job_id, "succeeded"))
    assert job["settings"]["variations"] == 2 and job["settings"]["seed"] == 40
    base = ""  # links are relative without T2A_PUBLIC_URL
    assert job["links"]["image"] == f"{base}/outputs/{job_id}.png"
    assert job["links"]["variations"] == [
        {"index": 1, "seed": 40, "image": f"{base}/outputs/{job_id}-1.png", "svg": None},
        {"index": 2, "seed": 41, "image": f"{base}/outputs/{job_id}-2.png", "svg": None},
    ]
    assert png(client.get(job["links"]["image"]).content).size == (68, 32)  # side by side
    for picture in job["links"]["variations"]:
        image = png(client.get(picture["image"]).content)
        assert stored_settings(image)["seed"] == picture["seed"]
    preview = client.get(job["links"]["preview"])  # once done: the sheet
    assert preview.content == client.get(job["links"]["image"]).content
    item = client.get("/gallery").json()["items"][0]
    assert item["id"] == job_id and item["variations"] == job["links"]["variations"]
    one = submit(client, seed=1)
    done = wait_for(lambda: job_state(client, one["id"], "succeeded"))
    assert done["links"]["variations"] == []
    token = {"X-Delete-Token": created["delete_token"]}
    assert client.delete(f"/jobs/{job_id}", headers=token).status_code == 204
    assert not list(tmp_path.glob(f"{job_id}*"))
    assert client.get(f"/outputs/{job_id}-1.png").status_code == 404


def test_variations_beyond_the_server_limit_are_422_naming_the_field(
    tmp_path: Path, models: ModelCache
) -> None:
    with serving(jobs_config(tmp_path, max_variations=2), models) as client:
        assert client.get("/info").json()["limits"]["max_variations"] == 2
        for path in ("/generate", "/jobs"):
            answer = client.post(path, data={**FORM, "variations": "3"})
            assert answer.status_code == 422, answer.text
            error = answer.json()["detail"][0]
            assert error["loc"][-1] == "variations"
            assert "between 1 and 2, got 3" in error["msg"]
            five = client.post(path, data={**FORM, "variations": "5"})
            assert five.status_code == 422 and five.json()["detail"][0]["loc"][-1] == "variations"
            assert five.json()["detail"][0]["msg"].endswith("between 1 and 2, got 5")
        assert not list(tmp_path.glob("*.png"))  # nothing ran


def test_the_email_attaches_each_picture_and_links_them(tmp_path: Path, models: ModelCache) -> None:
    inbox = Inbox()
    with (
        smtp_server(inbox, smtputf8=False) as port,
        serving(smtp_config(tmp_path, port), models) as client,
    ):
        job = submit(client, seed=8, variations=3, email="ada@example.org")
        wait_for(
            lambda: client.get(f"/jobs/{job['id']}").json()["notifications"]["email"] == "sent"
        )
    msg = inbox.message()
    job_id = job["id"]
    names = [part.get_filename() for part in msg.iter_attachments()]
    assert names == [f"{job_id}-{k}.png" for k in (1, 2, 3)]  # the pictures, not the sheet
    for part, seed in zip(msg.iter_attachments(), (8, 9, 10), strict=True):
        assert part.get_content_type() == "image/png"
        assert stored_settings(png(part.get_content()))["seed"] == seed
    body = msg.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    base = "https://art.example.org"
    assert f"Image: {base}/outputs/{job_id}.png" in text
    for k, seed in ((1, 8), (2, 9), (3, 10)):
        assert f"Picture {k} (seed {seed}): {base}/outputs/{job_id}-{k}.png" in text
