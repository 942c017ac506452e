"""Pixel art: a grid of colours upsampled with nearest neighbour (after PixelDraw)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F

from engine.drawers.base import Drawer, DrawerContext

if TYPE_CHECKING:
    from engine.settings import Settings

# Grid (columns, rows) per aspect, like PixelDraw's defaults.
GRIDS: dict[str, tuple[int, int]] = {
    "widescreen": (80, 45),
    "square": (40, 40),
    "portrait": (40, 50),
}

PALETTES: dict[str, list[str]] = {
    "pico8": [
        "#000000", "#1d2b53", "#7e2553", "#008751", "#ab5236", "#5f574f", "#c2c3c7", "#fff1e8",
        "#ff004d", "#ffa300", "#ffec27", "#00e436", "#29adff", "#83769c", "#ff77a8", "#ffccaa",
    ],
    "gameboy": ["#0f380f", "#306230", "#8bac0f", "#9bbc0f"],
    "cga": ["#000000", "#55ffff", "#ff55ff", "#ffffff"],
    "sweetie16": [
        "#1a1c2c", "#5d275d", "#b13e53", "#ef7d57", "#ffcd75", "#a7f070", "#38b764", "#257179",
        "#29366f", "#3b5dc9", "#41a6f6", "#73eff7", "#f4f4f4", "#94b0c2", "#566c86", "#333c57",
    ],
    "grayscale": ["#000000", "#555555", "#aaaaaa", "#ffffff"],
    "black and white": ["#000000", "#ffffff"],
}  # fmt: skip

_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")


def parse_palette(value: str | list[str]) -> list[tuple[float, float, float]]:
    """A palette name or hex colours ('#1a1c2c,#5d275d' or a list) -> RGB triples in [0, 1]."""
    if isinstance(value, str) and value.strip().lower() in PALETTES:
        items = PALETTES[value.strip().lower()]
    else:
        items = value.split(",") if isinstance(value, str) else list(value)
        items = [c.strip() for c in items if c.strip()]
    colours = []
    for item in items:
        m = _HEX.match(item)
        if not m:
            names = ", ".join(PALETTES)
            raise ValueError(
                f"{item!r} is neither a palette name ({names}) nor a hex colour like '#ff8800'"
            )
        h = m.group(1)
        colours.append(tuple(int(h[i : i + 2], 16) / 255 for i in (0, 2, 4)))
    if not colours:
        raise ValueError("the palette is empty; give a palette name or hex colours")
    return colours  # type: ignore[return-value]


class _NearestColour(torch.autograd.Function):
    """Snap to the nearest palette colour; gradients pass straight through (Bengio et al. 2013)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
        # x: (1, 3, R, C), palette: (P, 3)
        flat = x[0].flatten(1).T  # (R*C, 3)
        idx = torch.cdist(flat, palette).argmin(dim=1)  # (R*C,)
        return palette[idx].T.reshape_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def cell_layout(size: tuple[int, int], grid: tuple[int, int]) -> tuple[int, tuple[int, int]]:
    """Square cell size in pixels and the grid that fits `size` with whole cells."""
    w, h = size
    cols, rows = grid
    cell = max(1, round(min(w / cols, h / rows)))
    return cell, (max(1, w // cell), max(1, h // cell))


class PixelDrawer(Drawer):
    """A (rows, cols) grid of RGB cells, upsampled by an integer cell size (PixelDraw)."""

    name: ClassVar[str] = "pixel art"
    default_lr: ClassVar[float] = 0.03

    @classmethod
    def resolve(cls, settings: Settings, size: tuple[int, int]) -> dict[str, Any]:
        """Trim the size to whole cells and report the grid actually used."""
        if settings.pixel_size is None:
            # The preset grid is adapted a little so that cells are whole, square pixels.
            cell, grid = cell_layout(size, GRIDS[settings.aspect])
        else:
            # An explicit grid is kept; cells are as large as the size allows.
            grid = settings.pixel_size
            cell = max(1, min(size[0] // grid[0], size[1] // grid[1]))
        return {
            "size": (grid[0] * cell, grid[1] * cell),
            "pixel_size": grid,
            "learning_rate": settings.learning_rate or cls.default_lr,
        }

    def __init__(self, ctx: DrawerContext):
        super().__init__(ctx)
        s = ctx.settings
        assert s.pixel_size is not None
        self.cols, self.rows = s.pixel_size
        self.palette = (
            torch.tensor(parse_palette(s.palette), device=ctx.device) if s.palette else None
        )
        if ctx.init_image is not None:
            # Cell averages of the init image.  (1, 3, rows, cols)
            start = F.adaptive_avg_pool2d(ctx.init_image, (self.rows, self.cols))
        else:
            start = torch.rand((1, 3, self.rows, self.cols), generator=ctx.generator)
        self.cells = start.to(ctx.device, torch.float32).clone().requires_grad_(True)

    def parameters(self) -> list[dict[str, Any]]:
        return [{"params": [self.cells], "lr": self.ctx.settings.learning_rate}]

    def render(self) -> torch.Tensor:
        cells = self.cells
        if self.palette is not None:
            cells = _NearestColour.apply(cells, self.palette)
        # (1, 3, rows*cell, cols*cell) == (1, 3, H, W) since the size was trimmed to whole cells.
        return F.interpolate(cells, size=(self.height, self.width), mode="nearest")

    @torch.no_grad()
    def clamp_(self) -> None:
        self.cells.clamp_(0.0, 1.0)
