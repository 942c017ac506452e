"""The HTTP service through TestClient: fields, validation, headers, outputs, keys, errors."""

from __future__ import annotations

import io
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from helpers import error_of, png_bytes, png_header_only
from PIL import Image

import api.runner as runner
from api.app import create_app
from api.config import ServiceConfig
from api.forms import WEIGHTS_HELP, describe
from api.gpu import GpuBusy, GpuLock
from engine import Cancelled, ModelCache, Result, Settings, resolve

# Tiny runs: 32x32 pixel art, 2 steps, the tiny random CLIP with 4 cutouts.
FAST = {"style": "pixel art", "size": "32x32", "iterations": "2", "seed": "1"}
CARD_FIELDS = [
    "seed", "iterations", "prompts", "quality", "aspect", "scale", "style", "make_video",
    "size", "init_image", "image_prompts", "variations",
    # an animation's (issue 28)
    "frames", "frame_iterations", "zoom", "angle", "translate_x", "translate_y", "fps",
    # the creative controls (issue 29)
    "optimiser", "learning_rate", "symmetry", "symmetry_weight", "tile", "init_noise",
    "augments", "cut_power", "save_every", "stroke_width", "pixel_shape",
]  # fmt: skip
FORM_ONLY = {"image_prompt_weights": WEIGHTS_HELP}  # the form's own fields beside the card's


def tiny_config(tmp_path: Path, **overrides: Any) -> ServiceConfig:
    """The service on tiny offline models, no start-up warm-up, small upload limits."""
    values: dict[str, Any] = {
        "clip_models": ["tiny-random"],
        "vqgan_model": "tiny-random",
        "cutouts": 4,
        "device": "cpu",
        "output_dir": tmp_path / "outputs",
        "preload": False,
        "max_upload_bytes": 50_000,
        "max_upload_pixels": 256 * 256,
        "rate_limit": 0,  # the module's client makes many calls
    }
    values.update(overrides)
    return ServiceConfig(**values)


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("api")


@pytest.fixture(scope="module")
def client(out_dir: Path, models: ModelCache) -> Iterator[TestClient]:
    models.clip("tiny-random", torch.device("cpu"))  # built once, outside the timings
    with TestClient(create_app(tiny_config(out_dir), models=models)) as c:
        yield c


# -- the card's endpoint ---------------------------------------------------------------------


