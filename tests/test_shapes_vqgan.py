"""The bundled 'shapes' VQGAN: real taming files, read by the real loader; reconstructs renders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from engine import ModelCache, Settings, generate
from engine import vqgan as vq
from engine.catalog import SHAPES, vqgan_factor, vqgan_paths
from engine.catalog import load_vqgan as load_named_vqgan
from engine.checkpoints import read_checkpoint
from engine.shapes.world import COLOURS, random_scene, render, to_array
from engine.vqgan import (
    VQGAN,
    check_keys,
    load_vqgan,
)

MAX_BYTES = 5 * 1024 * 1024
# Measured on the first 6 held-out 64 px renders (rng seed 7_777): mean abs error 0.029; ~2x margin.
MAX_MEAN_ABS_ERROR = 0.06
NAMED = torch.tensor(list(COLOURS.values()), dtype=torch.float32) / 255.0  # (9, 3)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def shapes_vqgan(models: ModelCache) -> VQGAN:
    model: VQGAN = models.vqgan(SHAPES, CPU)
    return model


def _held_out(n: int, size: int = 64) -> torch.Tensor:
    """n renders (n, 3, size, size) in [0, 1] from a seed the training script never uses."""
    rng = np.random.default_rng(7_777)
    imgs = [to_array(render(random_scene(rng, two=0.3), size)) for _ in range(n)]
    return torch.from_numpy(np.stack(imgs))


def _named(x: torch.Tensor) -> torch.Tensor:
    """Index of the nearest named colour per pixel: (B, 3, H, W) -> (B, H, W)."""
    return (x.movedim(1, -1)[..., None, :] - NAMED).pow(2).sum(-1).argmin(-1)


def test_assets_are_a_small_taming_pair() -> None:
    config_path, weights_path = vqgan_paths(SHAPES)
    assert config_path.is_file() and weights_path.is_file()
    assert weights_path.stat().st_size <= MAX_BYTES and config_path.stat().st_size < 4096
    model = yaml.safe_load(config_path.read_text(encoding="utf-8"))["model"]
    assert model["target"] == "taming.models.vqgan.VQModel"
    params = model["params"]
    assert params["lossconfig"]["target"] == "taming.modules.losses.vqperceptual.DummyLoss"
    assert params["ddconfig"]["double_z"] is False and params["ddconfig"]["in_channels"] == 3
    with torch.device("meta"):
        empty = VQGAN(vq.read_config(config_path)[0])
    weights = read_checkpoint(weights_path)
    check_keys(empty, weights, str(weights_path))  # taming's key names and shapes, no extras
    assert weights["quantize.embedding.weight"].shape == (params["n_embed"], params["embed_dim"])


def test_named_load_goes_through_the_taming_loader(shapes_vqgan: VQGAN) -> None:
    direct = load_vqgan(*vqgan_paths(SHAPES))
    named = load_named_vqgan(SHAPES)
    for model in (direct, named):
        assert model.state_dict().keys() == shapes_vqgan.state_dict().keys()
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in direct.state_dict().items())
        assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert direct.codebook.dtype == torch.float32


def test_factor_comes_from_the_catalog_without_loading_weights(
    shapes_vqgan: VQGAN, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("vqgan_factor read the weights")

    monkeypatch.setattr(vq, "read_checkpoint", refuse)
    assert vqgan_factor(SHAPES) == shapes_vqgan.f == 4
    # The catalog's number agrees with the bundled yaml's architecture.
    assert vq.read_config(vqgan_paths(SHAPES)[0])[0].factor == vqgan_factor(SHAPES)


def test_unknown_name_lists_shapes() -> None:
    for call in (vqgan_factor, load_named_vqgan):
        with pytest.raises(ValueError, match="unknown VQGAN model 'shape'") as err:
            call("shape")
        assert "shapes" in str(err.value).split("choose one of")[1].split(", ")


@torch.no_grad()
def test_reconstructs_held_out_renders(shapes_vqgan: VQGAN) -> None:
    x = _held_out(6)  # (6, 3, 64, 64)
    z = shapes_vqgan.encode(x * 2 - 1)
    assert z.shape == (6, shapes_vqgan.config.embed_dim, 16, 16)
    rec = ((shapes_vqgan.decode(z) + 1) / 2).clamp(0, 1)
    assert rec.shape == x.shape
    assert float((rec - x).abs().mean()) < MAX_MEAN_ABS_ERROR
    before, after = _named(x).flatten(1), _named(rec).flatten(1)  # (6, H*W)
    assert torch.equal(before.mode(1).values, after.mode(1).values)  # dominant colour kept
    assert float((before == after).float().mean()) > 0.9


def test_image_style_end_to_end(models: ModelCache) -> None:
    s = Settings.create(
        prompts="a red circle",
        style="image",
        clip_models=["tiny-random"],
        vqgan_model="shapes",
        size=(64, 64),
        iterations=3,
        cutouts=4,
        seed=1,
        device="cpu",
    )
    a = generate(s, models=models)
    b = generate(s, models=models)
    assert a.image.size == (64, 64) and a.settings.size == (64, 64)
    assert len(a.losses) == 3 and all(np.isfinite(a.losses))
    assert a.image.tobytes() == b.image.tobytes()
    assert f"vqgan:{SHAPES}@cpu" in models.loaded()
