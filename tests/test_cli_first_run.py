"""What a new user meets first in `text2art`: bare commands, --version, the help, missing
weights, the progress output and `serve`'s first lines."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import httpx
import pytest
from helpers import ROOT, serving_in_thread
from helpers import run_cli as run

from api.cli import build_cli
from engine import Settings, __version__, catalog, presets, resolve, weights
from engine.errors import WeightsError


def _groups(group: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command group of the CLI, as the words that reach it ('' for the root)."""
    found = [path]
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            found += _groups(command, (*path, name))
    return found


GROUPS = _groups(build_cli())


def test_there_is_more_than_one_group() -> None:
    assert () in GROUPS and ("models",) in GROUPS


@pytest.mark.parametrize("words", GROUPS, ids=lambda w: " ".join(w) or "text2art")
def test_a_bare_group_prints_its_help_without_a_traceback(words, capsys) -> None:
    code, out, err = run(list(words), capsys)
    assert code == 2
    assert "Traceback" not in out + err and "IndexError" not in out + err
    # Its help (no_args_is_help), or one line saying a command is missing.
    helped = err.startswith("Usage: text2art") and "Commands:" in err
    assert helped or err == "error: Missing command.\n", err


def test_bare_text2art_as_a_process_prints_help_and_exits_2() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "api.cli"], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "Usage:" in proc.stderr and "generate" in proc.stderr


def test_version(capsys) -> None:
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and out == f"text2art {__version__}\n"


