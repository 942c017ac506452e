"""Measure the README's figures on this machine and keep them in one place: `docs/figures.json`,
rendered into the README between the `figures:` markers (tests/test_readme.py checks they agree).

    python -m scripts.readme_figures                 # measure; print the README block
    python -m scripts.readme_figures --write         # ... and write docs/figures.json and README.md
    python -m scripts.readme_figures --tests --write # ... also the test suite (about 10 minutes)

What it measures:
- `shapes`: each `text2art generate ... --clip-model shapes` command of the README's "Offline
  models" block, as a new process (start-up, model load and 100 iterations at 64x64);
- `requests`: every `curl` example of the README's "HTTP service" and "Jobs" sections that needs
  no e-mail server and no earlier answer, pasted as written (the address changed to a free port)
  against `text2art serve --clip-model shapes`; a job is timed until it has finished;
- `tests` (with `--tests`): `python -m pytest`, its wall time, and the share of the shapes
  models' end-to-end runs (`-m semantic`) from the JUnit report.
Without `--tests` the test figures of the last measurement are kept.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from scripts.make_docs_images import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FIGURES = ROOT / "docs" / "figures.json"
BEGIN = "<!-- figures: begin (python -m scripts.readme_figures --write) -->"
END = "<!-- figures: end -->"
README_BASE = "http://127.0.0.1:8000"
STYLES = ("pixel art", "painting", "image")
LOG = ROOT / "test-output" / "readme_figures_pytest.log"


def timed(command: list[str], **kwargs: Any) -> float:
    """Seconds `command` took; it must succeed."""
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, **kwargs)
    return round(time.perf_counter() - start, 1)


def measure_shapes(tmp: Path) -> dict[str, float]:
    """Seconds per picture of each README shapes command (one process each), after one untimed
    run that fills the disk cache."""
    timed([sys.executable, "-c", "import api.cli, engine, torch, open_clip"], cwd=tmp)
    seconds = {}
    for style, command in zip(STYLES, COMMANDS, strict=True):
        words = command.split(" ", 1)[1]  # without "text2art"
        args = [sys.executable, "-c", "from api.cli import main; main()", *_split(words)]
        seconds[style] = timed(args, cwd=tmp)
    return seconds


def _split(words: str) -> list[str]:
    import shlex

    return shlex.split(words)


def curl_examples(readme: str) -> list[str]:
    """The README's curl commands of the HTTP service and Jobs sections that run on their own."""
    start, end = readme.index("## HTTP service"), readme.index("**E-mail:**")
    blocks = re.findall(r"```bash\n(.*?)```", readme[start:end], flags=re.DOTALL)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line.startswith("curl") and "3f…" not in line:
                commands.append(" ".join(line.split()))
    return commands


def measure_requests(tmp: Path, port: int) -> list[dict[str, Any]]:
    """Seconds of each curl example against `text2art serve --clip-model shapes` on `port`."""
    from PIL import Image

    for name in ("start.png", "ref1.jpg", "ref2.jpg"):  # the files the examples upload
        Image.new("RGB", (64, 64), "purple").save(tmp / name)
    base = f"http://127.0.0.1:{port}"
    rows = []
    for example in curl_examples(README.read_text(encoding="utf-8")):
        command = example.replace(README_BASE, base)
        start = time.perf_counter()
        out = subprocess.run(
            ["bash", "-c", command], cwd=tmp, capture_output=True, text=True, check=True,
            env={**os.environ, "KEY": "no-keys-on-this-server"},
        )  # fmt: skip
        if "/jobs" in command and '"id":"' in out.stdout:
            _wait_for_job(base, json.loads(out.stdout)["id"])
        rows.append({"example": example, "seconds": round(time.perf_counter() - start, 1)})
    return rows


def _wait_for_job(base: str, job_id: str) -> None:
    import httpx

    while httpx.get(f"{base}/jobs/{job_id}").json()["status"] in ("queued", "running"):
        time.sleep(0.2)


