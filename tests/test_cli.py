"""The `text2art` command, run in-process through `api.cli.main` and as a real subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_cli as run
from PIL import Image

FAST = ["--clip-model", "tiny-random", "--size", "32x32", "--cutouts", "4", "--device", "cpu"]


def test_generate_writes_png_and_prints_path_and_seed(tmp_path: Path, capsys) -> None:
    out = tmp_path / "a.png"
    code, stdout, _ = run(
        ["generate", "underwater city", "--style", "pixel art", "--iterations", "3",
         "--seed", "3", "--out", str(out), *FAST],
        capsys,
    )  # fmt: skip
    assert code == 0
    assert f"wrote {out}" in stdout and "seed 3" in stdout
    with Image.open(out) as img:
        assert img.size == (32, 32) and img.text["seed"] == "3"


def test_same_command_twice_gives_identical_files(tmp_path: Path, capsys) -> None:
    args = ["generate", "a cat", "--style", "Pixel Art", "--iterations", "3", "--seed", "5", *FAST]
    assert run([*args, "--out", str(tmp_path / "1.png")], capsys)[0] == 0
    assert run([*args, "--out", str(tmp_path / "2.png")], capsys)[0] == 0
    assert (tmp_path / "1.png").read_bytes() == (tmp_path / "2.png").read_bytes()


def test_from_png_reproduces(tmp_path: Path, capsys) -> None:
    first = tmp_path / "first.png"
    args = ["generate", "a dog", "--style", "pixel", "--iterations", "2", *FAST]
    assert run([*args, "--out", str(first)], capsys)[0] == 0  # random seed, reported
    again = ["generate", "--from", str(first), "--out", str(tmp_path / "b.png")]
    code, stdout, _ = run(again, capsys)
    assert code == 0
    assert first.read_bytes() == (tmp_path / "b.png").read_bytes()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--style", "watercolour"], "error: style: unknown style 'watercolour'; choose one of"),
        (["--iterations", "0"], "error: iterations: Input should be greater than or equal to 1"),
        (["--iterations", "1000000000"], "error: iterations: must be between 1 and 5000"),
        (["--size", "huge"], "error: size: expected WIDTHxHEIGHT"),
        (["--quality", "ultra"], "error: quality: unknown value 'ultra'"),
        (["--palette", "#12"], "error: palette: '#12' is neither a palette name"),
        (["--bogus", "1"], "error: No such option '--bogus'"),
        (["--clip-model", "ViT-B/33"],
         "error: clip_models: unknown CLIP model 'ViT-B/33'; choose one of ViT-B/32, "),
        (["--clip-model", "RN50:nope"], "error: clip_models: unknown CLIP model 'RN50:nope'"),
        (["--device", "foo"], "error: device: unknown device 'foo'; use cpu, cuda, cuda:N"),
        (["--sed", "3"], "error: No such option '--sed'; did you mean '--seed'?"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str, capsys) -> None:
    code, _, err = run(["generate", "a cat", "--style", "pixel art", *args], capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nosuch"], "error: No such command 'nosuch'"),
        (["models", "list", "--bogus"], "error: No such option '--bogus'"),
        (["serve", "--port", "x"], "error: Invalid value for '--port'"),
    ],
)
def test_usage_errors_of_every_command_are_one_line(args, message, capsys) -> None:
    code, _, err = run(args, capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), err


def one_error_line(err: str) -> str:
    """The only line of stderr, which must be there."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_an_unknown_flag_gets_no_far_fetched_suggestion(capsys) -> None:
    code, _, err = run(["generate", "a cat", "--colour", "red"], capsys)
    assert code == 2 and one_error_line(err) == "error: No such option '--colour'"  # not --out


def test_a_prompt_starting_with_a_dash_is_told_about_double_dash(capsys) -> None:
    code, _, err = run(["generate", "-a cat in a hat"], capsys)
    assert code == 2 and one_error_line(err) == (
        "error: No such option '-a'; a prompt that starts with '-' goes after '--': "
        "text2art generate -- '-a cat in a hat'"
    )


def test_a_prompt_over_the_limit_says_so_in_words(capsys) -> None:
    code, _, err = run(["generate", "a" * 1600, *FAST], capsys)
    assert code == 2 and one_error_line(err) == (
        "error: prompts: the text is 1600 characters long; at most 1000 are allowed"
    )


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_a_gpu_this_machine_lacks_is_one_line(
    device: str, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = ["generate", "a cat", "--clip-model", "tiny-random", "--iterations", "1"]
    code, _, err = run([*args, "--device", device], capsys)
    assert code == 2 and one_error_line(err) == (
        f"error: device: '{device}', but this machine has no CUDA GPU; use cpu"
    )


def test_from_a_foreign_or_missing_png_is_one_line(tmp_path: Path, capsys) -> None:
    foreign = tmp_path / "foreign.png"
    Image.new("RGB", (4, 4)).save(foreign)
    code, _, err = run(["generate", "--from", str(foreign)], capsys)
    assert code == 2 and err.strip().startswith("error: --from:") and "no text2art settings" in err
    code, _, err = run(["generate", "--from", str(tmp_path / "none.png")], capsys)
    assert code == 2 and err.strip().startswith("error: --from:") and len(err.splitlines()) == 1


def test_unwritable_output_is_one_line(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a file where a directory should be
    args = ["generate", "a cat", "--style", "pixel art", "--iterations", "1", *FAST]
    code, _, err = run([*args, "--out", str(blocker / "a.png")], capsys)
    assert code == 1 and "Traceback" not in err
    assert f"error: cannot write {blocker / 'a.png'}" in err


def test_empty_prompt_and_missing_prompt(capsys) -> None:
    code, _, err = run(["generate", "  ", "--style", "pixel art"], capsys)
    assert code == 2 and "error: prompts: the prompt is empty" in err
    code, _, err = run(["generate"], capsys)
    assert code == 2 and "give a PROMPT" in err


def test_help_lists_settings_flags(capsys) -> None:
    code, out, _ = run(["generate", "--help"], capsys)
    assert code == 0
    for flag in ("--style", "--quality", "--aspect", "--scale", "--size", "--iterations",
                 "--seed", "--cutouts", "--clip-model", "--out", "--video", "--from"):  # fmt: skip
        assert flag in out
    assert "Pixel-art grid as COLUMNSxROWS" in out  # help text comes from Settings


def test_console_script_runs_as_a_process(tmp_path: Path) -> None:
    out = tmp_path / "p.png"
    proc = subprocess.run(
        [sys.executable, "-m", "api.cli", "generate", "a tree", "--style", "pixel art",
         "--iterations", "2", "--seed", "1", "--out", str(out), *FAST],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "note: no CUDA GPU found, running on the CPU" in proc.stderr
    assert out.exists()
