"""Plain helpers shared by the test modules (fixtures live in conftest.py; the real Redis and
PostgreSQL servers in servers.py, moto's S3 server in s3_server.py).

- polling: `wait_for`, the one wait for a named condition
- images and settings: `png_bytes`, `png_header_only`, `tiny_settings`, `run_cli`
- the HTTP service: `running` (a real uvicorn), `serving_in_thread`, `open_requests`,
  `error_of`
- the jobs service: `FORM`, `jobs_config`, `serving`, `pause_jobs`, `submit`, `job_state`,
  `parse_sse`, `add_job`, `a_result`
- e-mail: `Inbox`, `smtp_server`, `smtp_config`; webhooks: `Hooks`, `webhook_server`
- workers: `WorkerProcess`, `TIMING`, `SHORT`, `job`, `ended`; the Colab notebook: `NOTEBOOK`,
  `WORKER_SECRETS`
"""

from __future__ import annotations

import email
import email.policy
import io
import json
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import torch
import uvicorn
from aiosmtpd.controller import Controller
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from servers import free_port

from api.app import create_app
from api.config import ServiceConfig
from api.jobs.store import FINAL, QUEUED, Job, JobStore
from engine import ModelCache, Result, Settings, resolve
from engine.generate import contact_sheet

if TYPE_CHECKING:
    from api.storage import ArtifactStore

ROOT = Path(__file__).resolve().parents[1]


# -- polling -------------------------------------------------------------------------------------
def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """GET `url` from a server the test client does not reach (a worker's health port): its
    status and text, whatever the status; OSError when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "the check") -> Any:
    """Poll until `check()` is truthy; returns its value (fails naming `what` after `timeout`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what}: not true after {timeout} s")


# -- images, settings and the CLI ----------------------------------------------------------------
def png_bytes(
    image: Image.Image | None = None,
    *,
    size: tuple[int, int] = (16, 16),
    colour: str | tuple[int, int, int] = "red",
) -> bytes:
    """`image` as the bytes of a PNG file; without one, a plain `colour` picture of `size`."""
    if image is None:
        image = Image.new("RGB", size, colour)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a huge size in its header (a decompression bomb's first bytes)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    body = struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    idat = b"IDAT" + zlib.compress(b"\0" * 64)
    body += struct.pack(">I", len(idat) - 4) + idat + struct.pack(">I", zlib.crc32(idat))
    return b"\x89PNG\r\n\x1a\n" + body


def tiny_settings(**overrides: Any) -> Settings:
    """Small, fast settings on the tiny random CLIP: 32x32 pixel art, 8 cutouts, 4 steps."""
    values: dict[str, Any] = {
        "prompts": "underwater city",
        "style": "pixel art",
        "clip_models": ["tiny-random"],
        "size": (32, 32),
        "cutouts": 8,
        "iterations": 4,
        "seed": 7,
        "device": "cpu",
    }
    values.update(overrides)
    return Settings.create(**values)


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`text2art ARGS` in this process: (exit code, stdout, stderr)."""
    from api.cli import main

    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


# -- the HTTP service ----------------------------------------------------------------------------
@contextmanager
def running(app: FastAPI) -> Iterator[str]:
    """Serve `app` with uvicorn on a free port of 127.0.0.1 in a thread; yields the base URL.
    The uvicorn server is `app.state.uvicorn` meanwhile (see `open_requests`)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    app.state.uvicorn = server
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started or not thread.is_alive(), 30, "uvicorn started")
    assert server.started, "uvicorn did not start (see its log above)"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextmanager
def serving_in_thread(run: Callable[..., object], **kwargs: Any) -> Iterator[uvicorn.Server]:
    """Call `run(**kwargs, on_server=...)` in a thread (`api.serve.serve`, the Colab launcher:
    anything that hands its uvicorn server to `on_server`); yields that server once it has
    started, and stops it after."""
    servers: list[uvicorn.Server] = []
    thread = threading.Thread(
        target=run, kwargs={**kwargs, "on_server": servers.append}, daemon=True
    )
    thread.start()
    wait_for(lambda: bool(servers) and servers[0].started, 30, "the server started")
    try:
        yield servers[0]
    finally:
        servers[0].should_exit = True
        thread.join(10)


def open_requests(app: FastAPI) -> int:
    """How many requests the uvicorn of `running(app)` has not finished handling."""
    server: uvicorn.Server = app.state.uvicorn
    return len(server.server_state.tasks)


def error_of(response: Any) -> tuple[str, str]:
    """(field, message) of a 422 answer."""
    assert response.status_code == 422, response.text[:300]
    detail = response.json()["detail"][0]
    return detail["loc"][-1], detail["msg"]


