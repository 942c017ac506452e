"""Time of the artifact store's operations on a PNG: the local directory against an
S3-compatible server on loopback (moto's, started here as in the tests).

For each backend: save (`save_result`, a 256x256 PNG with its metadata), serve (GET
/outputs/{id}.png through the API, streamed; for S3 also the presigned 302 and the GET of the
presigned URL), read (the preview route's whole-object read) and delete. Prints a markdown
table: median milliseconds over `--repeats` runs after a warm-up.

    python bench/storage.py --repeats 30
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from s3_server import TEST_ENV, moto_server, s3_client  # noqa: E402

from api.app import create_app  # noqa: E402
from api.config import ServiceConfig  # noqa: E402
from api.storage import ArtifactStore, new_job_id  # noqa: E402
from engine import Result, Settings, resolve  # noqa: E402


def a_result(seed: int) -> Result:
    """A 256x256 noise PNG (about 200 KB, like a real picture: it does not compress)."""
    image = Image.effect_noise((256, 256), 64).convert("RGB")
    settings = resolve(Settings.create(prompts="bench", style="pixel art", size=(256, 256)))
    return Result(image, settings.model_copy(update={"seed": seed}), [1.0], 0.1)


def median_ms(run: Callable[[int], Any], repeats: int) -> float:
    run(-1)  # warm-up
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        run(i)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def bench_backend(config: ServiceConfig, repeats: int) -> dict[str, float]:
    """Median ms of each operation with the app's store."""
    with TestClient(create_app(config)) as client, httpx.Client(timeout=10) as direct:
        store: ArtifactStore = client.app.state.artifacts  # type: ignore[attr-defined]
        ids = [new_job_id() for _ in range(repeats + 1)]
        results = [a_result(i) for i in range(repeats + 1)]
        row = {"save PNG": median_ms(lambda i: store.save_result(results[i], ids[i]), repeats)}

        def serve(i: int) -> None:
            answer = client.get(f"/outputs/{ids[i]}.png", follow_redirects=False)
            assert answer.status_code in (200, 302), answer.status_code
            if answer.status_code == 302:
                assert direct.get(answer.headers["location"]).status_code == 200

        row["serve PNG"] = median_ms(serve, repeats)
        row["read PNG"] = median_ms(lambda i: store.read(ids[i], "png"), repeats)
        row["delete job"] = median_ms(lambda i: store.delete(ids[i]), repeats)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    os.environ.update(TEST_ENV)
    base: dict[str, Any] = {"preload": False, "run_worker_in_process": False}
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp, moto_server(Path(tmp)) as endpoint:
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        s3_client(endpoint).create_bucket(Bucket=bucket)
        s3 = {"storage_url": f"s3://{bucket}/art", "s3_endpoint_url": endpoint}
        backends = {
            "local directory": {},
            "S3 (moto, loopback), streamed": s3,
            "S3 (moto, loopback), presigned 302": {**s3, "s3_presign": True},
        }
        for i, (name, extra) in enumerate(backends.items()):
            out = Path(tmp) / f"out{i}"
            rows[name] = bench_backend(ServiceConfig(output_dir=out, **base, **extra), args.repeats)
    columns = list(next(iter(rows.values())))
    print(f"median ms over {args.repeats} runs, 256x256 PNG\n")
    print("| backend | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{row[c]:.1f}" for c in columns) + " |")


if __name__ == "__main__":
    main()