def test_version_does_not_import_torch() -> None:
    """`text2art --version` took 2.4-6.5 s: building the commands imported torch."""
    script = (
        "import sys\nfrom api.cli import main\ntry:\n    main(['--version'])\n"
        "except SystemExit as exc:\n    print(exc.code, 'torch' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert proc.stdout == f"text2art {__version__}\n0 False\n", proc.stderr


def test_the_command_list_shows_whole_sentences(capsys) -> None:
    code, out, _ = run(["--help"], capsys)
    assert code == 0
    assert "  generate  Generate an image from PROMPT (a PNG; SVG and MP4 beside it).\n" in out
    assert not [line for line in out.splitlines() if line.rstrip().endswith("e.g.")]


def test_models_download_names_each_model_once(capsys) -> None:
    code, _, err = run(["models", "download", "nope"], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    names = err.split("choose one of ")[1].strip().split(", ")
    assert names == list(dict.fromkeys(names)) and {"tiny-random", "shapes"} <= set(names)
    code, out, _ = run(["models", "download", "tiny-random"], capsys)
    assert code == 0 and out == "tiny-random is built in (random weights), nothing to download\n"


def test_db_current_in_an_empty_folder_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("T2A_OUTPUT_DIR", "T2A_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    code, out, _ = run(["db", "current"], capsys)
    assert code == 0 and list(tmp_path.iterdir()) == []
    assert out.startswith("no job database at outputs/jobs.db yet; newest revision 0006")


def test_typer_is_pinned_to_the_tested_range() -> None:
    from importlib.metadata import version

    text = (ROOT / "pyproject.toml").read_text()
    pin = re.search(r'"typer([^"]*)"', text)
    assert pin and "<" in pin.group(1), "typer needs an upper bound"
    assert version("typer").startswith("0.29.")


# -- help --------------------------------------------------------------------------------------


def test_generate_help_shows_types_and_choices_from_settings(capsys) -> None:
    code, out, _ = run(["generate", "--help"], capsys)
    assert code == 0
    flat = " ".join(out.split())  # click wraps long help lines
    for flag, kind in [("--iterations", "INTEGER"), ("--seed", "INTEGER"), ("--scale", "FLOAT"),
                       ("--cutouts", "INTEGER"), ("--size", "WIDTHxHEIGHT")]:  # fmt: skip
        assert f"{flag} {kind}" in flat, flag
    assert "--quality [draft|normal|better|best]" in flat
    assert "--aspect [widescreen|portrait|square]" in flat
    assert "--style [image|painting|pixel art]" in flat
    for name in catalog.known_clip_models():
        assert name in flat, f"--clip-model help omits {name}"
    for palette in presets.PALETTES:
        assert palette in flat, f"--palette help omits {palette}"


@pytest.mark.parametrize("words", [[], ["serve"], ["models"], ["models", "list"], ["worker"]])
def test_help_labels_have_no_bool_placeholder(words, capsys) -> None:
    code, out, _ = run([*words, "--help"], capsys)
    assert code == 0 and "<bool>" not in out and "--help" in out


def test_a_non_number_is_one_line_and_exit_2(capsys) -> None:
    code, _, err = run(["generate", "a cat", "--iterations", "many"], capsys)
    assert (
        code == 2
        and err == "error: Invalid value for '--iterations': 'many' is not a valid integer.\n"
    )


def test_the_cli_needs_a_prompt_as_the_readme_says(capsys) -> None:
    code, _, err = run(["generate", "--style", "pixel art"], capsys)
    assert code == 2 and "give a PROMPT" in err
    row = next(
        ln for ln in (ROOT / "README.md").read_text().splitlines() if ln.startswith("| `prompts`")
    )
    assert "required by the CLI" in row


# -- models and weights -------------------------------------------------------------------------


@pytest.mark.parametrize("name", [catalog.TINY, catalog.SHAPES])
def test_a_test_or_bundled_clip_brings_its_vqgan(name: str) -> None:
    alone = resolve(Settings.create(prompts="a cat", clip_models=[name]))
    assert alone.vqgan_model == name
    given = resolve(
        Settings.create(prompts="a", clip_models=[name], vqgan_model="imagenet_f16_1024")
    )
    assert given.vqgan_model == "imagenet_f16_1024"
    assert catalog.missing_files(alone.clip_models, alone.vqgan_model) == []


def test_the_service_agrees_on_the_tiny_models_vqgan(tmp_path: Path) -> None:
    from api.config import ServiceConfig
    from api.forms import resolve_settings, server_overrides

    config = ServiceConfig(output_dir=tmp_path, clip_models=["tiny-random"], preload=False)
    settings = Settings.create(prompts="a cat", **server_overrides(config))
    assert resolve_settings(settings, config).vqgan_model == "tiny-random"


def test_tiny_random_in_the_image_style_runs_with_an_empty_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("TEXT2ART_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "x.png"
    args = ["generate", "x", "--clip-model", "tiny-random", "--iterations", "2", "--size", "32x32",
            "--cutouts", "2", "--device", "cpu", "--out", str(out)]  # fmt: skip
    code, _, err = run(args, capsys)
    assert code == 0, err
    assert out.is_file() and not (tmp_path / "cache").exists()


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache and no network: every download fails."""

    def no_network(sources: Any, dest: Path, *args: Any, **kwargs: Any) -> Path:
        raise WeightsError(f"could not download {dest.name} (offline); put it at {dest}")

    monkeypatch.setenv("TEXT2ART_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(weights, "download", no_network)
    return tmp_path / "cache"


def test_missing_weights_are_all_reported_before_the_bar(offline: Path, capsys, caplog) -> None:
    caplog.set_level(logging.WARNING)
    code, _, err = run(["generate", "a castle", "--device", "cpu", "--iterations", "3"], capsys)
    assert code == 1
    assert "Traceback" not in err and "%|" not in err  # no progress bar was started
    assert "3 weights files missing" in err
    for label, path in [("CLIP ViT-B/32 weights", offline / "clip" / "ViT-B-32.pt"),
                        ("VQGAN imagenet_f16_16384 config", offline / "vqgan"),
                        ("VQGAN imagenet_f16_16384 checkpoint", offline / "vqgan")]:  # fmt: skip
        assert label in err and str(path) in err
    assert "--clip-model shapes" in err
    assert "No pretrained weights" not in err + caplog.text


def test_the_catalog_lists_what_a_run_needs(offline: Path) -> None:
    s = resolve(Settings.create(prompts="a", clip_models=["ViT-B/32", "shapes"], style="painting"))
    needed = catalog.run_files(s.clip_models, None)  # painting: no VQGAN
    assert [label for label, _, _ in needed] == ["CLIP ViT-B/32 weights"]
    assert catalog.missing_files(s.clip_models, None) == needed
    own = catalog.run_files(["RN50=/w/a,b.pt", "RN50:random"], "shapes")
    assert own == [("CLIP RN50=/w/a,b.pt weights", None, Path("/w/a,b.pt"))]


def test_repeated_clip_model_flags_keep_a_comma_in_a_path(offline: Path, capsys) -> None:
    args = ["generate", "a cat", "--clip-model", "RN50=/nowhere/a,b.pt", "--clip-model",
            "tiny-random", "--style", "pixel art", "--device", "cpu"]  # fmt: skip
    code, _, err = run(args, capsys)
    assert code == 1 and "1 weights file missing" in err
    assert "CLIP RN50=/nowhere/a,b.pt weights: no file at /nowhere/a,b.pt" in err


def test_random_open_clip_models_log_no_warning(caplog) -> None:
    from engine.perceptor import open_clip_model

    caplog.set_level(logging.WARNING)
    open_clip_model("RN50:random", "RN50-quickgelu", None)
    assert "No pretrained weights" not in caplog.text
    logging.getLogger().warning("still heard")  # the filter is gone after the call
    assert "still heard" in caplog.text


def test_the_cpu_estimate_is_its_own_line_through_tqdm(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "api.cli", "generate", "a tree", "--style", "pixel art",
         "--iterations", "8", "--seed", "1", "--out", str(tmp_path / "p.png"),
         "--clip-model", "tiny-random", "--size", "32x32", "--cutouts", "2", "--device", "cpu"],
        capture_output=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    err = proc.stderr.decode()  # bytes: text mode would turn the bar's '\r' into newlines
    assert proc.returncode == 0, err
    # tqdm.write clears the bar ('\r'), writes the line and draws the bar again below it.
    assert re.search(r"\r\s*\restimated time left on CPU: about \d+ s\n", err), repr(err)


# -- serve --------------------------------------------------------------------------------------


def test_share_without_a_token_names_the_variable_only(monkeypatch, capsys) -> None:
    monkeypatch.delenv("NGROK_AUTHTOKEN", raising=False)
    code, _, err = run(["serve", "--share"], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert "NGROK_AUTHTOKEN" in err and "argument" not in err


def test_serve_prints_the_page_and_docs_addresses(tmp_path: Path, capsys) -> None:
    from api.config import ServiceConfig
    from api.serve import serve

    config = ServiceConfig(output_dir=tmp_path, preload=False)
    with serving_in_thread(serve, host="127.0.0.1", port=0, config=config) as server:
        port = server.servers[0].sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/docs", timeout=10).status_code == 200
    out = capsys.readouterr().out
    assert f"Web page: {base}/  API docs: {base}/docs\n" in out


def test_usage_error_of_the_token_is_a_click_usage_error(monkeypatch) -> None:
    from api.serve import find_token

    monkeypatch.delenv("NGROK_AUTHTOKEN", raising=False)
    with pytest.raises(click.UsageError, match="set NGROK_AUTHTOKEN"):
        find_token()


def test_serve_takes_clip_models_from_its_flag(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import api.serve

    seen: list[Any] = []
    monkeypatch.setattr(api.serve, "serve", lambda *args: seen.append(args))
    monkeypatch.setenv("T2A_CLIP_MODELS", "tiny-random")
    code, _, _ = run(["serve", "--clip-model", "shapes", "--port", "8123"], capsys)
    assert code == 0 and seen[0][3].clip_models == ["shapes"] and seen[0][1] == 8123
    code, _, _ = run(["serve"], capsys)  # without the flag: T2A_CLIP_MODELS
    assert code == 0 and seen[1][3].clip_models == ["tiny-random"]


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--clip-model", "ViT-B/33"], "error: clip_models: unknown CLIP model 'ViT-B/33'; choose "),
     (["--clip-model", "shapes", "--clip-model", "RN50:x"], "error: clip_models: unknown CLIP")],
)  # fmt: skip
def test_serve_refuses_an_unknown_model_in_one_line(args: list[str], message: str, capsys) -> None:
    code, out, err = run(["serve", *args], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith(message), err
    assert "Web page" not in out


def test_serve_share_without_a_network_is_one_line_and_exit_1(tmp_path: Path, capsys) -> None:
    from api.config import ServiceConfig
    from api.serve import serve

    def no_network(port: int, token: str) -> Any:
        raise OSError("[Errno -2] Name or service not known\n...98 more lines of pyngrok...")

    config = ServiceConfig(output_dir=tmp_path, preload=False, clip_models=["tiny-random"])
    with pytest.raises(SystemExit) as exited:
        serve(port=0, share=True, config=config, authtoken="t", tunnel_factory=no_network)
    err = capsys.readouterr().err
    assert exited.value.code == 1 and err == (
        "error: --share: cannot open the ngrok tunnel: OSError: [Errno -2] Name or service not "
        "known\n"
    )


def test_serve_without_weights_says_so_before_it_listens(
    offline: Path, tmp_path: Path, capsys
) -> None:
    from api.config import ServiceConfig
    from api.runner import WEIGHTS_FIX
    from api.serve import check_models

    check_models(ServiceConfig(output_dir=tmp_path, preload=False))
    err = capsys.readouterr().err
    assert err == (
        "warning: not in the weights cache yet: CLIP ViT-B/32 weights, VQGAN imagenet_f16_16384 "
        f"config, VQGAN imagenet_f16_16384 checkpoint. The warm-up downloads them (needs the "
        f"network). {WEIGHTS_FIX}.\n"
    )
    check_models(ServiceConfig(output_dir=tmp_path, preload=False, clip_models=["shapes"]))
    assert capsys.readouterr().err == ""  # bundled: nothing to say
