"""Property-based run over the OpenAPI (schemathesis) against the real app on 127.0.0.1.

Two passes, both bounded and derandomised: every operation with schema-valid and schema-invalid
data (`POSITIVE` and `NEGATIVE`), then `POST /generate` and `POST /jobs` with their form narrowed
to values this server accepts (few iterations, small sizes, known styles), so that valid calls
reach the engine and the queue. Every answer must be a non-5xx that its documented status, content
type, headers and schema allow. The totals are printed (`-s`).
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from helpers import jobs_config, pause_jobs, running
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from engine import ModelCache
from engine.drawers import list_drawers
from engine.presets import ASPECT, QUALITY

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES = 25  # per operation and mode
VALID_EXAMPLES = 12  # per form route, narrowed to accepted values


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models: ModelCache) -> Iterator[str]:
    config = jobs_config(
        tmp_path_factory.mktemp("fuzz"),
        vqgan_model="tiny-random",
        cutouts=1,
        # the worker is paused below: queued jobs stay queued, /jobs calls cost nothing
        max_queued=100_000,
        max_iterations=3,
        max_pixels=64 * 64,
        max_upload_bytes=50_000,
        max_upload_pixels=128 * 128,
        max_request_bytes=1_000_000,
    )
    app = create_app(config, models=models)
    with running(app) as url:
        pause_jobs(app)
        yield url


def run(schema: Any, url: str, modes: list[GenerationMode], examples: int) -> Counter[str]:
    """Call every operation of `schema` `examples` times per mode; counts by outcome."""
    seen: Counter[str] = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in modes:

            @settings(
                max_examples=examples,
                deadline=None,
                derandomize=True,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def call(case: Any) -> None:
                response = case.call(base_url=url, timeout=60)
                seen["requests"] += 1
                seen[f"{response.status_code // 100}xx"] += 1
                seen[f"{case.method} {case.path} {response.status_code}"] += 1
                case.validate_response(response, checks=CHECKS)

            try:
                call()
            except Unsatisfiable:  # no invalid input exists (an operation without parameters)
                assert mode == GenerationMode.NEGATIVE, operation.label
    return seen


def accepted_forms(openapi: dict[str, Any]) -> dict[str, Any]:
    """The schema with only /generate and /jobs, their form limited to what the server takes."""
    narrowed = copy.deepcopy(openapi)
    narrowed["paths"] = {p: {"post": openapi["paths"][p]["post"]} for p in ("/generate", "/jobs")}
    fields = {
        "prompts": {"type": "string", "pattern": "^[a-z]{1,10}( [a-z]{1,10}){0,2}$"},
        "iterations": {"type": "integer", "minimum": 1, "maximum": 3},
        "seed": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
        "size": {"type": "string", "enum": ["32x32", "64x32", "48x48", "64x64"]},
        "style": {"type": "string", "enum": list_drawers()},
        "quality": {"type": "string", "enum": list(QUALITY)},
        "aspect": {"type": "string", "enum": list(ASPECT)},
        "scale": {"type": "number", "minimum": 0.5, "maximum": 8},
        "make_video": {"type": "boolean"},
        "public": {"type": "boolean"},
    }
    for path in narrowed["paths"]:
        body = narrowed["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]
        name = body["schema"]["$ref"].split("/")[-1]
        form = narrowed["components"]["schemas"][name]
        form["properties"] = {k: v for k, v in fields.items() if k in form["properties"]}
        form["required"] = ["prompts", "iterations", "size", "style"]
    return narrowed


@pytest.mark.fuzz
def test_no_5xx_and_every_answer_fits_the_schema(server: str) -> None:
    openapi = httpx.get(f"{server}/openapi.json").json()
    everything = run(
        schemathesis.openapi.from_dict(openapi),
        server,
        [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        EXAMPLES,
    )
    valid = run(
        schemathesis.openapi.from_dict(accepted_forms(openapi)),
        server,
        [GenerationMode.POSITIVE],
        VALID_EXAMPLES,
    )
    total = everything + valid
    print(f"\nfuzz: {total['requests']} requests, {total['5xx']} 5xx;", dict(sorted(total.items())))
    assert total["5xx"] == 0
    assert valid["POST /generate 200"] > 0 and valid["POST /jobs 202"] > 0
