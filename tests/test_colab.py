"""The Colab launcher (scripts/run_colab.py) with a fake tunnel, and the notebook's format.

The tests import it as `scripts.run_colab`; the notebook runs it by path (`%run`), which the
event-loop test does too (runpy, as `%run` executes the file)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import NOTEBOOK, ROOT, WORKER_SECRETS, serving_in_thread, wait_for
from servers import free_port

from api.config import ServiceConfig
from scripts import run_colab

PUBLIC = "https://fake-tunnel.example"


class FakeTunnel:
    """Stands in for ngrok: records what it was opened with and whether it was closed."""

    opened: list[tuple[int, str]] = []
    closed: list[str] = []

    def __init__(self, port: int, authtoken: str):
        self.public_url = PUBLIC
        FakeTunnel.opened.append((port, authtoken))

    def close(self) -> None:
        FakeTunnel.closed.append(self.public_url)


def test_notebook_is_valid_nbformat_4_and_runs_the_launcher() -> None:
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    assert nb["nbformat"] == 4 and nb["nbformat_minor"] >= 5
    assert nb["metadata"]["kernelspec"]["language"] == "python"
    ids = [cell["id"] for cell in nb["cells"]]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", i) for i in ids)
    code = []
    for cell in nb["cells"]:
        assert cell["cell_type"] in ("markdown", "code") and isinstance(cell["source"], list)
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
            code.append("".join(cell["source"]))
    for source in code:  # plain Python once IPython's ! and % lines are set aside
        python = [ln for ln in source.splitlines() if not ln.lstrip().startswith(("!", "%"))]
        compile("\n".join(python), "cell", "exec")
    joined = "\n".join(code)
    assert "pip install" in joined and "NGROK_AUTHTOKEN" in joined
    assert "%run scripts/run_colab.py" in joined
    assert "%run scripts/run_colab.py --worker" in joined  # the second path


def _tagged(nb: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    return [c for c in nb["cells"] if tag in c.get("metadata", {}).get("tags", [])]


def test_notebook_has_both_paths_and_the_worker_cells_in_order() -> None:
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    text = ["".join(c["source"]) for c in nb["cells"]]
    assert "Path 1" in text[0] and "Path 2" in text[0]  # the intro names both
    order = [c["id"] for c in nb["cells"]]
    for tag in ("install", "worker-secrets", "worker-run"):
        assert [c["cell_type"] for c in _tagged(nb, tag)] == ["code"], tag
    secrets, run = _tagged(nb, "worker-secrets")[0], _tagged(nb, "worker-run")[0]
    assert order.index("install") < order.index(secrets["id"]) == order.index(run["id"]) - 1
    assert "".join(run["source"]) == "%run scripts/run_colab.py --worker"
    install = "".join(_tagged(nb, "install")[0]["source"])
    assert '!pip install -q -e ".[redis,postgres,s3]"' in install.splitlines()
    code = "".join(secrets["source"])
    assert "userdata.get(name)" in code and all(f'"{name}"' in code for name in WORKER_SECRETS)
    guide = text[order.index(secrets["id"]) - 1]  # the markdown that explains the path
    assert "Path 2" in guide and "Notebook access" in guide and "T2A_STALE_AFTER_SECONDS" in guide
    assert all(word in guide for word in ("rediss://", "sslmode=require", "https", *WORKER_SECRETS))


def test_notebook_holds_no_secret_values() -> None:
    text = NOTEBOOK.read_text(encoding="utf-8")
    passwords = re.findall(r"[a-z+]+://[^\s/@:`]*:([^\s/@`]+)@", text)
    assert set(passwords) == {"PASSWORD"}  # the example URLs hold a placeholder only
    assert not re.search(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b", text)  # an AWS access key id
    assert not re.search(r"[A-Za-z0-9/+]{40}", text)  # an AWS secret key, a long token
    nb = json.loads(text)
    for cell in nb["cells"]:  # every value comes from Secrets, the environment or a prompt
        lines = [ln for ln in cell["source"] if not ln.lstrip().startswith("#")]
        assert not re.findall(r"os\.environ\[[^]]+\]\s*=\s*[\"']", "".join(lines))


def test_missing_token_is_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("NGROK_AUTHTOKEN", raising=False)
    assert run_colab.main(["--port", "0"], tunnel_factory=FakeTunnel) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: an ngrok auth token is needed") and "NGROK_AUTHTOKEN" in err
    assert "dashboard.ngrok.com" in err


def test_launcher_prints_both_urls_serves_docs_and_closes_the_tunnel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NGROK_AUTHTOKEN", "token-from-env")
    port = free_port()
    codes: list[int] = []
    config = ServiceConfig(output_dir=tmp_path, preload=False)
    FakeTunnel.opened.clear()
    FakeTunnel.closed.clear()

    def run(**options: Any) -> None:
        codes.append(run_colab.main(["--port", str(port)], **options))

    with serving_in_thread(run, tunnel_factory=FakeTunnel, config=config):
        docs = httpx.get(f"http://127.0.0.1:{port}/docs", timeout=10)
    out = capsys.readouterr().out
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert f"Public URL: {PUBLIC}\n" in out and f"Doc URL: {PUBLIC}/docs\n" in out
    assert FakeTunnel.opened == [(port, "token-from-env")] and FakeTunnel.closed == [PUBLIC]
    assert codes == [0]


NOTEBOOK_CELL = """
import asyncio, runpy, sys
from api.config import ServiceConfig

