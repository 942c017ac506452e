"""The Drawer contract, checked for every registered style: a new drawer is covered for free."""

from __future__ import annotations

import pytest
import torch

from engine import ModelCache, Settings, resolve
from engine.drawers import DrawerContext, create_drawer, drawer_class, list_drawers
from engine.resolve import ResolvedSettings

CPU = torch.device("cpu")


def _settings(style: str, **values: object) -> ResolvedSettings:
    base = {
        "prompts": "a red circle",
        "style": style,
        "clip_models": ["tiny-random"],
        "vqgan_model": "tiny-random",
        "size": (50, 38),
        "iterations": 2,
        "cutouts": 2,
        "strokes": 16,
        "seed": 5,
        "device": "cpu",
    }
    return resolve(Settings.create(**{**base, **values}))


def _drawer(style: str, models: ModelCache, init: torch.Tensor | None = None) -> object:
    s = _settings(style)
    g = torch.Generator().manual_seed(s.seed)
    return create_drawer(style, DrawerContext(s, CPU, g, init, models))


@pytest.fixture(scope="module")
def models() -> ModelCache:
    return ModelCache()


def test_registry_names_match_the_classes() -> None:
    assert set(list_drawers()) == {"image", "painting", "pixel art"}
    for name in list_drawers():
        assert drawer_class(name).name == name
    with pytest.raises(ValueError, match="choose one of"):
        drawer_class("sculpture")


@pytest.mark.parametrize("style", list_drawers())
def test_resolve_hook_trims_the_size_and_sets_a_learning_rate(style: str) -> None:
    s = _settings(style)
    cls = drawer_class(style)
    w, h = s.size
    assert w <= 50 and h <= 38 and w % cls.multiple == 0 and h % cls.multiple == 0
    assert s.learning_rate > 0
    given = _settings(style, learning_rate=0.5)
    assert given.learning_rate == 0.5
    assert resolve(s) == s  # the hook is stable: resolving twice changes nothing


@pytest.mark.parametrize("style", list_drawers())
def test_render_is_an_rgb_image_in_range_at_the_resolved_size(
    style: str, models: ModelCache
) -> None:
    d = _drawer(style, models)
    s = d.ctx.settings  # type: ignore[attr-defined]
    image = d.render().detach()  # type: ignore[attr-defined]
    w, h = s.size
    assert image.shape == (1, 3, h, w) and image.dtype == torch.float32
    assert image.device.type == "cpu"
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0


@pytest.mark.parametrize("style", list_drawers())
def test_parameters_get_gradients_and_clamp_keeps_the_range(style: str, models: ModelCache) -> None:
    d = _drawer(style, models)
    groups = d.parameters()  # type: ignore[attr-defined]
    assert groups and all(g["lr"] > 0 and g["params"] for g in groups)
    params = [p for g in groups for p in g["params"]]
    assert all(p.requires_grad for p in params)
    d.render().mean().backward()  # type: ignore[attr-defined]
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in params)
    opt = torch.optim.Adam(groups)
    for p in params:
        p.grad = torch.full_like(p, -1e3)  # a huge step out of range
    opt.step()
    d.clamp_()  # type: ignore[attr-defined]
    image = d.render().detach()  # type: ignore[attr-defined]
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0


@pytest.mark.parametrize("style", list_drawers())
def test_same_seed_same_start(style: str, models: ModelCache) -> None:
    a, b = _drawer(style, models), _drawer(style, models)
    assert torch.equal(a.render(), b.render())  # type: ignore[attr-defined]


@pytest.mark.parametrize("style", list_drawers())
def test_init_image_is_the_starting_point(style: str, models: ModelCache) -> None:
    s = _settings(style)
    w, h = s.size
    init = torch.zeros(1, 3, h, w)
    init[:, 0] = 1.0  # pure red
    image = _drawer(style, models, init).render()  # type: ignore[attr-defined]
    red = image[0, 0].mean() - image[0, 1:].mean()
    random_start = _drawer(style, models).render()  # type: ignore[attr-defined]
    assert float(red) > float(random_start[0, 0].mean() - random_start[0, 1:].mean())


@pytest.mark.parametrize("style", list_drawers())
def test_svg_is_none_or_a_whole_document(style: str, models: ModelCache) -> None:
    svg = _drawer(style, models).to_svg()  # type: ignore[attr-defined]
    if svg is not None:
        assert svg.lstrip().startswith(("<svg", "<?xml")) and svg.rstrip().endswith("</svg>")
