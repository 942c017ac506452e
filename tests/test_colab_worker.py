"""The notebook's Path 2 (join a site as a GPU worker) run as Colab runs it.

Each "Colab runtime" is a fresh Python process that executes the notebook's two worker cells:
the secrets cell, reading a fake `google.colab.userdata` (its values from a JSON file, the way
Colab's Secrets panel gives them), then the run cell, whose `%run scripts/run_colab.py --worker`
becomes what IPython does (runpy as `__main__`). The process's own environment holds none of the
site's settings: they must come through the Secrets. The site is real: Redis for the queue,
PostgreSQL for the job records, moto's S3 server for the bucket, and an API-only node in this
process. Killing a runtime with SIGKILL is Colab recycling it without warning.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from helpers import (
    NOTEBOOK,
    ROOT,
    SHORT,
    TIMING,
    WORKER_SECRETS,
    WorkerProcess,
    ended,
    job,
    submit,
    wait_for,
)
from s3_server import TEST_ENV, keys, moto_server, s3_client
from servers import RedisServer, free_port

from api.app import create_app
from api.config import ServiceConfig
from api.jobs.store import FINAL, RUNNING, SUCCEEDED, Job, JobStore
from engine import ModelCache, decode_state

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SITE_SETTINGS = ("T2A_QUEUE_URL", "T2A_DATABASE_URL", "T2A_STORAGE_URL")
PREFIX = "outputs"  # the bucket's prefix: T2A_STORAGE_URL is s3://BUCKET/outputs
ITERATIONS = 200  # a job that runs for seconds: still running when its notebook is killed

FAKE_USERDATA = '''"""A fake `google.colab.userdata`: secrets from $FAKE_COLAB_SECRETS."""

import json
import os


class SecretNotFoundError(Exception):
    """No secret of that name is stored."""


def get(name):
    """The stored secret `name`, as Colab's `userdata.get` returns it."""
    with open(os.environ["FAKE_COLAB_SECRETS"], encoding="utf-8") as file:
        secrets = json.load(file)
    if name not in secrets:
        raise SecretNotFoundError(name)
    return secrets[name]
'''

# Each Colab runtime is a machine of its own: a worker's identity (host:pid:token) names its host,
# and a dead worker of another host is found by its stale heartbeat, not by its vanished pid.
FAKE_HOST = '''"""This fake Colab runtime's host name: $FAKE_COLAB_HOSTNAME."""

import os
import socket

if os.environ.get("FAKE_COLAB_HOSTNAME"):
    socket.gethostname = lambda: os.environ["FAKE_COLAB_HOSTNAME"]
