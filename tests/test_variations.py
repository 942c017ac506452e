"""Variations: N pictures from the seeds seed, seed+1, ... in one optimisation batch; on the CPU
each is byte for byte its solo run, and its PNG reproduces it alone with `--from`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import run_cli, tiny_settings
from PIL import Image

from engine import ModelCache, Step, generate, list_drawers, resolve
from engine.errors import SettingsError
from engine.generate import SHEET_GAP, contact_sheet
from engine.output import read_png_settings


@pytest.mark.parametrize("style", list_drawers())
def test_each_variation_is_its_solo_run_byte_for_byte(style: str, models: ModelCache) -> None:
    batch = generate(tiny_settings(style=style, seed=5, variations=3), models=models)
    assert batch.seeds == [5, 6, 7] and len(batch.images) == 3
    solos = [generate(tiny_settings(style=style, seed=seed), models=models) for seed in (5, 6, 7)]
    for picture, solo in zip(batch.images, solos, strict=True):
        assert picture.tobytes() == solo.image.tobytes()
    assert batch.images[0].tobytes() != batch.images[1].tobytes()  # each its own start
    expected = [sum(s.losses[i] for s in solos) / 3 for i in range(len(batch.losses))]
    assert batch.losses == pytest.approx(expected, rel=1e-5)  # the mean over the pictures
    w, h = batch.images[0].size
    assert batch.image.size == (2 * w + SHEET_GAP, 2 * h + SHEET_GAP)  # the contact sheet
    if style == "painting":
        assert batch.svg is None and all(svg and svg.startswith("<svg") for svg in batch.svgs)


def test_one_picture_is_the_run_it_always_was(models: ModelCache) -> None:
    result = generate(tiny_settings(seed=9), models=models)
    assert result.images == [result.image] and result.seeds == [9]
    assert result.image.size == (32, 32) and len(result.losses) == 4


def test_progress_reads_the_loss_only_when_asked(models: ModelCache) -> None:
    steps: list[Step] = []
    result = generate(tiny_settings(variations=2), models=models, on_step=steps.append)
    assert [s.iteration for s in steps] == [1, 2, 3, 4]
    assert [s.loss for s in steps] == pytest.approx(result.losses)  # read afterwards: the same
    sheet = steps[-1].image()
    assert sheet.size == result.image.size  # a preview of every picture


def test_contact_sheets() -> None:
    tiles = [Image.new("RGB", (10, 6), c) for c in ("red", "green", "blue")]
    sheet = contact_sheet(tiles)
    assert sheet.size == (20 + SHEET_GAP, 12 + SHEET_GAP)
    assert sheet.getpixel((0, 0)) == (255, 0, 0) and sheet.getpixel((10 + SHEET_GAP, 0)) == (
        0,
        128,
        0,
    )
    assert sheet.getpixel((0, 6 + SHEET_GAP)) == (0, 0, 255)
    assert sheet.getpixel((10 + SHEET_GAP, 6 + SHEET_GAP)) == (255, 255, 255)  # no fourth
    assert contact_sheet(tiles[:1]) is tiles[0]


def test_variations_and_seed_bounds() -> None:
    assert resolve(tiny_settings(variations=4)).variations == 4
    with pytest.raises(SettingsError) as caught:  # the limits decide (one check: resolution)
        resolve(tiny_settings(variations=5))
    assert caught.value.field == "variations"
    assert caught.value.message == "must be between 1 and 4, got 5"
    with pytest.raises(SettingsError) as caught:
        resolve(tiny_settings(seed=2**63 - 2, variations=3))
    assert caught.value.field == "seed" and "at most 9223372036854775805" in caught.value.message


CLI = ["--clip-model", "tiny-random", "--iterations", "4", "--size", "32x32", "--cutouts", "8"]


def test_cli_writes_the_sheet_and_each_picture_and_from_reproduces_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "v.png"
    args = ["generate", "a red circle", "--style", "pixel art", "--seed", "3", *CLI]
    code, stdout, err = run_cli([*args, "--variations", "3", "--out", str(out)], capsys)
    assert code == 0, err
    names = [Path(line.removeprefix("wrote ")).name for line in stdout.splitlines()[:4]]
    assert names == ["v.png", "v-1.png", "v-2.png", "v-3.png"]
    assert "seeds 3, 4, 5 (the sheet v.png, then each picture)" in stdout
    assert read_png_settings(out)["variations"] == 3 and read_png_settings(out)["seed"] == 3
    second = read_png_settings(tmp_path / "v-2.png")
    assert second["seed"] == 4 and second["variations"] == 1
    again = tmp_path / "again.png"
    code, stdout, err = run_cli(["generate", "--from", str(tmp_path / "v-2.png"),
                                 "--out", str(again)], capsys)  # fmt: skip
    assert code == 0, err
    assert "seed 4" in stdout
    assert Image.open(again).tobytes() == Image.open(tmp_path / "v-2.png").tobytes()
    sheet = tmp_path / "sheet.png"
    code, _, err = run_cli(["generate", "--from", str(out), "--out", str(sheet)], capsys)
    assert code == 0, err
    assert Image.open(sheet).tobytes() == Image.open(out).tobytes()  # the whole batch again


def test_cli_refuses_five_variations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["generate", "a fox", *CLI, "--variations", "5",
                            "--out", str(tmp_path / "x.png")], capsys)  # fmt: skip
    assert code == 2 and "variations" in err and "Traceback" not in err


# -- on a GPU (`pytest -m gpu`) --------------------------------------------------------------
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("style", ["pixel art", "image"])
def test_the_loop_never_waits_for_the_gpu(style: str, models: ModelCache) -> None:
    """From the third iteration to the last, any host-device synchronisation is an error
    (torch's sync debug mode): the loss stays on the device and the cutouts' matrices go over
    from pinned memory without blocking. Only progress readers and the end read back."""
    watched: list[int] = []

    def on_step(step: Step) -> None:
        if step.iteration == 2:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
        elif step.iteration == step.total:
            torch.cuda.set_sync_debug_mode("default")
        elif step.iteration > 2:
            watched.append(step.iteration)

    settings = tiny_settings(style=style, device="cuda", iterations=8, variations=2)
    try:
        result = generate(settings, models=models, on_step=on_step)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert watched == [3, 4, 5, 6, 7] and len(result.losses) == 8


@pytest.mark.gpu
@needs_cuda
def test_on_the_gpu_each_variation_is_close_to_its_solo_run(models: ModelCache) -> None:
    """GPU kernels may sum in another order in a batch: each picture stays within 2/255 of its
    solo run on average (on the CPU they are byte-identical, tested above)."""
    batch = generate(tiny_settings(device="cuda", seed=5, variations=3), models=models)
    for picture, seed in zip(batch.images, (5, 6, 7), strict=True):
        solo = generate(tiny_settings(device="cuda", seed=seed), models=models).image
        a, b = (torch.tensor(list(p.getdata()), dtype=torch.float32) for p in (picture, solo))
        assert (a - b).abs().mean() <= 2.0, seed