def serve_shapes(tmp: Path, port: int) -> subprocess.Popen[bytes]:
    """`text2art serve --clip-model shapes` on `port`, ready (warmed up)."""
    import httpx

    command = [sys.executable, "-c", "from api.cli import main; main()", "serve",
               "--clip-model", "shapes", "--port", str(port)]  # fmt: skip
    env = {**os.environ, "T2A_OUTPUT_DIR": str(tmp / "outputs"), "T2A_RATE_LIMIT": "0"}
    server = subprocess.Popen(command, cwd=tmp, env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.kill()
    raise RuntimeError("text2art serve --clip-model shapes did not get ready in 120 s")


def measure_tests(tmp: Path) -> dict[str, Any]:
    """`python -m pytest`: wall seconds, counts, and the seconds of the semantic runs."""
    report = tmp / "junit.xml"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs"]
    LOG.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with LOG.open("w") as log:  # the whole output, to read what failed or skipped
        subprocess.run([*command, f"--junitxml={report}"], cwd=ROOT, stdout=log, stderr=log)
    seconds = round(time.perf_counter() - start)
    suite = ET.parse(report).getroot().find("testsuite")
    assert suite is not None
    semantic = sum(
        float(case.get("time", 0))
        for case in suite.iter("testcase")
        if "test_shapes_semantic" in case.get("classname", "")
    )
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    return {"seconds": seconds, "semantic_seconds": round(semantic), **counts}


def machine(note: str) -> str:
    """This machine in a few words: its CPU cores and GPU, and `note`."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    load = os.getloadavg()[0]
    words = (
        f"a machine with {os.cpu_count()} CPU cores and {gpu}, load average {load:.1f} at the start"
    )
    return f"{words} ({note})" if note else words


def render(figures: dict[str, Any]) -> str:
    """The README's block of measured figures."""
    shapes = figures["shapes"]
    lines = [
        BEGIN,
        f"Measured on {figures['machine']}, {figures['date']}, with "
        "`python -m scripts.readme_figures`:",
        "",
        "| what | seconds |",
        "|---|---:|",
        *(f"| `--clip-model shapes`, {style}: one picture, a new process |"
          f" {shapes[style]} |" for style in STYLES),
        *(f"| `{row['example']}` | {row['seconds']} |" for row in figures["requests"]),
    ]  # fmt: skip
    tests = figures.get("tests")
    if tests:
        passed = tests["tests"] - tests["failures"] - tests["errors"] - tests["skipped"]
        lines.append(
            f"| `python -m pytest`: {passed} passed, {tests['skipped']} skipped, "
            f"{tests['failures'] + tests['errors']} failed ({tests['semantic_seconds']} s of them "
            f"the shapes models' end-to-end runs, `-m semantic`) | {tests['seconds']} |"
        )
    return "\n".join([*lines, END])


def write_readme(block: str) -> None:
    text = README.read_text(encoding="utf-8")
    start, end = text.index(BEGIN), text.index(END) + len(END)
    README.write_text(text[:start] + block + text[end:], encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", action="store_true", help="also run and time the test suite")
    parser.add_argument("--write", action="store_true", help="write docs/figures.json, README")
    parser.add_argument("--port", type=int, default=8765, help="port of the measured service")
    parser.add_argument("--note", default="", help="about the machine, e.g. 'shared with a build'")
    args = parser.parse_args(argv)
    old = json.loads(FIGURES.read_text()) if FIGURES.is_file() else {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        figures = {
            "date": datetime.date.today().isoformat(),
            "machine": machine(args.note),
            "shapes": measure_shapes(tmp),
        }
        server = serve_shapes(tmp, args.port)
        try:
            figures["requests"] = measure_requests(tmp, args.port)
        finally:
            server.terminate()
            server.wait(30)
        figures["tests"] = measure_tests(tmp) if args.tests else old.get("tests")
    block = render(figures)
    print(block)
    if args.write:
        FIGURES.write_text(json.dumps(figures, indent=2) + "\n")
        write_readme(block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