# -- the jobs service ----------------------------------------------------------------------------
# 32x32 pixel art on the tiny random CLIP with 4 cutouts: about 35 ms an iteration on a CPU.
FORM = {"prompts": "a castle", "style": "pixel art", "size": "32x32", "iterations": "30"}


def jobs_config(out: Path, **overrides: Any) -> ServiceConfig:
    """The service on tiny offline models with fast progress, heartbeats and retries."""
    values: dict[str, Any] = {
        "clip_models": ["tiny-random"],
        "cutouts": 4,
        "device": "cpu",
        "output_dir": out,
        "preload": False,
        "progress_interval": 0.05,
        "heartbeat_seconds": 0.5,
        "preview_every": 5,
        "rate_limit": 0,
        "max_jobs_per_client": 0,
        "notify_backoff": 0.05,
    }
    values.update(overrides)
    return ServiceConfig(**values)


@contextmanager
def serving(
    config: ServiceConfig, models: ModelCache, paused: bool = False
) -> Iterator[TestClient]:
    """The app with its lifespan (and its in-process worker) running; `paused`: see below."""
    models.clip("tiny-random", torch.device("cpu"))  # built once per session, outside the waits
    with TestClient(create_app(config, models=models)) as client:
        if paused:
            pause_jobs(client.app)  # type: ignore[arg-type]
        yield client


def pause_jobs(app: FastAPI) -> None:
    """Stop the in-process worker's queue consumer: jobs stay queued (they cost nothing),
    while `/generate` still runs in this process, as on any node that runs jobs. (An API-only
    node, T2A_RUN_WORKER_IN_PROCESS=false, sends `/generate` to the queue instead.)"""
    app.state.jobs.queue.stop_consumer(0)


def job_state(client: TestClient, job_id: str, *states: str) -> dict[str, Any] | None:
    """The job when its status is one of `states`, else None."""
    body: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
    return body if body["status"] in states else None


def submit(client: TestClient, **fields: Any) -> dict[str, Any]:
    """POST /jobs with FORM and `fields`; the 202 answer's body."""
    response = client.post("/jobs", data={**FORM, **{k: str(v) for k, v in fields.items()}})
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def parse_sse(text: str) -> list[dict[str, Any]]:
    """Events of a Server-Sent Events body: {'id', 'event', 'data'} (comments skipped)."""
    events = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and ": " in line)
        if "event" in fields:
            fields["data"] = json.loads(fields["data"])
            events.append(fields)
    return events


def add_job(store: JobStore, job_id: str, **values: Any) -> Job:
    """A job record as `JobService.submit` writes it (plus `values`)."""
    settings = Settings.create(prompts="a castle", style="pixel art", size=(32, 32))
    resolved = resolve(settings).model_copy(
        update={"iterations": 3, "clip_models": ["tiny-random"], "cutouts": 4, "seed": 1}
    )
    fields: dict[str, Any] = {
        "id": job_id,
        "status": QUEUED,
        "request": {},
        "settings": resolved.to_json_dict(),
        "delete_token_hash": "0" * 64,
        "created_at": time.time(),
        "total": 3,
        "iteration": 0,
        "attempts": 0,
        "outputs": [],
        "cancel_requested": False,
        "version": 1,
    }
    fields.update(values)
    return store.add(Job(**fields))


def a_result(
    store: ArtifactStore,
    job_id: str,
    *,
    svg: str | None = None,
    video: bool = False,
    variations: int = 1,
) -> Result:
    """A finished run as the engine returns it, with an upload and optionally an SVG, an MP4
    and several pictures (each its own colour; `image` their contact sheet)."""
    upload = store.upload_dir(job_id) / "init.png"
    upload.parent.mkdir(parents=True)
    Image.new("RGB", (8, 8), "blue").save(upload)
    settings = Settings.create(
        prompts="a lighthouse",
        style="pixel art",
        size=(32, 32),
        seed=3,
        init_image=str(upload),
        variations=variations,
    )
    video_path = None
    if video:
        video_path = store.video_path(job_id)
        video_path.write_bytes(b"fake mp4")
    if variations == 1:
        image = Image.new("RGB", (32, 32), "white")
        return Result(image, resolve(settings), [1.0], 0.1, svg=svg, video_path=video_path)
    pictures = [Image.new("RGB", (32, 32), (40 * i, 0, 0)) for i in range(variations)]
    svgs = [f'<svg id="{i}"/>' if svg else None for i in range(variations)]
    return Result(
        contact_sheet(pictures),
        resolve(settings),
        [1.0],
        0.1,
        svg=svg,
        video_path=video_path,
        images=pictures,
        seeds=[3 + i for i in range(variations)],
        svgs=svgs,
    )