launcher = runpy.run_path("scripts/run_colab.py", run_name="run_colab")  # by path, as %run does

class Fake:
    def __init__(self, port, token):
        self.public_url = "{public}"
    def close(self):
        print("fake tunnel closed", flush=True)

async def kernel():  # a notebook cell runs while the kernel's event loop is running
    config = ServiceConfig(output_dir=sys.argv[1], preload=False)
    argv = ["--port", sys.argv[2], "--authtoken", "t"]
    code = launcher["main"](argv, tunnel_factory=Fake, config=config)
    print("exit", code, flush=True)

asyncio.run(kernel())
"""


def test_launcher_inside_a_running_event_loop(tmp_path: Path) -> None:
    port = free_port()
    script = textwrap.dedent(NOTEBOOK_CELL).replace("{public}", PUBLIC)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path), str(port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        lines = _read_until(proc, "Doc URL:")
        wait_for(lambda: _get(f"http://127.0.0.1:{port}/docs") == 200, 20, "/docs answering")
        proc.send_signal(signal.SIGINT)  # the notebook's stop button
        rest, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
    out = "".join(lines) + rest
    assert f"Public URL: {PUBLIC}" in out and f"Doc URL: {PUBLIC}/docs" in out
    assert "fake tunnel closed" in out and "Tunnel closed." in out and "exit 0" in out


def _read_until(proc: subprocess.Popen[str], marker: str, timeout: float = 30) -> list[str]:
    assert proc.stdout is not None
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if marker in line:
            return lines
        if not line and proc.poll() is not None:
            break
    raise AssertionError("launcher output so far:\n" + "".join(lines))


def _get(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0


def _install_cell() -> str:
    """The Python of the notebook's install cell (its ! and % lines set aside)."""
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    source = "".join(next(c for c in nb["cells"] if c["id"] == "install")["source"])
    assert "<owner>" not in source
    return "\n".join(ln for ln in source.splitlines() if not ln.lstrip().startswith(("!", "%")))


def test_install_cell_without_a_repository_says_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TEXT2ART_REPO_URL", raising=False)
    with pytest.raises(ValueError, match="REPO_URL is not set"):
        exec(_install_cell(), {})
    (tmp_path / "text2art").mkdir()  # an uploaded project needs no URL
    exec(_install_cell(), {})


def test_install_cell_clones_the_repository_it_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    origin = tmp_path / "origin"
    origin.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], cwd=origin, check=True)
    (origin / "README.md").write_text("text2art\n")
    subprocess.run([*git, "add", "README.md"], cwd=origin, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], cwd=origin, check=True)
    work = tmp_path / "content"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("TEXT2ART_REPO_URL", origin.as_uri())
    exec(_install_cell(), {})
    assert (work / "text2art" / "README.md").read_text() == "text2art\n"
