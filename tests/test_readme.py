"""The README's examples as a new user pastes them: the pictures' commands, the first job."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient
from helpers import ROOT

from scripts import make_animation_images, make_docs_images

README = (ROOT / "README.md").read_text(encoding="utf-8")


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)


def test_the_shapes_picture_is_made_by_the_commands_the_readme_shows() -> None:
    block = next(
        b for b in bash_blocks(README) if "--clip-model shapes" in b and "--frames" not in b
    )
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