# -- e-mail --------------------------------------------------------------------------------------
class Inbox:
    """aiosmtpd handler keeping every message; answers 451 (try later) to the first `busy`."""

    def __init__(self, busy: int = 0):
        self.envelopes: list[Any] = []
        self.busy = busy

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.busy:
            self.busy -= 1
            return "451 4.3.0 busy, try again later"
        self.envelopes.append(envelope)
        return "250 OK"

    def message(self, index: int = 0) -> EmailMessage:
        raw = self.envelopes[index].content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        return msg


@contextmanager
def smtp_server(handler: Any, smtputf8: bool = True) -> Iterator[int]:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 handing messages to `handler`; yields its
    port. SMTPUTF8 is offered unless `smtputf8` is false (on by default, as aiosmtpd has it)."""
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, enable_SMTPUTF8=smtputf8)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def smtp_config(out: Path, port: int, **overrides: Any) -> Any:
    """`jobs_config` sending e-mail through the SMTP server on `port` (no TLS, no login)."""
    values: dict[str, Any] = {
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_security": "none",
        "smtp_sender": "text2art <art@example.org>",
        "public_url": "https://art.example.org/",  # e-mail needs it
    }
    return jobs_config(out, **{**values, **overrides})


# -- webhooks ------------------------------------------------------------------------------------
class Hooks(BaseHTTPRequestHandler):
    """Records POSTs (`server.received`: (headers, body); `server.times`: when, monotonic);
    answers with the next status of `server.statuses` (then 200)."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server: Any = self.server
        server.received.append((dict(self.headers), body))
        server.times.append(time.monotonic())
        status = server.statuses.pop(0) if server.statuses else 200
        self.send_response(status)
        if status == 302:
            self.send_header("Location", "http://169.254.169.254/latest/meta-data")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def webhook_server() -> Iterator[Any]:
    """A webhook receiver (`Hooks`) on 127.0.0.1 in a thread; yields the server (its URL:
    `hook_url(server)`)."""
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), Hooks)
    server.received, server.times, server.statuses = [], [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def hook_url(server: Any) -> str:
    """The URL the webhook receiver `server` answers on."""
    return f"http://127.0.0.1:{server.server_address[1]}/hook"


# -- workers and the Colab notebook --------------------------------------------------------------
NOTEBOOK = ROOT / "notebooks" / "text2art_colab.ipynb"
WORKER_SECRETS = ("T2A_QUEUE_URL", "T2A_DATABASE_URL", "T2A_STORAGE_URL", "AWS_ACCESS_KEY_ID",
                  "AWS_SECRET_ACCESS_KEY", "T2A_S3_ENDPOINT_URL", "AWS_DEFAULT_REGION")  # fmt: skip

SHORT = 10  # iterations of a job that ends within seconds
TIMING = {  # second-scale policy, as the workers read it from the environment
    "heartbeat_seconds": 0.5,
    "stale_after_seconds": 4.0,
    "reconcile_seconds": 1.0,
    "progress_interval": 0.2,
    "max_requeues": 1,
    "db_retry_seconds": 60.0,
    "shutdown_timeout": 15.0,
    "checkpoint_seconds": 0.3,  # a killed worker's job continues from at most 0.3 s back
}


class WorkerProcess:
    """One `text2art worker` process, its output in a log file."""

    def __init__(
        self,
        env: dict[str, str],
        log: Path,
        code: str = "from api.cli_worker import worker; worker()",
    ):
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code], env=env, cwd=ROOT, stdout=out, stderr=out
            )
        self.identity = ""
        self.health_port: int | None = None  # its health server's, when it has one

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until it says it takes jobs (its identity is then known)."""

        def ready() -> str | None:
            assert self.proc.poll() is None, f"the worker exited:\n{self.output()[-3000:]}"
            found = re.search(r"worker (\S+) is taking jobs", self.output())
            return found.group(1) if found else None

        self.identity = wait_for(ready, timeout, "worker start-up")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Send `sig` and wait for the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


def job(store: JobStore, job_id: str) -> Job:
    """The job's record (fails when it is gone)."""
    found = store.get(job_id)
    assert found is not None, f"job {job_id} is gone"
    return found


def ended(store: JobStore, ids: list[str], timeout: float = 90.0) -> list[Job]:
    """The jobs once every one reached a final state."""

    def all_final() -> list[Job] | None:
        jobs = [job(store, i) for i in ids]
        return jobs if all(j.status in FINAL for j in jobs) else None

    result: list[Job] = wait_for(all_final, timeout, f"jobs {ids} ending")
    return result


@contextmanager
def writing_torchscript() -> Iterator[None]:
    """Quiet exactly torch's deprecation of `torch.jit.script`/`save`/`load`: the tests must write
    TorchScript archives, the format of OpenAI's published CLIP weights, which `torch.export`
    does not write; any other warning still shows (or fails a test that turns them to errors)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", r"`torch\.jit\.\w+` is deprecated", category=FutureWarning
        )
        yield
