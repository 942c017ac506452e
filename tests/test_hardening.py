"""Issue 20 through the app (TestClient): wide images, gallery bounds, webhook URLs, prompt
numbers, strict JSON in events, malformed bodies and rate-limit buckets."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from helpers import error_of, jobs_config, parse_sse, png_bytes, serving
from PIL import Image

from api.cli import main
from api.jobs.events import sse
from api.jobs.notify import PermanentError, check_public_host
from api.jobs.store import FAILED
from engine import ModelCache

FAST = {"style": "pixel art", "size": "32x32", "iterations": "1", "seed": "1"}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, models: ModelCache) -> Iterator[TestClient]:
    """Jobs stay queued (paused worker); uploads up to 4096x4096 pixels, as by default."""
    out = tmp_path_factory.mktemp("hardening")
    config = jobs_config(out, max_upload_bytes=1_000_000)
    with serving(config, models, paused=True) as c:
        yield c


def strict_json(text: str) -> Any:
    """json.loads that refuses Infinity and NaN, as every JSON parser but Python's does."""

    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


# -- 1. a tiny, very wide image ---------------------------------------------------------------
def test_a_16777216x1_image_prompt_and_init_image_generate(client: TestClient) -> None:
    """Within the 4096x4096 pixel limit; once a 206 GB allocation (500)."""
    png = png_bytes(size=(16_777_216, 1))
    files = [("image_prompts", ("w.png", png, "image/png")), ("init_image", ("w.png", png))]
    r = client.post("/generate", data=FAST | {"prompts": "a cat"}, files=files)
    assert r.status_code == 200, r.text[:300]
    assert Image.open(io.BytesIO(r.content)).size == (32, 32)


# -- 4. gallery bounds ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "query, field",
    [("page=461168601842738792", "page"), ("page=1000001", "page"), ("per_page=101", "per_page")],
)
def test_gallery_page_out_of_range_is_422(client: TestClient, query: str, field: str) -> None:
    r = client.get(f"/gallery?{query}")
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["query", field]


def test_last_allowed_gallery_page_is_empty(client: TestClient) -> None:
    r = client.get("/gallery?page=1000000&per_page=100")
    assert r.status_code == 200 and r.json()["items"] == []


# -- 5. webhook URLs --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "http://[::1/",
        "http://[evil.com]/",
        "http://a:b:c/",
        "http://[::127.0.0.1]:8080/",  # IPv4-compatible IPv6
        "http://[::ffff:127.0.0.1]/",  # IPv4-mapped
        "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
        "http://[fe80::1]/",
        "http://127.1/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0177.0.0.1/",
        "http://0/",
        "http://10.0.0.1/",
        "http://169.254.169.254/latest/meta-data",
        "http://localhost./",
        "http://app.localhost/",
        "http://intranet/",
        "ftp://example.org/",
    ],
)
def test_malformed_or_non_public_webhook_url_is_422(client: TestClient, url: str) -> None:
    r = client.post("/jobs", data=FAST | {"prompts": "a cat", "webhook_url": url})
    field, _ = error_of(r)
    assert field == "webhook_url"


def test_public_webhook_url_is_accepted(client: TestClient) -> None:
    for url in ("https://example.org/hook", "http://8.8.8.8/x", "http://[2001:4860::8888]/"):
        r = client.post("/jobs", data=FAST | {"prompts": "a cat", "webhook_url": url})
        assert r.status_code == 202, (url, r.text)


@pytest.mark.parametrize("url", ["http://[::127.0.0.1]:9/", "http://[::ffff:10.1.2.3]/"])
def test_delivery_refuses_embedded_private_ipv4(url: str) -> None:
    with pytest.raises(PermanentError, match="non-public address"):
        check_public_host(url)


# -- 6. prompt numbers and strict JSON --------------------------------------------------------
@pytest.mark.parametrize("prompts", ["a:1e400", "a:-1e400", "a:1e308", "a:1:1e999", "a:nan"])
@pytest.mark.parametrize("path", ["/generate", "/jobs"])
def test_overflowing_prompt_weights_are_422(client: TestClient, path: str, prompts: str) -> None:
    r = client.post(path, data=FAST | {"prompts": prompts})
    if prompts == "a:nan":  # not a number: the whole text is the prompt
        assert r.status_code in (200, 202)
        return
    field, message = error_of(r)
    assert field == "prompts" and "between" in message


def test_cli_refuses_an_overflowing_weight(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["generate", "a:1e400", "--style", "pixel art", "--clip-model", "tiny-random"])
    assert exc.value.code == 2
    assert (
        "error: prompts: a prompt's weight must be between -1000 and 1000"
        in capsys.readouterr().err
    )


def test_events_never_carry_a_non_finite_number(client: TestClient) -> None:
    job_id = client.post("/jobs", data=FAST | {"prompts": "a cat"}).json()["id"]
    store = client.app.state.jobs.store  # type: ignore[attr-defined]
    store.set_fields(
        job_id, status=FAILED, iteration=1, total=4, loss=float("inf"), finished_at=time.time()
    )
    r = client.get(f"/jobs/{job_id}/events")
    events = parse_sse(r.text)
    progress = [e for e in events if e["event"] == "progress"]
    assert progress and progress[0]["data"]["loss"] is None
    for block in r.text.split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: "):
                strict_json(line.removeprefix("data: "))
    strict_json(client.get(f"/jobs/{job_id}").text)


def test_sse_refuses_to_write_a_non_finite_number() -> None:
    with pytest.raises(ValueError):
        sse("progress", {"loss": float("inf")})


# -- 8. malformed bodies ----------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/generate", "/jobs"])
def test_malformed_multipart_is_a_documented_400(client: TestClient, path: str) -> None:
    headers = {"Content-Type": "multipart/form-data; boundary=zz"}
    r = client.post(
        path, content=b"--zz\r\nContent-Disposition: form-data\r\n\r\nx", headers=headers
    )
    assert r.status_code == 400 and "detail" in r.json()
    documented = client.get("/openapi.json").json()["paths"][path]["post"]["responses"]
    assert {"400", "413"} <= set(documented)


# -- 3. rate limit buckets --------------------------------------------------------------------
def test_rate_limit_counts_the_key_however_the_header_is_spelled(
    tmp_path: Path, models: ModelCache
) -> None:
    config = jobs_config(tmp_path, api_keys=["k1", "k2"], rate_limit=2, run_worker_in_process=False)
    spellings = ["Bearer k1", "bearer k1", "BEARER k1", "Bearer  k1", "Bearer k1 "]
    with serving(config, models) as c:
        codes = [
            c.post("/jobs", data=FAST | {"prompts": "a"}, headers={"Authorization": s}).status_code
            for s in spellings
        ]
        other = c.post(
            "/jobs", data=FAST | {"prompts": "a"}, headers={"Authorization": "Bearer k2"}
        )
        wrong = c.post(
            "/jobs", data=FAST | {"prompts": "a"}, headers={"Authorization": "Bearer k3"}
        )
    assert codes == [202, 202, 429, 429, 429]
    assert other.status_code == 202 and wrong.status_code == 401