def test_generate_returns_png_with_headers_and_kept_outputs(client: TestClient) -> None:
    r = client.post("/generate", data={**FAST, "prompts": "underwater city"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    job_id = r.headers["x-job-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", job_id)
    assert r.headers["x-seed"] == "1"
    settings = json.loads(r.headers["x-settings"])
    assert settings["seed"] == 1 and settings["style"] == "pixel art"
    assert settings["clip_models"] == ["tiny-random"] and settings["cutouts"] == 4
    with Image.open(io.BytesIO(r.content)) as img:
        assert img.size == tuple(settings["size"]) == (32, 32)
        assert img.text["prompt"] == "underwater city" and img.text["seed"] == "1"
    url = r.headers["x-image-url"]
    assert url == f"/outputs/{job_id}.png"  # relative: T2A_PUBLIC_URL is unset
    assert r.headers["link"] == f'<{url}>; rel="alternate"; type="image/png"'
    assert "x-video-url" not in r.headers and "x-svg-url" not in r.headers
    kept = client.get(url)
    assert kept.status_code == 200 and kept.headers["content-type"] == "image/png"
    assert kept.content == r.content


def test_size_resolved_from_aspect_and_scale(client: TestClient) -> None:
    data = {**FAST, "aspect": "widescreen", "scale": "0.25"}
    del data["size"]
    r = client.post("/generate", data=data)
    assert r.status_code == 200, r.text
    size = tuple(json.loads(r.headers["x-settings"])["size"])
    assert size[0] <= 40 and size[1] <= 22 and size[0] > size[1]  # 160x90 * 0.25, trimmed
    with Image.open(io.BytesIO(r.content)) as img:
        assert img.size == size


def test_multipart_equals_urlencoded_and_style_is_any_case(client: TestClient) -> None:
    urlencoded = client.post("/generate", data={**FAST, "style": "Pixel Art"})
    multipart = client.post("/generate", data=FAST, files={"unused": ("x.txt", b"x")})
    assert urlencoded.status_code == multipart.status_code == 200
    assert json.loads(urlencoded.headers["x-settings"])["style"] == "pixel art"
    assert urlencoded.content == multipart.content


def test_defaults_of_the_card(client: TestClient) -> None:
    r = client.post("/generate", data={"style": "pixel art", "size": "32x32", "iterations": "1"})
    s = json.loads(r.headers["x-settings"])
    assert r.status_code == 200
    assert (s["prompts"], s["quality"], s["aspect"], s["scale"]) == (
        "Underwater City", "draft", "square", 2.5,
    )  # fmt: skip
    assert s["make_video"] is False and int(r.headers["x-seed"]) == s["seed"]


def test_uploads_are_saved_and_shown_relative(client: TestClient, out_dir: Path) -> None:
    files = [
        ("init_image", ("init.png", png_bytes(), "image/png")),
        ("image_prompts", ("a.png", png_bytes(colour="blue"), "image/png")),
        ("image_prompts", ("b.png", png_bytes(colour="green"), "image/png")),
    ]
    r = client.post("/generate", data=FAST, files=files)
    assert r.status_code == 200, r.text
    job_id, s = r.headers["x-job-id"], json.loads(r.headers["x-settings"])
    assert s["init_image"] == f"uploads/{job_id}/init.png"
    assert s["image_prompts"] == [
        f"uploads/{job_id}/prompt-0.png",
        f"uploads/{job_id}/prompt-1.png",
    ]
    assert (out_dir / "outputs" / s["init_image"]).read_bytes() == png_bytes()


# -- every invalid field: 422 naming it and what is allowed -----------------------------------

BAD_FIELDS = [
    ({"style": "watercolour"}, "style", "unknown style 'watercolour'; choose one of"),
    ({"iterations": "0"}, "iterations", "greater than or equal to 1"),
    ({"iterations": str(10**9)}, "iterations", "must be between 1 and 5000"),
    ({"iterations": "many"}, "iterations", "valid integer"),
    ({"scale": "0"}, "scale", "greater than 0"),
    ({"scale": "-1"}, "scale", "greater than 0"),
    ({"scale": "100", "size": ""}, "scale", "must be at most 8"),
    ({"size": "5000x5000"}, "size", "at most 1048576 are allowed"),
    ({"size": "huge"}, "size", "expected WIDTHxHEIGHT"),
    ({"prompts": ""}, "prompts", "the prompt is empty"),
    ({"prompts": "   "}, "prompts", "the prompt is empty"),
    ({"prompts": "x" * 1001}, "prompts", "at most 1000"),
    ({"prompts": "|".join("abcdefghi")}, "prompts", "9 prompts given; at most 8"),
    ({"quality": "ultra"}, "quality", "choose one of draft, normal, better, best"),
    ({"aspect": "round"}, "aspect", "choose one of widescreen, portrait, square"),
    ({"seed": "-1"}, "seed", "greater than or equal to 0"),
    ({"seed": "abc"}, "seed", "valid integer"),
    ({"make_video": "maybe"}, "make_video", "valid boolean"),
]


@pytest.mark.parametrize(("fields", "field", "message"), BAD_FIELDS)
def test_invalid_field_is_422_naming_it(
    client: TestClient, fields: dict[str, str], field: str, message: str
) -> None:
    named, msg = error_of(client.post("/generate", data={**FAST, **fields}))
    assert named == field and message in msg, msg


BAD_UPLOADS = [
    ("init_image", b"this is not an image", "not an image that can be read"),
    ("init_image", b"", "the file is empty"),
    ("init_image", b"\x89PNG" + b"0" * 60_000, "over the upload limit of 50000 bytes"),
    ("image_prompts", png_header_only(20_000, 20_000), "decompression bomb"),
    ("image_prompts", png_bytes()[:50], "not an image that can be read"),  # cut in its data
]


@pytest.mark.parametrize(("field", "content", "message"), BAD_UPLOADS)
def test_invalid_upload_is_422_naming_it(
    client: TestClient, out_dir: Path, field: str, content: bytes, message: str
) -> None:
    files = {field: ("upload.png", content, "image/png")}
    named, msg = error_of(client.post("/generate", data=FAST, files=files))
    assert named == field and message in msg, msg
    assert not list((out_dir / "outputs" / "uploads").glob("*/upload*"))  # nothing left behind


def test_too_many_image_prompts(client: TestClient) -> None:
    files = [("image_prompts", (f"{i}.png", png_bytes(), "image/png")) for i in range(9)]
    field, msg = error_of(client.post("/generate", data=FAST, files=files))
    assert field == "image_prompts" and "9 images given; at most 8" in msg


# -- outputs, links, documentation ------------------------------------------------------------


def fake_generate(svg: str | None, video: bytes | None) -> Any:
    """A stand-in for engine.generate that returns an SVG and writes an MP4."""

    def run(settings: Settings, *, video_path: Path | None = None, **_: Any) -> Result:
        s = resolve(settings)
        if video is not None and video_path is not None:
            Path(video_path).write_bytes(video)
        image = Image.new("RGB", s.size or (8, 8), "white")
        path = Path(video_path) if video is not None and video_path else None
        return Result(image, s, [1.0], 0.0, svg=svg, video_path=path)

    return run


def test_svg_and_video_are_linked_and_served(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    svg = '<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32"/>'
    monkeypatch.setattr(runner, "generate", fake_generate(svg, b"fake mp4"))
    r = client.post("/generate", data={**FAST, "make_video": "true"})
    assert r.status_code == 200, r.text
    job = r.headers["x-job-id"]
    assert r.headers["x-svg-url"].endswith(f"/outputs/{job}.svg")
    assert r.headers["x-video-url"].endswith(f"/outputs/{job}.mp4")
    assert 'type="image/svg+xml"' in r.headers["link"] and 'type="video/mp4"' in r.headers["link"]
    got_svg = client.get(r.headers["x-svg-url"])
    assert got_svg.text == svg and got_svg.headers["content-type"].startswith("image/svg+xml")
    assert "default-src 'none'" in got_svg.headers["content-security-policy"]
    got_mp4 = client.get(r.headers["x-video-url"])
    assert got_mp4.content == b"fake mp4" and got_mp4.headers["content-type"] == "video/mp4"


def test_make_video_keeps_and_links_a_real_mp4(client: TestClient) -> None:
    video = pytest.importorskip("engine.video")
    if video.h264_encoder() is None:
        pytest.skip("no H.264 encoder in this PyAV build")
    r = client.post("/generate", data={**FAST, "iterations": "3", "make_video": "true"})
    assert r.status_code == 200, r.text[:300]
    got = client.get(r.headers["x-video-url"])
    assert got.status_code == 200 and got.headers["content-type"] == "video/mp4"
    assert got.content[4:8] == b"ftyp"  # an MP4 container


@pytest.mark.parametrize(
    "path", ["/outputs/nothere.png", f"/outputs/{'0' * 32}.png", f"/outputs/{'0' * 32}.exe"]
)
def test_unknown_outputs_are_404(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404 and "output" in r.json()["detail"]


def test_root_is_the_web_page_and_every_field_is_documented(client: TestClient) -> None:
    r = client.get("/", follow_redirects=False)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "<form" in r.text
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/generate"]["post"]["requestBody"]
    ref = body["content"]["multipart/form-data"]["schema"]["$ref"].split("/")[-1]
    props = spec["components"]["schemas"][ref]["properties"]
    assert sorted(props) == sorted([*CARD_FIELDS, *FORM_ONLY])
    for name, prop in props.items():
        if name in FORM_ONLY:
            assert prop["description"] == FORM_ONLY[name] and prop.get("examples"), name
            continue
        assert prop["description"].startswith(describe(name)) and describe(name), name
        if name not in ("init_image", "image_prompts"):
            assert prop.get("examples"), name
    assert props["scale"]["default"] == 2.5 and props["prompts"]["default"] == "Underwater City"
    assert spec["paths"]["/generate"]["post"]["summary"]


def test_info_health_and_ready(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    client.post("/generate", data=FAST)
    info = client.get("/info").json()
    assert info["name"] == "text2art" and "pixel art" in info["styles"]
    # As this server runs the default style: 150x150 x 2.5, trimmed to the tiny VQGAN's f=4.
    assert info["aspects"]["square"] == {"base_size": [150, 150], "default_size": [372, 372]}
    assert info["qualities"]["draft"] == {"clip_models": ["tiny-random"], "iterations": 200}
    assert info["default_scale"] == 2.5 and info["readiness"] == {"state": "ready", "error": None}
    assert info["prompt_hints"]["example"] == "an underwater city with glowing jellyfish"
    assert "clip:tiny-random@cpu" in info["models_loaded"]
    assert info["overrides"]["clip_models"] == ["tiny-random"]
    assert info["links"]["docs"] == "/docs"
    assert info["upload"] == {"max_bytes": 50_000, "max_pixels": 256 * 256}
    assert info["email_enabled"] is False  # no SMTP server configured


def test_cors_any_origin_without_credentials(client: TestClient) -> None:
    headers = {"Origin": "https://example.org", "Access-Control-Request-Method": "POST"}
    headers["Access-Control-Request-Headers"] = "authorization"
    pre = client.options("/generate", headers=headers)
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] == "*"
    assert pre.headers["access-control-allow-headers"] == "authorization"
    assert "access-control-allow-credentials" not in pre.headers
    r = client.post("/generate", data=FAST, headers={"Origin": "https://example.org"})
    exposed = r.headers["access-control-expose-headers"]
    assert all(h in exposed for h in ("X-Seed", "X-Settings", "X-Image-Url", "X-Job-Id"))


def test_cors_origins_from_config(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, cors_origins=["https://art.example"])
    with TestClient(create_app(config)) as c:
        ok = c.get("/healthz", headers={"Origin": "https://art.example"})
        other = c.get("/healthz", headers={"Origin": "https://evil.example"})
    assert ok.headers["access-control-allow-origin"] == "https://art.example"
    assert "access-control-allow-origin" not in other.headers


# -- API keys, backpressure, engine failures -------------------------------------------------


def test_api_keys(tmp_path: Path, models: ModelCache) -> None:
    config = tiny_config(tmp_path, api_keys=["key-one", "key-two"])
    with TestClient(create_app(config, models=models)) as c:
        missing = c.post("/generate", data=FAST)
        wrong = c.post("/generate", data=FAST, headers={"Authorization": "Bearer key-three"})
        right = c.post("/generate", data=FAST, headers={"Authorization": "Bearer key-two"})
        assert c.get("/healthz").status_code == 200 and c.get("/info").status_code == 200
        assert c.get(right.headers["x-image-url"]).status_code == 200  # capability URL
    for r in (missing, wrong):
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert "API key" in r.json()["detail"]
    assert right.status_code == 200 and right.headers["content-type"] == "image/png"


def test_busy_gpu_gives_503_with_retry_after(tmp_path: Path, models: ModelCache) -> None:
    config = tiny_config(tmp_path, max_waiting=0, retry_after=7)
    with TestClient(create_app(config, models=models)) as c:
        gpu: GpuLock = c.app.state.gpu  # type: ignore[attr-defined]
        with gpu.slot():  # another run holds the GPU and nobody may wait
            busy = c.post("/generate", data=FAST)
            ready = c.get("/readyz")
        after = c.post("/generate", data=FAST)
    assert busy.status_code == 503 and busy.headers["retry-after"] == "7"
    assert busy.json()["error"] == "busy"
    # a busy node stays ready (a load balancer must not drop it for working); it says so
    assert ready.status_code == 200 and ready.json()["busy"] is True
    assert ready.json()["full"] is True
    assert after.status_code == 200


def test_out_of_memory_is_json_500_frees_memory_and_service_goes_on(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    freed: list[bool] = []

    def oom(*args: Any, **kwargs: Any) -> Result:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(runner, "generate", oom)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: freed.append(True))
    r = client.post("/generate", data=FAST)
    assert r.status_code == 500 and r.json()["error"] == "out_of_memory"
    assert "smaller size" in r.json()["detail"] and freed == [True]
    monkeypatch.undo()
    assert client.post("/generate", data=FAST).status_code == 200


def test_engine_error_is_json_500_with_its_first_line(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Result:
        raise RuntimeError("weights for ViT-B/32 are not cached\nrun text2art models download")

    monkeypatch.setattr(runner, "generate", broken)
    r = client.post("/generate", data=FAST)
    assert r.status_code == 500
    assert r.json() == {
        "error": "engine_error",
        "detail": "generation failed: weights for ViT-B/32 are not cached",
    }
    assert client.app.state.gpu.busy is False  # type: ignore[attr-defined]


def test_preload_warms_up_and_readyz_reports_failures(tmp_path: Path) -> None:
    good = tiny_config(tmp_path, preload=True)
    with TestClient(create_app(good)) as c:
        _wait_until(lambda: c.get("/readyz").json()["state"] != "starting")
        assert c.get("/readyz").status_code == 200
        assert "clip:tiny-random@cpu" in c.get("/info").json()["models_loaded"]
    bad = tiny_config(tmp_path, preload=True, clip_models=["no-such-model"])
    with TestClient(create_app(bad)) as c:
        _wait_until(lambda: c.get("/readyz").json()["state"] != "starting")
        r = c.get("/readyz")
    assert r.status_code == 503 and r.json()["state"] == "failed"
    assert "unknown CLIP model 'no-such-model'" in r.json()["error"]


def _wait_until(condition: Any, timeout: float = 20.0) -> None:
    done = threading.Event()
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        done.wait(0.05)
    raise AssertionError("condition not met in time")


# -- the GPU lock and the configuration ------------------------------------------------------


def test_gpu_lock_is_first_come_first_served_and_cancellable() -> None:
    gpu, order = GpuLock(max_waiting=2, poll_seconds=0.01), []
    cancel = threading.Event()

    def job(name: str, event: threading.Event | None = None) -> None:
        try:
            with gpu.slot(event):
                order.append(name)
        except Cancelled:
            order.append(f"{name} cancelled")

    with gpu.slot():
        threads = [threading.Thread(target=job, args=("a",))]
        threads[0].start()
        _wait_until(lambda: gpu.waiting == 1)
        threads.append(threading.Thread(target=job, args=("b", cancel)))
        threads[1].start()
        _wait_until(lambda: gpu.waiting == 2)
        with pytest.raises(GpuBusy):
            gpu.slot().__enter__()
        cancel.set()
        _wait_until(lambda: gpu.waiting == 1)
    for t in threads:
        t.join(5)
    assert order == ["b cancelled", "a"] and not gpu.busy and gpu.waiting == 0


def test_config_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T2A_CLIP_MODELS", "tiny-random, ViT-B/32")
    monkeypatch.setenv("T2A_API_KEYS", "k1,k2")
    monkeypatch.setenv("T2A_CORS_ORIGINS", "https://a.example,https://b.example")
    monkeypatch.setenv("T2A_MAX_PIXELS", "4096")
    monkeypatch.setenv("T2A_VQGAN_MODEL", "tiny-random")
    config = ServiceConfig()
    assert config.clip_models == ["tiny-random", "ViT-B/32"] and config.api_keys == ["k1", "k2"]
    assert config.cors_origins == ["https://a.example", "https://b.example"]
    assert config.limits().max_pixels == 4096 and config.vqgan_model == "tiny-random"
    assert "k1" not in repr(config)
    monkeypatch.setenv("T2A_MAX_WAITING", "-1")
    with pytest.raises(ValueError, match="max_waiting"):
        ServiceConfig()


def test_the_api_description_shows_this_servers_address(tmp_path: Path, models: ModelCache) -> None:
    """The configured address (or T2A_PUBLIC_URL), never a hard-coded port nor the Host header."""
    from api.app import create_app

    for overrides, address in [
        ({"port": 9123}, "http://127.0.0.1:9123"),
        ({"host": "0.0.0.0", "port": 8080}, "http://127.0.0.1:8080"),
        ({"public_url": "https://art.example.org"}, "https://art.example.org"),
    ]:
        config = ServiceConfig(output_dir=tmp_path, preload=False, **overrides)
        with TestClient(create_app(config, models=models)) as client:
            answer = client.get("/openapi.json", headers={"Host": "evil.example:666"})
            description = answer.json()["info"]["description"]
        assert f"{address}/generate -o a.png" in description, overrides
        assert "evil.example" not in description


def test_redoc_loads_nothing_from_a_cdn(client: TestClient) -> None:
    page = client.get("/redoc").text
    bundle = client.get("/docs-assets/redoc.standalone.js")
    assert "/docs-assets/redoc.standalone.js" in page and "https://" not in page.split("<body>")[1]
    assert bundle.status_code == 200 and bundle.headers["content-type"].startswith(
        "text/javascript"
    )
    assert "cdn.redoc.ly" not in bundle.text and "createElement" in bundle.text
