"""The README's examples as a new user pastes them: the pictures' commands, the first job."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from helpers import ROOT, run_cli

from scripts import make_animation_images, make_docs_images, readme_figures

README = (ROOT / "README.md").read_text(encoding="utf-8")


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)


def test_the_shapes_picture_is_made_by_the_commands_the_readme_shows() -> None:
    offline = README[README.index("### Offline models") :]
    block = next(b for b in bash_blocks(offline) if "--clip-model shapes" in b)
    shown = [ln for ln in block.splitlines() if ln.startswith("text2art generate")]
    assert shown == [" ".join(c.split()) for c in make_docs_images.COMMANDS]
    assert "python -m scripts.make_docs_images" in README
    assert README.index(block) < README.index("(docs/shapes.png)")


def test_the_animation_picture_is_made_by_the_commands_the_readme_shows() -> None:
    block = next(b for b in bash_blocks(README) if "--frames" in b)
    shown = [ln for ln in block.splitlines() if ln.startswith("text2art generate")]
    assert shown == [" ".join(c.split()) for c in make_animation_images.COMMANDS]
    assert "python -m scripts.make_animation_images" in README
    assert README.index(block) < README.index("(docs/animation.png)")
    assert (ROOT / "docs" / "animation.png").is_file()


def test_the_script_moves_each_output_into_its_folder(tmp_path: Path) -> None:
    args = make_docs_images.cli_args(make_docs_images.COMMANDS[0], tmp_path)
    assert args[:2] == ["generate", "a yellow star on a purple background"]
    assert args[args.index("--out") + 1] == str(tmp_path / "star.png")


def _curl_fields(command: str) -> dict[str, str]:
    return dict(re.findall(r'-F (\w+)="?([^"\s]+(?: [^"\s-][^"\s]*)*)"?', command))


def test_the_first_jobs_example_works_on_a_default_server(tmp_path: Path) -> None:
    from api.app import create_app
    from api.config import ServiceConfig

    jobs = README[README.index("## Jobs") :]
    first = next(b for b in bash_blocks(jobs) if "/jobs" in b)
    command = first.split("\n# ")[0].replace("\\\n", " ")
    fields = _curl_fields(command)
    assert fields["prompts"] == "a castle" and "email" not in fields
    config = ServiceConfig(
        output_dir=tmp_path, clip_models=["tiny-random"], preload=False,
        run_worker_in_process=False,
    )  # fmt: skip
    with TestClient(create_app(config)) as client:
        answer = client.post("/jobs", data=fields)
    assert answer.status_code == 202, answer.text


def test_e_mail_is_shown_after_the_smtp_settings() -> None:
    jobs = README[README.index("## Jobs") :]
    assert jobs.index("-F email=") > jobs.index("T2A_SMTP_HOST")


def test_the_measured_figures_are_the_scripts_and_in_one_place() -> None:
    """The README's figures are docs/figures.json as the script renders it, for the examples the
    README shows now; each of those examples finished within a minute when measured."""
    figures = json.loads((ROOT / "docs" / "figures.json").read_text())
    start, end = README.index(readme_figures.BEGIN), README.index(readme_figures.END)
    assert README[start : end + len(readme_figures.END)] == readme_figures.render(figures)
    measured = [row["example"] for row in figures["requests"]]
    assert measured == readme_figures.curl_examples(README)
    assert set(figures["shapes"]) == {"pixel art", "painting", "image"}
    # Nowhere else: no second copy of a shapes or test-suite timing.
    assert "| s per picture |" not in README and "tests in about" not in README


def test_the_readmes_database_revisions_are_the_newest() -> None:
    from api.jobs.migrate import head_revision

    head = head_revision()
    before = f"{int(head) - 1:04d}"
    assert f"# revision {before}; newest {head}: run `text2art db upgrade`" in README
    assert f"from revision {before} to {head}" in README
    assert f"is at revision {before}, this text2art needs {head}" in README


def test_the_readme_quotes_the_workers_line() -> None:
    from api.cli_worker import taking_jobs

    assert f"`{taking_jobs('HOST:PID:TOKEN', 'text2art')}`" in README


def test_the_readmes_error_examples_are_what_the_cli_says(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each `$ text2art ...` of the Command line section and the line it shows, on a CPU."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the README's machine
    section = README[README.index("## Command line") : README.index("### Prompts")]
    pairs = re.findall(r"^\$ text2art (.*)\n(error: .*)$", section, flags=re.MULTILINE)
    assert len(pairs) == 4
    for command, shown in pairs:
        code, _, err = run_cli(shlex.split(command), capsys)
        assert (code, err) == (2, shown + "\n"), command


def _fields(command: str) -> dict[str, str]:
    """The form fields of a curl example (`-F` or `-d`), files left out."""
    pairs = re.findall(r'-[Fd] (\w+)=("[^"]*"|\S+)', command)
    return {k: v.strip('"') for k, v in pairs if not v.startswith("@")}


def test_every_curl_example_is_a_small_run_on_the_shapes_models(tmp_path: Path) -> None:
    """Pasted against `text2art serve --clip-model shapes`, no example is much more work than
    one default picture of that world (64x64, 100 iterations): the widescreen one made a
    400x224 picture, 22 times that, and took 21 minutes."""
    from api.config import ServiceConfig
    from api.forms import resolve_settings, server_overrides
    from engine import Settings

    config = ServiceConfig(clip_models=["shapes"], output_dir=tmp_path, preload=False)
    one = 64 * 64 * 100
    for example in readme_figures.curl_examples(README):
        if "/generate" not in example and "/jobs" not in example:
            continue
        given = {**_fields(example), **server_overrides(config)}
        given.pop("public", None)
        s = resolve_settings(Settings.create(**given), config)
        work = s.size[0] * s.size[1] * s.iterations * s.variations
        assert work <= 2 * one, (example, s.size, s.iterations, s.variations)