'''


# -- the notebook's cells as a Colab runtime runs them ------------------------------------------
def cell_source(tag: str) -> str:
    """The source of the notebook's one code cell tagged `tag`."""
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    found = [c for c in nb["cells"] if tag in c.get("metadata", {}).get("tags", [])]
    assert len(found) == 1 and found[0]["cell_type"] == "code", f"one code cell tagged {tag}"
    return "".join(found[0]["source"])


def as_python(source: str) -> str:
    """A code cell as plain Python: `%run PATH ARGS` runs PATH as `__main__` with
    `sys.argv = [PATH, *ARGS]`, as IPython does; no other magic or shell line is expected."""
    lines = []
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("%run "):
            path, *args = shlex.split(stripped.removeprefix("%run "))
            lines.append(
                f"import runpy, sys; sys.argv = {[path, *args]!r}; "
                f"runpy.run_path({path!r}, run_name='__main__')"
            )
        else:
            assert not stripped.startswith(("%", "!")), f"unexpected IPython line: {line}"
            lines.append(line)
    return "\n".join(lines)


def worker_cells() -> str:
    """The worker path's two cells, in order, as one Python program."""
    return as_python(cell_source("worker-secrets")) + "\n" + as_python(cell_source("worker-run"))


@dataclass
class Runtime:
    """What a Colab runtime starts with: the Secrets panel, a fake `google.colab`, scratch
    directories, and an environment without any of the site's settings."""

    tmp: Path
    secrets: dict[str, str] = field(default_factory=dict)
    host: str = "colab-runtime"

    def env(self) -> dict[str, str]:
        """Write the fake `google.colab` and the Secrets; the process's environment."""
        fake = self.tmp / "fake-colab"
        package = fake / "google" / "colab"
        package.mkdir(parents=True, exist_ok=True)
        (fake / "google" / "__init__.py").write_text("")
        (package / "__init__.py").write_text("")
        (package / "userdata.py").write_text(FAKE_USERDATA)
        (fake / "sitecustomize.py").write_text(FAKE_HOST)
        (self.tmp / "secrets.json").write_text(json.dumps(self.secrets))
        (self.tmp / "runtime-out").mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("T2A_", "AWS_"))}
        env.update({f"T2A_{name.upper()}": str(value) for name, value in TIMING.items()})
        env.update(
            T2A_DEVICE="cpu",  # the notebook's cuda:0, overridden as a CPU-only test must
            T2A_OUTPUT_DIR=str(self.tmp / "runtime-out"),
            FAKE_COLAB_SECRETS=str(self.tmp / "secrets.json"),
            FAKE_COLAB_HOSTNAME=self.host,
            PYTHONPATH=os.pathsep.join([str(fake), str(ROOT)]),
            PYTHONUNBUFFERED="1",
            OMP_NUM_THREADS="1",
        )
        return env

    def run(self, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run the worker cells to their end: (exit code, stdout, stderr)."""
        return subprocess.run(
            [sys.executable, "-c", worker_cells()], cwd=ROOT, env=self.env(),
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip


class Notebook(WorkerProcess):
    """The worker cells running in their own process (one Colab runtime), output in a log."""

    def __init__(self, runtime: Runtime, log: Path):
        super().__init__(runtime.env(), log, code=worker_cells())


# -- the site ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server on loopback, for the module."""
    with moto_server(tmp_path_factory.mktemp("moto")) as url:
        yield url


@pytest.fixture
def database_url(postgres_db: str) -> str:
    """The site's job database (a fresh one on the running session cluster)."""
    return postgres_db


@pytest.fixture
def store(database_url: str) -> Iterator[JobStore]:
    """The site's job records, read as the test goes."""
    records = JobStore(database_url).open()
    yield records
    records.close()


@pytest.fixture
def notebooks() -> Iterator[list[Notebook]]:
    """Every notebook process a test starts; any still running is killed at teardown."""
    started: list[Notebook] = []
    yield started
    for notebook in started:
        if notebook.proc.poll() is None:
            notebook.stop(signal.SIGKILL, timeout=30)


def site_secrets(queue_url: str, database_url: str, endpoint: str, bucket: str) -> dict[str, str]:
    """What the site's operator hands out, as stored in Colab's Secrets."""
    return {
        "T2A_QUEUE_URL": queue_url,
        "T2A_DATABASE_URL": database_url,
        "T2A_STORAGE_URL": f"s3://{bucket}/{PREFIX}",
        "T2A_S3_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": TEST_ENV["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": TEST_ENV["AWS_SECRET_ACCESS_KEY"],
        "AWS_DEFAULT_REGION": TEST_ENV["AWS_DEFAULT_REGION"],
    }


def site_node(secrets: dict[str, str], output_dir: Path, models: ModelCache) -> TestClient:
    """The site's API-only node (it runs no jobs) on the same queue, database and bucket."""
    config = ServiceConfig(
        database_url=secrets["T2A_DATABASE_URL"],
        queue_url=secrets["T2A_QUEUE_URL"],
        storage_url=secrets["T2A_STORAGE_URL"],
        s3_endpoint_url=secrets["T2A_S3_ENDPOINT_URL"],
        output_dir=output_dir,
        run_worker_in_process=False,
        clip_models=["tiny-random"],
        cutouts=4,
        device="cpu",
        preload=False,
        rate_limit=0,
        **TIMING,
    )
    return TestClient(create_app(config, models=models))


class Timeline:
    """A job's record as polled, each change kept with its time, and events of the test."""

    def __init__(self, store: JobStore, job_id: str):
        self.store, self.job_id = store, job_id
        self.entries: list[tuple[float, str]] = []
        self.workers: list[str] = []
        self._last: tuple[Any, ...] = ()

    def poll(self) -> Job:
        """The job's record now (a change of status, attempts or worker is noted)."""
        record = job(self.store, self.job_id)
        state = (record.status, record.attempts, record.worker_id)
        if state != self._last:
            self._last = state
            self.note(f"status={record.status} attempts={record.attempts} "
                      f"worker={record.worker_id} iteration={record.iteration}")  # fmt: skip
            if record.worker_id and record.worker_id not in self.workers:
                self.workers.append(record.worker_id)
        return record

    def note(self, what: str) -> None:
        self.entries.append((time.time(), what))

    def show(self, record: Job) -> str:
        """The timeline, in seconds since the job was created."""
        times = [("created_at", record.created_at), ("started_at", record.started_at),
                 ("finished_at", record.finished_at)]  # fmt: skip
        lines = [f"job {record.id}: attempts={record.attempts} final worker={record.worker_id}"]
        lines += [f"  {name}: +{(t or 0) - record.created_at:.2f} s" for name, t in times]
        lines += [f"  +{t - record.created_at:6.2f} s  {what}" for t, what in self.entries]
        lines.append(f"  worker ids seen: {', '.join(self.workers)}")
        return "\n".join(lines)


# -- tests -------------------------------------------------------------------------------------
def test_a_recycled_colab_worker_s_job_is_finished_by_the_next_notebook(
    tmp_path: Path,
    redis_server: RedisServer,
    database_url: str,
    endpoint: str,
    bucket: str,
    models: ModelCache,
    store: JobStore,
    notebooks: list[Notebook],
) -> None:
    secrets = site_secrets(redis_server.url, database_url, endpoint, bucket)
    site_out = tmp_path / "site"
    with site_node(secrets, site_out, models) as site:
        first = start_notebook(tmp_path / "colab-1", secrets, notebooks)
        warm_up = submit(site, iterations=SHORT, seed=1)["id"]
        (done,) = ended(store, [warm_up], timeout=60)
        assert done.status == SUCCEEDED and done.worker_id == first.identity, done.error

        job_id = submit(site, iterations=ITERATIONS, seed=1)["id"]
        timeline = Timeline(store, job_id)
        s3, state_key = s3_client(endpoint), f"{PREFIX}/states/{job_id}.safetensors"
        running = wait_for(
            lambda: (j := timeline.poll()).status == RUNNING and j.iteration >= 20
            and state_key in keys(s3, bucket) and j,
            60, "the job running on notebook #1 with a saved state",
        )  # fmt: skip
        assert running.worker_id == first.identity and first.identity.startswith("colab-1:")
        first.stop(signal.SIGKILL)  # Colab recycles the runtime: no clean stop
        saved = decode_state(s3.get_object(Bucket=bucket, Key=state_key)["Body"].read())
        timeline.note(f"notebook #1 killed (SIGKILL) at iteration {job(store, job_id).iteration}"
                      f"; its last state in the bucket: iteration {saved.iteration}")  # fmt: skip
        second = launch_notebook(tmp_path / "colab-2", secrets, notebooks)
        final = wait_for(lambda: finished(timeline, second), 120, "the job")
        timeline.note(f"ended on notebook #2, resumed_from={final.resumed_from}")
        print("\n" + timeline.show(final))

        assert final.status == SUCCEEDED and final.attempts == 2, final.error
        assert final.worker_id == second.identity and first.identity in timeline.workers
        assert f"its worker {first.identity} died; queued again" in second.output()
        # Continued on another machine, through the bucket, to the uninterrupted bytes.
        assert final.resumed_from == saved.iteration > 0
        assert f"resumed at iteration {saved.iteration}" in second.output()
        png = site.get(f"/outputs/{job_id}.png")
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG\r\n\x1a\n")
        reference = submit(site, iterations=ITERATIONS, seed=1)["id"]
        (again,) = ended(store, [reference], timeout=120)
        assert again.status == SUCCEEDED and again.resumed_from == 0
        assert site.get(f"/outputs/{reference}.png").content == png.content
    assert state_key not in keys(s3, bucket)  # the job ended: its state is gone
    assert f"{PREFIX}/{job_id}.png" in keys(s3_client(endpoint), bucket)
    local = [p.relative_to(site_out) for p in site_out.rglob("*") if p.is_file()]
    assert all(p.parts[0] == "staging" for p in local), local  # the results live in the bucket
    assert second.stop(signal.SIGTERM) == 0, second.output()[-3000:]
    assert "stopping" in second.output()


def launch_notebook(tmp: Path, secrets: dict[str, str], started: list[Notebook]) -> Notebook:
    """A new Colab runtime (its host named after `tmp`) with these Secrets, running the worker
    cells."""
    tmp.mkdir()
    notebook = Notebook(Runtime(tmp, secrets, host=tmp.name), tmp / "notebook.log")
    started.append(notebook)
    return notebook


def start_notebook(tmp: Path, secrets: dict[str, str], started: list[Notebook]) -> Notebook:
    """A new Colab runtime running the worker cells, once it takes jobs."""
    notebook = launch_notebook(tmp, secrets, started)
    notebook.wait_ready()
    return notebook


def finished(timeline: Timeline, notebook: Notebook) -> Job | None:
    """The job once final; notes when `notebook` (still starting) begins to take jobs."""
    if not notebook.identity and "is taking jobs" in notebook.output():
        notebook.wait_ready()  # reads its identity
        timeline.note(f"notebook #2 taking jobs as {notebook.identity}")
    record = timeline.poll()
    return record if record.status in FINAL else None


def test_the_secrets_cell_copies_stored_secrets_and_keeps_the_environment_elsewhere(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code = as_python(cell_source("worker-secrets"))
    for name in WORKER_SECRETS:  # each one restored after the test, set or not
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("T2A_DATABASE_URL", "postgresql+psycopg://db.example/site")
    monkeypatch.setitem(sys.modules, "google", None)  # not on Colab: no google.colab
    exec(code, {})
    out = capsys.readouterr().out
    assert os.environ["T2A_DATABASE_URL"] == "postgresql+psycopg://db.example/site"
    assert "T2A_DATABASE_URL: set" in out and "T2A_QUEUE_URL: missing" in out
    assert "T2A_S3_ENDPOINT_URL: not set" in out and "db.example" not in out

    stored = {"T2A_QUEUE_URL": " rediss://:s3cret@queue.example:6380/0\n"}

    def get(name: str) -> str:
        if name == "AWS_DEFAULT_REGION":  # e.g. Colab's NotebookAccessError
            raise PermissionError("no notebook access")
        if name not in stored:
            raise KeyError(name)  # Colab raises its SecretNotFoundError
        return stored[name]

    colab = types.ModuleType("google.colab")
    colab.userdata = types.SimpleNamespace(get=get)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    exec(code, {})
    out = capsys.readouterr().out
    assert os.environ["T2A_QUEUE_URL"] == "rediss://:s3cret@queue.example:6380/0"  # stripped
    assert "AWS_DEFAULT_REGION" not in os.environ and "AWS_DEFAULT_REGION: not set" in out
    assert "T2A_QUEUE_URL: set" in out and "s3cret" not in out  # names only, never values


def test_missing_secrets_are_named_in_one_line(tmp_path: Path) -> None:
    ran = Runtime(tmp_path, secrets={}).run()
    assert ran.returncode == 2, ran.stderr
    line = ran.stderr.strip()
    assert "\n" not in line and line.startswith("error: a worker needs T2A_QUEUE_URL")
    assert all(name in line for name in SITE_SETTINGS) and "Secrets" in line
    assert "T2A_QUEUE_URL: missing" in ran.stdout  # the secrets cell says what it found


def test_an_unreachable_queue_is_one_line_without_a_traceback(
    tmp_path: Path, database_url: str, endpoint: str, bucket: str
) -> None:
    closed = free_port()
    secrets = site_secrets(f"redis://127.0.0.1:{closed}/0", database_url, endpoint, bucket)
    ran = Runtime(tmp_path, secrets).run()
    assert ran.returncode == 1, ran.stderr[-3000:]
    last = ran.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: the worker cannot start: queue redis://127.0.0.1:{closed}/0")
    assert "database" not in last and "bucket" not in last  # only the queue is wrong
    assert "Traceback" not in ran.stdout + ran.stderr
    assert "T2A_QUEUE_URL: set" in ran.stdout and "T2A_S3_ENDPOINT_URL: set" in ran.stdout
