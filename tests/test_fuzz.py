"""Property-based run over the OpenAPI (schemathesis) against the real app on 127.0.0.1.

One schema, the one the server publishes at /openapi.json, with no hand fixes: it states this
server's limits (`api.openapi`), so schema-valid data reaches the engine and the queue. Two
passes, both bounded and derandomised: every operation with schema-valid and schema-invalid data
(`POSITIVE` and `NEGATIVE`), then more schema-valid calls of `POST /generate` and `POST /jobs`.
Every answer must be a non-5xx that its documented status, content type, headers and schema
allow, and valid forms must be accepted often enough to show that they reach a run. (Not every
schema-invalid value is refused, on purpose: a form field sent empty counts as left out, as HTML
forms send them.) The totals are printed (`-s`).
"""

from __future__ import annotations

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

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES = 25  # per operation and mode
VALID_EXAMPLES = 25  # more schema-valid forms per form route


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


def form_routes(schema: Any) -> Any:
    """The published schema's `POST /generate` and `POST /jobs` operations only."""
    return schema.include(method="POST", path_regex="^/(generate|jobs)$")


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
        form_routes(schemathesis.openapi.from_dict(openapi)),
        server,
        [GenerationMode.POSITIVE],
        VALID_EXAMPLES,
    )
    total = everything + valid
    print(f"\nfuzz: {total['requests']} requests, {total['5xx']} 5xx;", dict(sorted(total.items())))
    assert total["5xx"] == 0
    assert valid["POST /generate 200"] > 0 and valid["POST /jobs 202"] > 0
