import torch
from helpers import tiny_settings

from engine import resolve
from engine.drawers import DrawerContext, create_drawer, list_drawers
from engine.presets import PALETTES, parse_palette


def _drawer(init=None, **overrides):
    s = resolve(tiny_settings(size=(48, 32), **overrides))
    g = torch.Generator().manual_seed(s.seed)
    return create_drawer("pixel art", DrawerContext(s, torch.device("cpu"), g, init))


def test_registry_lists_pixel_art() -> None:
    assert "pixel art" in list_drawers()


def test_render_shape_range_and_cells() -> None:
    d = _drawer(pixel_size="12x8")
    img = d.render()
    assert img.shape == (1, 3, 32, 48)
    assert img.min() >= 0 and img.max() <= 1
    # Each 4x4 cell is one flat colour.
    cells = img.unfold(2, 4, 4).unfold(3, 4, 4)  # (1, 3, 8, 12, 4, 4)
    assert torch.all(cells.amax(dim=(-1, -2)) == cells.amin(dim=(-1, -2)))


def test_gradients_reach_the_cells_and_clamp_keeps_range() -> None:
    d = _drawer()
    d.render().sum().backward()
    (group,) = d.parameters()
    (cells,) = group["params"]
    assert cells.grad is not None and cells.grad.abs().sum() > 0
    with torch.no_grad():
        cells.add_(5.0)
    d.clamp_()
    assert cells.max() == 1.0


def test_every_pixel_is_in_the_palette() -> None:
    d = _drawer(palette="gameboy")
    img = d.render()
    palette = torch.tensor(parse_palette("gameboy"))
    pixels = img[0].flatten(1).T  # (H*W, 3)
    assert (pixels[:, None, :] == palette[None]).all(dim=-1).any(dim=-1).all()
    assert len(PALETTES["gameboy"]) == 4


def test_palette_keeps_gradients() -> None:
    d = _drawer(palette="#ff0000,#00ff00,#0000ff")
    d.render().mean().backward()
    assert d.parameters()[0]["params"][0].grad.abs().sum() > 0


def test_init_image_gives_cell_averages() -> None:
    init = torch.zeros(1, 3, 32, 48)
    init[:, 0, :, :24] = 1.0  # left half red
    d = _drawer(init=init, pixel_size="12x8")
    img = d.render()
    assert torch.allclose(img[0, :, :, :24], torch.tensor([1.0, 0, 0]).view(3, 1, 1))
    assert torch.allclose(img[0, :, :, 24:], torch.zeros(3, 1, 1))


def test_same_seed_same_start() -> None:
    assert torch.equal(_drawer().render(), _drawer().render())
    assert not torch.equal(_drawer().render(), _drawer(seed=8).render())
