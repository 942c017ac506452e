"""The image style: a VQGAN latent, quantised and decoded, optimised through the render."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from helpers import tiny_settings

import engine.drawers as drawers
from engine import ModelCache, Settings, SettingsError, generate
from engine.drawers.base import DrawerContext
from engine.drawers.image import CHECKPOINT_MIN_PIXELS, ImageDrawer, clamp_st
from engine.vqgan import TINY_CONFIG, build_vqgan


def _settings(size: tuple[int, int] = (42, 37), **overrides: Any) -> Settings:
    """Resolved image-style settings on the tiny VQGAN (resolved by the drawer alone)."""
    values: dict[str, Any] = {"style": "image", "vqgan_model": "tiny-random", "seed": 7}
    values.update(overrides)
    s = Settings.create(**values)
    return s.model_copy(update=ImageDrawer.resolve(s, size))


def _drawer(
    s: Settings, models: ModelCache | None, seed: int = 0, init: torch.Tensor | None = None
) -> ImageDrawer:
    ctx = DrawerContext(s, torch.device("cpu"), torch.Generator().manual_seed(seed), init, models)
    return ImageDrawer(ctx)


def test_resolve_trims_to_the_vqgan_factor() -> None:
    s = Settings.create(style="image")
    assert ImageDrawer.resolve(s, (150, 150))["size"] == (144, 144)  # draft square, f16
    assert ImageDrawer.resolve(s, (160, 90))["size"] == (160, 80)
    gumbel = Settings.create(style="image", vqgan_model="openimages_f8_8192")
    assert ImageDrawer.resolve(gumbel, (160, 90))["size"] == (160, 88)
    tiny = Settings.create(style="image", vqgan_model="tiny-random")
    assert ImageDrawer.resolve(tiny, (42, 37))["size"] == (40, 36)
    assert ImageDrawer.resolve(s, (150, 150))["learning_rate"] == 0.2
    lr = Settings.create(style="image", learning_rate=0.05)
    assert ImageDrawer.resolve(lr, (150, 150))["learning_rate"] == 0.05


def test_resolve_decides_decoder_checkpointing() -> None:
    s = Settings.create(style="image")
    assert CHECKPOINT_MIN_PIXELS == 640 * 352
    assert ImageDrawer.resolve(s, (640, 360))["decoder_checkpointing"] is True  # best, wide
    assert ImageDrawer.resolve(s, (480, 270))["decoder_checkpointing"] is False  # better, wide
    off = Settings.create(style="image", decoder_checkpointing=False)
    assert ImageDrawer.resolve(off, (640, 360))["decoder_checkpointing"] is False
    on = Settings.create(style="image", decoder_checkpointing=True)
    assert ImageDrawer.resolve(on, (144, 144))["decoder_checkpointing"] is True


def test_unknown_vqgan_model_names_the_field() -> None:
    s = Settings.create(style="image", vqgan_model="imagenet_f32")
    with pytest.raises(SettingsError, match="vqgan_model: unknown VQGAN model 'imagenet_f32'") as e:
        ImageDrawer.resolve(s, (150, 150))
    assert e.value.field == "vqgan_model" and "imagenet_f16_16384" in e.value.message


def test_render_shape_range_and_gradient(models: ModelCache) -> None:
    d = _drawer(_settings(), models)
    assert d.z.shape == (1, TINY_CONFIG.embed_dim, 9, 10)
    image = d.render()
    assert image.shape == (1, 3, 36, 40) and image.dtype == torch.float32
    assert image.min() >= 0.0 and image.max() <= 1.0
    image.mean().backward()
    assert d.z.grad is not None and d.z.grad.abs().sum() > 0
    (group,) = d.parameters()
    assert group["params"] == [d.z] and group["lr"] == 0.2


def test_start_is_made_of_codebook_rows(models: ModelCache) -> None:
    d = _drawer(_settings(), models)
    rows = d.z.detach().movedim(1, -1).reshape(-1, TINY_CONFIG.embed_dim)  # (90, D)
    dist = (rows[:, None] - d.vqgan.codebook[None]).abs().amax(-1).amin(1)
    assert dist.max() == 0
    assert len({tuple(r.tolist()) for r in rows}) > 10  # drawn, not one repeated code


def test_clamp_keeps_the_latent_in_the_codebook_range(models: ModelCache) -> None:
    d = _drawer(_settings(), models)
    with torch.no_grad():
        d.z.mul_(100.0)
    d.clamp_()
    lo = d.vqgan.codebook.min(0).values.view(1, -1, 1, 1)
    hi = d.vqgan.codebook.max(0).values.view(1, -1, 1, 1)
    assert torch.all(d.z >= lo) and torch.all(d.z <= hi)
    assert torch.any(d.z == hi) and torch.any(d.z == lo)  # clamped, not just scaled


def test_adam_step_changes_the_image(models: ModelCache) -> None:
    d = _drawer(_settings(), models)
    opt = torch.optim.Adam(d.parameters())
    before = d.render()
    target = torch.zeros_like(before)
    for _ in range(3):
        opt.zero_grad()
        (d.render() - target).square().mean().backward()
        opt.step()
        d.clamp_()
    after = d.render().detach()
    assert not torch.equal(before.detach(), after)
    assert after.square().mean() < before.detach().square().mean()


def test_same_generator_seed_gives_identical_renders(models: ModelCache) -> None:
    s = _settings()
    a = _drawer(s, models, seed=3).render()
    b = _drawer(s, ModelCache(), seed=3).render()  # fresh cache: same tiny weights too
    c = _drawer(s, models, seed=4).render()
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_init_image_is_encoded(models: ModelCache) -> None:
    s = _settings()
    init = torch.rand(1, 3, 36, 40, generator=torch.Generator().manual_seed(1))
    d = _drawer(s, models, init=init)
    with torch.no_grad():
        expected = d.vqgan.encode(init * 2 - 1)
    assert torch.equal(d.z.detach(), expected)
    assert d.z.requires_grad and d.render().shape == (1, 3, 36, 40)


def test_works_without_a_model_cache() -> None:
    d = _drawer(_settings(size=(16, 16)), None)
    assert d.render().shape == (1, 3, 16, 16)


def test_gumbel_model(models: ModelCache) -> None:
    gumbel = dataclasses.replace(TINY_CONFIG, gumbel=True)
    cpu = torch.device("cpu")
    models.get("vqgan", "tiny-gumbel", cpu, lambda: build_vqgan(gumbel, torch.Generator()))
    s = Settings.create(
        style="image", vqgan_model="tiny-gumbel", size=(32, 24), learning_rate=0.2, seed=1
    )
    d = _drawer(s, models)
    assert d.vqgan.config.gumbel
    image = d.render()
    assert image.shape == (1, 3, 24, 32) and image.min() >= 0 and image.max() <= 1
    image.mean().backward()
    assert d.z.grad is not None and d.z.grad.abs().sum() > 0
    init = torch.rand(1, 3, 24, 32, generator=torch.Generator().manual_seed(2))
    assert _drawer(s, models, init=init).z.shape == (1, gumbel.embed_dim, 6, 8)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_checkpointing_flag_changes_nothing_but_memory(
    models: ModelCache, checkpointing: bool
) -> None:
    results = []
    for flag in (False, checkpointing):
        d = _drawer(_settings(decoder_checkpointing=flag), models, seed=5)
        assert d.checkpointing is flag
        image = d.render()
        image.square().mean().backward()
        assert d.z.grad is not None
        results.append((image.detach(), d.z.grad))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])


def test_clamp_st_passes_gradients_back_toward_the_range() -> None:
    x = torch.tensor([-0.5, 0.5, 1.5, -0.5, 1.5], requires_grad=True)
    y = clamp_st(x)
    assert y.tolist() == [0.0, 0.5, 1.0, 0.0, 1.0]
    # Gradients of a loss: descent moves x by -grad. Toward the range passes, away is stopped.
    y.backward(torch.tensor([-1.0, 2.0, 3.0, 1.0, -1.0]))
    assert x.grad is not None
    assert x.grad.tolist() == [-1.0, 2.0, 3.0, 0.0, 0.0]


def test_image_style_end_to_end_with_tiny_clip(
    models: ModelCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(drawers.DRAWERS, ImageDrawer.name, ImageDrawer)  # until registered
    s = tiny_settings(style="image", vqgan_model="tiny-random", size=(34, 30), iterations=3)
    a = generate(s, models=models)
    b = generate(s, models=models)
    assert a.image.size == (32, 28)
    assert a.settings.size == (32, 28) and a.settings.decoder_checkpointing is False
    assert len(a.losses) == 3 and all(loss == loss for loss in a.losses)  # finite, not NaN
    assert a.losses == b.losses and a.image.tobytes() == b.image.tobytes()
