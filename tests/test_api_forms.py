"""`api.forms`: one list of fields makes the form, its OpenAPI schema, and what is passed on."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from helpers import png_bytes
from PIL import Image

from api.app import create_app
from api.config import ServiceConfig
from api.forms import (
    CARD_DEFAULTS,
    FORM_FIELDS,
    UPLOADS,
    WEIGHTS_FIELD,
    GenerateForm,
    GenerateFormDep,
    build_settings,
    describe,
)
from engine import ModelCache, Settings

JOB_EXTRAS = {"email", "public", "webhook_url"}


def form_schema(spec: dict[str, Any], path: str) -> dict[str, Any]:
    """The properties of the multipart form of `POST path`."""
    body = spec["paths"][path]["post"]["requestBody"]["content"]
    ref = body["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[-1]
    props: dict[str, Any] = spec["components"]["schemas"][ref]["properties"]
    return props


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("forms")
    config = ServiceConfig(output_dir=out, preload=False, run_worker_in_process=False)
    with TestClient(create_app(config)) as client:
        schema: dict[str, Any] = client.get("/openapi.json").json()
    return schema


def test_every_field_is_a_settings_field() -> None:
    assert set(FORM_FIELDS) <= set(Settings.model_fields) and set(UPLOADS) <= set(FORM_FIELDS)


@pytest.mark.parametrize(("path", "extra"), [("/generate", set()), ("/jobs", JOB_EXTRAS)])
def test_openapi_form_lists_every_field_with_its_description(
    spec: dict[str, Any], path: str, extra: set[str]
) -> None:
    props = form_schema(spec, path)
    assert set(props) == set(FORM_FIELDS) | extra | {WEIGHTS_FIELD}  # the uploads' weights
    for name in FORM_FIELDS:
        # the description, then this server's limits (api.openapi)
        assert props[name]["description"].startswith(describe(name)) and describe(name), name
    assert props["scale"]["default"] == CARD_DEFAULTS["scale"]
    assert props["quality"]["default"] == Settings.model_fields["quality"].default
    file = {"contentMediaType": "image/*", "type": "string"}
    assert {k: props["init_image"][k] for k in file} == file  # uploads are files, never null
    assert props["image_prompts"]["items"] == file and props["image_prompts"]["type"] == "array"


def echo_app() -> FastAPI:
    """An app whose one route returns what the form dependency collected."""
    app = FastAPI()

    @app.post("/echo")
    async def echo(form: GenerateFormDep) -> dict[str, Any]:
        init = form.init_image.filename if form.init_image else None
        return {
            "given": form.given,
            "init_image": init,
            "image_prompts": [f.filename for f in form.image_prompts],
        }

    return app


ONLY_SENT = [
    ({}, {}),
    ({"style": "pixel art", "seed": "3"}, {"style": "pixel art", "seed": 3}),
    ({"scale": "1.5", "make_video": "true"}, {"scale": 1.5, "make_video": True}),
    ({"size": "", "seed": "", "quality": ""}, {}),  # an empty field is not a value
    ({"prompts": ""}, {"prompts": ""}),  # but an empty prompt is an error to report
]


@pytest.mark.parametrize(("data", "given"), ONLY_SENT)
def test_only_the_fields_the_client_sent_are_passed_on(
    data: dict[str, str], given: dict[str, Any]
) -> None:
    with TestClient(echo_app()) as client:
        urlencoded = client.post("/echo", data=data).json()
        multipart = client.post("/echo", data=data, files={"unused": ("x.txt", b"x")}).json()
    assert urlencoded["given"] == multipart["given"] == given


def test_uploads_are_collected_apart_from_the_values() -> None:
    files = [
        ("init_image", ("init.png", png_bytes(size=(8, 8)), "image/png")),
        ("image_prompts", ("a.png", png_bytes(size=(8, 8)), "image/png")),
        ("image_prompts", ("b.png", png_bytes(size=(8, 8)), "image/png")),
    ]
    with TestClient(echo_app()) as client:
        body = client.post("/echo", data={"seed": "1"}, files=files).json()
    assert body == {
        "given": {"seed": 1},
        "init_image": "init.png",
        "image_prompts": ["a.png", "b.png"],
    }


def test_card_defaults_yield_to_the_values_a_model_brings(tmp_path: Path) -> None:
    """The card's scale is a default, not a given value: the bundled shapes CLIP's own size
    wins over it; a scale the client sends wins over the model's."""

    def size_of(given: dict[str, Any], clip: str) -> tuple[int, int]:
        config = ServiceConfig(clip_models=[clip], output_dir=tmp_path, preload=False)
        form = GenerateForm({"style": "pixel art", **given})
        settings = asyncio.run(build_settings(form, config, tmp_path / "uploads"))
        assert settings.scale is not None
        return settings.size

    assert size_of({}, "shapes") == (64, 64)  # the model's world
    assert size_of({}, "tiny-random") == size_of({"scale": 2.5}, "tiny-random")  # the card's
    assert size_of({"scale": 0.5}, "shapes") != (64, 64)  # the client's


def test_shapes_world_through_the_http_service(tmp_path: Path, models: ModelCache) -> None:
    """With T2A_CLIP_MODELS=shapes, POST /generate renders the shapes world (64x64, a 16x16
    grid, 16 views), as the CLI does, not the card's 369x369 with a 41x41 grid."""
    config = ServiceConfig(
        clip_models=["shapes"], device="cpu", output_dir=tmp_path / "out", preload=False
    )
    form = {"prompts": "a red circle", "style": "pixel art", "iterations": "2", "seed": "1"}
    with TestClient(create_app(config, models=models)) as client:
        response = client.post("/generate", data=form)
        assert response.status_code == 200, response.text
        shown = json.loads(response.headers["X-Settings"])
        assert (shown["size"], shown["pixel_size"], shown["cutouts"]) == ([64, 64], [16, 16], 16)
        assert shown["iterations"] == 2  # what the client sent still wins
        assert Image.open(io.BytesIO(response.content)).size == (64, 64)
        scaled = client.post("/generate", data={**form, "scale": "1.5"})
        assert json.loads(scaled.headers["X-Settings"])["size"] == [96, 96]  # the world's x1.5
        # The README's curl example: the world's widescreen canvas, not the presets' 400x224.
        wide = client.post("/generate", data={**form, "aspect": "widescreen"})
        assert Image.open(io.BytesIO(wide.content)).size == (64, 36)


def test_info_describes_the_shapes_world_as_the_server_runs_it(tmp_path: Path) -> None:
    """The page's hints come from /info: on the shapes models, their world's numbers and words."""
    config = ServiceConfig(clip_models=["shapes"], output_dir=tmp_path, preload=False)
    with TestClient(create_app(config)) as client:
        info = client.get("/info").json()
    assert info["qualities"]["draft"] == {"clip_models": ["shapes"], "iterations": 100}
    assert info["qualities"]["best"]["iterations"] == 500  # a quality above draft keeps its own
    assert info["default_scale"] == 1.0
    assert {name: a["default_size"] for name, a in info["aspects"].items()} == {
        "widescreen": [64, 36], "portrait": [52, 64], "square": [64, 64]
    }  # fmt: skip
    assert info["prompt_hints"]["example"] == "a yellow star on a purple background"
    assert "on a blue background" in info["prompt_hints"]["keywords"]
