"""Image prompts and init images: CLIP's preprocessing, cropped before resizing (bounded memory)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import png_header_only, tiny_settings
from PIL import Image

from api.cli import main
from engine import ModelCache, SettingsError, generate
from engine.images import load_image_tensor
from engine.perceptor import _square_tensor


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


@pytest.mark.parametrize("shape", [(300, 200), (200, 300), (97, 61)])
def test_image_prompt_preprocessing_is_openai_clips(shape: tuple[int, int]) -> None:
    """OpenAI CLIP: Resize(size, BICUBIC) of the short side, then CenterCrop(size)."""
    from torchvision import transforms

    img = noise(*shape)
    reference = transforms.Compose(
        [
            transforms.Resize(64, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(64),
            transforms.ToTensor(),
        ]
    )(img)
    ours = _square_tensor(img, 64, torch.device("cpu"))
    assert ours.shape == (1, 3, 64, 64)
    assert (ours[0] - reference).abs().mean() < 0.03


PEAK_SCRIPT = """
import resource, sys, torch
from PIL import Image
from engine.perceptor import _square_tensor
img = Image.new("RGB", (int(sys.argv[1]), 1), (200, 30, 30))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = _square_tensor(img, 32, torch.device("cpu"))
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(tuple(out.shape), round(out.mean().item(), 3), grown // 1024)
"""


def test_a_very_wide_image_prompt_costs_no_memory() -> None:
    """A 349525x1 strip (419 bytes as PNG) once grew the process by 4 GB at a 32-px CLIP."""
    script = textwrap.dedent(PEAK_SCRIPT)
    done = subprocess.run(
        [sys.executable, "-c", script, "349525"], capture_output=True, text=True, check=True
    )
    shape, mean, grown_mb = done.stdout.split(")")[0] + ")", *done.stdout.split(")")[1].split()
    assert shape == "(1, 3, 32, 32)"
    assert float(mean) == pytest.approx((200 + 30 + 30) / 3 / 255, abs=0.01)
    assert int(grown_mb) < 100, f"the process grew by {grown_mb} MB"


def test_init_image_is_cropped_to_the_aspect_not_stretched(tmp_path: Path) -> None:
    """A wide init image keeps its centre: left red, centre green, right blue -> all green."""
    img = Image.new("RGB", (300, 100), (0, 255, 0))
    img.paste((255, 0, 0), (0, 0, 100, 100))
    img.paste((0, 0, 255), (200, 0, 300, 100))
    path = tmp_path / "rgb.png"
    img.save(path)
    t = load_image_tensor(str(path), (32, 32), torch.device("cpu"))
    assert t.shape == (1, 3, 32, 32)
    assert t[0, 1].mean() > 0.95 and t[0, 0].mean() < 0.05 and t[0, 2].mean() < 0.05


def test_wide_images_run_end_to_end(models: ModelCache, tmp_path: Path) -> None:
    wide = tmp_path / "wide.png"
    Image.new("RGB", (349525, 1), (255, 0, 0)).save(wide)
    assert wide.stat().st_size < 2000  # a few hundred bytes of PNG
    r = generate(
        tiny_settings(init_image=str(wide), image_prompts=[str(wide)], iterations=1),
        models=models,
    )
    assert r.image.size == (32, 32)
    px = np.asarray(r.image).reshape(-1, 3).mean(axis=0)
    assert px[0] > 200 and px[1] < 60  # started from the strip's red


def test_images_over_the_engines_pixel_bound_name_the_field(
    models: ModelCache, tmp_path: Path
) -> None:
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_header_only(9000, 9000))  # 81 MP claimed by a 100-byte file
    for field in ("init_image", "image_prompts"):
        value = str(huge) if field == "init_image" else [str(huge)]
        with pytest.raises(SettingsError, match="81000000 pixels") as err:
            generate(tiny_settings(**{field: value}), models=models)
        assert err.value.field == field


def test_cli_takes_a_wide_image_prompt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wide = tmp_path / "wide.png"
    Image.new("RGB", (349525, 1), (0, 0, 255)).save(wide)
    out = tmp_path / "a.png"
    args = ["generate", "a cat", "--style", "pixel art", "--iterations", "1", "-o", str(out)]
    args += ["--clip-model", "tiny-random", "--size", "32x32", "--cutouts", "4"]
    main([*args, "--device", "cpu", "--image-prompt", str(wide), "--init-image", str(wide)])
    assert Image.open(out).size == (32, 32)
