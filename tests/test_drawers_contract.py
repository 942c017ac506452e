"""The Drawer contract, checked for every registered style: a new drawer is covered for free."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
import torch
from helpers import run_cli

from engine import ModelCache, Settings, choices, generate, load_models, read_png_settings, resolve
from engine.drawers import (
    DEFAULT_STYLE,
    DRAWERS,
    DrawerContext,
    create_drawer,
    describe_styles,
    drawer_class,
    list_drawers,
    normalise_style,
    spellings,
)
from engine.drawers.pixel import PixelDrawer
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


# -- a style is one file: what it declares is what every other place uses ----------------------
def test_every_spelling_names_exactly_one_style() -> None:
    seen: dict[str, str] = {}
    for name in list_drawers():
        cls = drawer_class(name)
        for spelling in (name, *cls.aliases):
            for variant in (spelling, spelling.upper(), f"  {spelling.replace(' ', '_')} "):
                assert normalise_style(variant) == name
            squeezed = spelling.replace(" ", "").lower()
            assert seen.setdefault(squeezed, name) == name, f"{spelling!r} names two styles"
    assert spellings() == seen
    with pytest.raises(ValueError, match="choose one of 'image', 'painting', 'pixel art'"):
        normalise_style("watercolour")


def test_the_choices_and_help_texts_come_from_the_registry() -> None:
    assert choices("style") == tuple(list_drawers())
    described = Settings.model_fields["style"].description or ""
    for name in list_drawers():
        cls = drawer_class(name)
        assert name in described and (cls.medium in described)
        assert cls.summary and cls.default_lr > 0
    assert Settings().style == DEFAULT_STYLE


class _Mosaic(PixelDrawer):
    """A style that exists only in this test: registering it is all it takes."""

    name: ClassVar[str] = "mosaic"
    aliases: ClassVar[tuple[str, ...]] = ("tiles",)
    medium: ClassVar[str] = "tesserae"
    default_lr: ClassVar[float] = 0.07
    fast_lr: ClassVar[float | None] = 0.3


def test_a_registered_drawer_is_a_style_everywhere(
    monkeypatch: pytest.MonkeyPatch,
    models: ModelCache,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(DRAWERS, _Mosaic.name, _Mosaic)
    assert normalise_style("Tiles") == "mosaic" and "mosaic" in choices("style")  # type: ignore[operator]
    assert "mosaic (tesserae)" in describe_styles()
    s = _settings("tiles")
    assert (s.style, s.learning_rate, s.pixel_size is not None) == ("mosaic", 0.07, True)
    fast = resolve(Settings.create(prompts="a red circle", style="mosaic", clip_models=["shapes"]))
    assert fast.learning_rate == 0.3  # the shapes world is fast: the style's fast_lr
    image = resolve(Settings.create(prompts="a red circle", style="image", clip_models=["shapes"]))
    assert image.pixel_size is None  # decided by mosaic and pixel art, not by the image style
    result = generate(s.model_copy(update={"make_video": True}), models=models,
                      video_path=tmp_path / "m.mp4")  # fmt: skip
    assert result.video_path is not None and result.image.size == s.size
    out = tmp_path / "cli.png"
    code, stdout, err = run_cli(["generate", "x", "--style", "Tiles", "--clip-model", "tiny-random",
                                 "--size", "32x32", "--iterations", "1", "--out", str(out)],
                                capsys)  # fmt: skip
    assert code == 0, err
    assert read_png_settings(out)["style"] == "mosaic"
    assert "[image|painting|pixel art|mosaic]" in _generate_help(capsys)


@pytest.mark.parametrize("style", list_drawers())
def test_the_video_follows_the_style_pixelation(
    style: str, models: ModelCache, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import engine.video

    made: list[bool] = []
    real = engine.video.VideoRecorder

    def recorder(*args: object, pixelated: bool = False, **kw: object) -> object:
        made.append(pixelated)
        return real(*args, pixelated=pixelated, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(engine.video, "VideoRecorder", recorder)
    s = _settings(style).model_copy(update={"make_video": True})
    generate(s, models=models, video_path=tmp_path / "v.mp4")
    assert made == [drawer_class(style).pixelated]


@pytest.mark.parametrize("style", list_drawers())
def test_a_run_loads_the_models_its_style_uses(style: str) -> None:
    s = _settings(style)
    loaded = load_models(s, CPU).loaded()
    assert ("vqgan:tiny-random@cpu" in loaded) == drawer_class(style).uses_vqgan
    assert "clip:tiny-random@cpu" in loaded


def _generate_help(capsys: pytest.CaptureFixture[str]) -> str:
    code, stdout, _ = run_cli(["generate", "--help"], capsys)
    assert code == 0
    return " ".join(stdout.split())
