"""The service on a real uvicorn at 127.0.0.1: concurrency and client disconnects."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
import torch
from fastapi import FastAPI
from helpers import open_requests, running, wait_for

from api.app import create_app
from api.config import ServiceConfig
from api.gpu import GpuLock
from engine import ModelCache

FAST = {"style": "pixel art", "size": "32x32", "iterations": "3", "prompts": "a lighthouse"}


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, models: ModelCache
) -> Iterator[tuple[str, FastAPI]]:
    out = tmp_path_factory.mktemp("server") / "outputs"
    config = ServiceConfig(
        clip_models=["tiny-random"], cutouts=4, device="cpu", output_dir=out, preload=False,
        rate_limit=0,  # many /generate calls from one client: the GPU line is under test
    )  # fmt: skip
    models.clip("tiny-random", torch.device("cpu"))  # built once, outside the timings
    app = create_app(config, models=models)
    with running(app) as url:
        yield url, app


def watch_queue(gpu: GpuLock, seconds: float) -> int:
    """The most callers seen waiting for the GPU during `seconds`."""
    most, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        most = max(most, gpu.waiting)
        time.sleep(0.005)
    return most


def send_and_leave_open(url: str, fields: dict[str, str]) -> socket.socket:
    """POST /generate over a raw socket (so the test can hang up mid-request)."""
    host, port = url.removeprefix("http://").split(":")
    body = urlencode(fields).encode()
    head = (
        f"POST /generate HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n\r\n"
    )
    conn = socket.create_connection((host, int(port)))
    conn.sendall(head.encode() + body)
    return conn


def hang_up(conn: socket.socket) -> None:
    conn.shutdown(socket.SHUT_RDWR)
    conn.close()


def pngs(app: FastAPI) -> list[Path]:
    return sorted(app.state.config.output_dir.glob("*.png"))


def test_eight_simultaneous_requests_equal_the_same_requests_alone(
    server: tuple[str, FastAPI],
) -> None:
    url, app = server
    gpu: GpuLock = app.state.gpu
    seeds = list(range(10, 18))
    with httpx.Client(base_url=url, timeout=60) as client:
        alone = [client.post("/generate", data={**FAST, "seed": str(s)}) for s in seeds]

        def post(seed: int) -> httpx.Response:
            return client.post("/generate", data={**FAST, "seed": str(seed)})

        with ThreadPoolExecutor(9) as pool:
            most_waiting = pool.submit(watch_queue, gpu, seconds=2.0)
            together = list(pool.map(post, seeds))
    assert most_waiting.result() >= 2  # the requests really queued for the GPU together
    assert all(r.status_code == 200 for r in alone + together)
    assert [r.headers["x-seed"] for r in together] == [str(s) for s in seeds]
    assert len({r.content for r in alone}) == 8  # different seeds, different images
    for a, b in zip(alone, together, strict=True):
        assert a.content == b.content
        assert a.headers["x-job-id"] != b.headers["x-job-id"]


def test_disconnect_while_waiting_leaves_the_queue(server: tuple[str, FastAPI]) -> None:
    url, app = server
    gpu: GpuLock = app.state.gpu
    before = pngs(app)
    with gpu.slot():  # someone else's run holds the GPU
        conn = send_and_leave_open(url, {**FAST, "seed": "1"})
        wait_for(lambda: gpu.waiting == 1, 10, "the request waiting for the GPU")
        hang_up(conn)
        wait_for(lambda: gpu.waiting == 0, 5, "the request leaving the GPU's queue")
    # Once its handler has ended, it can never run: had it stayed queued, it would run now.
    wait_for(lambda: open_requests(app) == 0, 10, "the server done with the request")
    assert not gpu.busy and pngs(app) == before  # it never ran


def test_disconnect_while_running_cancels_the_run(server: tuple[str, FastAPI]) -> None:
    url, app = server
    gpu: GpuLock = app.state.gpu
    before = pngs(app)
    # 5000 steps take over a minute here: only a cancel ends the run within seconds.
    conn = send_and_leave_open(url, {**FAST, "iterations": "5000", "seed": "2"})
    # Running: it holds the GPU, past the wait's cancel check; only the run itself can stop.
    wait_for(lambda: gpu.busy, 10, "the run holding the GPU")
    started = time.monotonic()
    hang_up(conn)
    wait_for(lambda: not gpu.busy, 5, "the cancelled run releasing the GPU")
    assert time.monotonic() - started < 5 and pngs(app) == before
    after = httpx.post(f"{url}/generate", data={**FAST, "seed": "3"}, timeout=30)
    assert after.status_code == 200  # and the service goes on
