import base64
import io
import xml.etree.ElementTree as ET

import pytest
import torch
from helpers import tiny_settings
from PIL import Image

from engine import ModelCache, generate
from engine.drawers import DRAWERS, DrawerContext
from engine.drawers.painting import PaintingDrawer
from engine.settings import Settings

SVG = "{http://www.w3.org/2000/svg}"


def _drawer(init: torch.Tensor | None = None, **overrides) -> PaintingDrawer:
    values = {"style": "painting", "size": (64, 48), "seed": 1, "strokes": 16} | overrides
    s = Settings(**values)
    g = torch.Generator().manual_seed(s.seed)
    return PaintingDrawer(DrawerContext(s, torch.device("cpu"), g, init))


def test_render_shape_and_range() -> None:
    image = _drawer().render()
    assert image.shape == (1, 3, 48, 64)
    assert image.min() >= 0 and image.max() <= 1
    assert (image < 1).any()  # some strokes are visible on the white canvas


def test_parameter_groups_use_clipdraw_learning_rates() -> None:
    d = _drawer()
    groups = d.parameters()
    assert [g["lr"] for g in groups] == [1.0, 0.1, 0.01]
    points, widths, colours = (g["params"][0] for g in groups)
    assert points.shape == (16, 10, 2) and widths.shape == (16,) and colours.shape == (16, 4)
    doubled = _drawer(learning_rate=2.0).parameters()
    assert [g["lr"] for g in doubled] == pytest.approx([2.0, 0.2, 0.02])


def test_strokes_start_near_a_random_point_with_random_colours() -> None:
    d = _drawer(strokes=200)
    spread = (d.points - d.points[:, :1]).abs().amax(dim=(1, 2))  # (N,)
    assert spread.max() <= 0.05 * 9 * 64  # nine steps of at most 5% of the width
    assert d.points[:, 0, 0].std() > 10  # starts are spread over the canvas
    assert d.colours.min() >= 0 and d.colours.max() <= 1 and d.colours.std() > 0.2
    assert set(d.segments.tolist()) == {1, 2, 3}


def test_gradients_reach_points_widths_and_colours() -> None:
    d = _drawer()
    d.render().sum().backward()
    for group in d.parameters():
        (param,) = group["params"]
        assert param.grad is not None and param.grad.abs().sum() > 0


def test_clamp_keeps_widths_and_colours_in_range() -> None:
    d = _drawer()
    with torch.no_grad():
        d.widths[:8] = 100.0
        d.widths[8:] = -3.0
        d.colours.mul_(4).sub_(2)
    d.clamp_()
    assert d.widths[:8].eq(0.05 * 48).all() and d.widths[8:].eq(1.0).all()
    assert d.colours.min() == 0.0 and d.colours.max() == 1.0


def test_same_seed_same_start() -> None:
    assert torch.equal(_drawer().render(), _drawer().render())
    assert torch.equal(_drawer().points, _drawer().points)
    assert not torch.equal(_drawer().render(), _drawer(seed=2).render())


def test_init_image_is_the_background() -> None:
    init = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(0))
    d = _drawer(init=init)
    with torch.no_grad():
        d.colours[:, 3] = 0.0  # transparent strokes show the background alone
    assert torch.allclose(d.render(), init)
    href = ET.fromstring(d.to_svg()).find(f"{SVG}image").get("{http://www.w3.org/1999/xlink}href")
    png = Image.open(io.BytesIO(base64.b64decode(href.split(",", 1)[1])))
    assert png.size == (64, 48)


def test_svg_has_one_path_per_stroke_in_the_drawers_colours() -> None:
    d = _drawer()
    root = ET.fromstring(d.to_svg())
    assert root.find(f"{SVG}rect").get("fill") == "rgb(255,255,255)"
    paths = root.findall(f"{SVG}path")
    assert len(paths) == 16
    for path, colour, n in zip(paths, d.colours.tolist(), d.segments.tolist(), strict=True):
        rgb = tuple(round(c * 255) for c in colour[:3])
        assert path.get("stroke") == "rgb({},{},{})".format(*rgb)
        assert float(path.get("stroke-opacity")) == pytest.approx(colour[3], abs=1e-4)
        assert path.get("d").count("C ") == n


def test_a_few_steps_pull_the_strokes_towards_a_target() -> None:
    d = _drawer(strokes=32)
    target = torch.zeros(1, 3, 48, 64)
    target[:, 0] = 1.0  # all red
    opt = torch.optim.Adam(d.parameters())
    losses = []
    for _ in range(10):
        opt.zero_grad()
        loss = (d.render() - target).pow(2).mean()
        loss.backward()
        opt.step()
        d.clamp_()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.97


def test_painting_end_to_end_with_the_tiny_clip(models: ModelCache, monkeypatch) -> None:
    monkeypatch.setitem(DRAWERS, "painting", PaintingDrawer)  # until the registry lists it
    s = tiny_settings(style="painting", strokes=24, iterations=3)
    a = generate(s, models=models)
    b = generate(s, models=models)
    assert a.image.size == (32, 32) and len(a.losses) == 3
    assert a.svg is not None and len(ET.fromstring(a.svg).findall(f"{SVG}path")) == 24
    assert a.image.tobytes() == b.image.tobytes() and a.svg == b.svg
