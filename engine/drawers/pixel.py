"""Pixel art: a grid of colours upsampled with nearest neighbour (after PixelDraw)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from engine.camera import Camera
from engine.drawers.base import AskedSettings, Drawer, DrawerContext
from engine.presets import parse_palette

# Grid (columns, rows) per aspect, like PixelDraw's defaults.
GRIDS: dict[str, tuple[int, int]] = {
    "widescreen": (80, 45),
    "square": (40, 40),
    "portrait": (40, 50),
}


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


HEX_ROW = 3**0.5 / 2  # a regular hexagonal lattice's row spacing, in cell widths


def hex_cells(rows: int, cols: int, cell: int) -> torch.Tensor:
    """(rows*cell, cols*cell) index of the cell each pixel shows when the cells are hexagons
    (pixray's hex pixels): every other row of cells is shifted right by half a cell and each
    pixel takes the cell whose centre is nearest, so the cells tile the picture as hexagons."""
    h, w = rows * cell, cols * cell
    ys = torch.arange(h, dtype=torch.float64)[:, None] + 0.5  # (H, 1) pixel centres
    xs = torch.arange(w, dtype=torch.float64)[None, :] + 0.5  # (1, W)
    best = torch.full((h, w), float("inf"), dtype=torch.float64)
    index = torch.zeros((h, w), dtype=torch.long)
    for dr in (-1, 0, 1):  # the nearest centre is in this pixel's row of cells or a neighbour
        r = (torch.div(ys, cell, rounding_mode="floor") + dr).clamp(0, rows - 1)  # (H, 1)
        shift = torch.remainder(r, 2) * cell / 2
        c = torch.div(xs - shift, cell, rounding_mode="floor").clamp(0, cols - 1)  # (H, W)
        for dc in (0, 1):
            cc = (c + dc).clamp(0, cols - 1)
            # Rows measured sqrt(3)/2 as far apart: the cells are regular hexagons, stretched.
            d = (xs - (cc + 0.5) * cell - shift) ** 2 + (HEX_ROW * (ys - (r + 0.5) * cell)) ** 2
            closer = d < best
            best = torch.where(closer, d, best)
            index = torch.where(closer, (r * cols + cc).long(), index)
    return index


def cell_layout(size: tuple[int, int], grid: tuple[int, int]) -> tuple[int, tuple[int, int]]:
    """Square cell size in pixels and the grid that fits `size` with whole cells."""
    w, h = size
    cols, rows = grid
    cell = max(1, round(min(w / cols, h / rows)))
    return cell, (max(1, w // cell), max(1, h // cell))


class PixelDrawer(Drawer):
    """A grid of colours, optionally from a palette (PixelDraw): a (rows, cols) grid of RGB
    cells, upsampled by an integer cell size."""

    name: ClassVar[str] = "pixel art"
    aliases: ClassVar[tuple[str, ...]] = ("pixel", "pixeldraw")
    summary: ClassVar[str] = "crisp, blocky"
    icon: ClassVar[str] = (
        '<path d="M4 4h5v5H4zM9 9h6v6H9zM15 15h5v5h-5zM15 4h5v5h-5zM4 15h5v5H4z"/>'
    )
    default_lr: ClassVar[float] = 0.03
    fast_lr: ClassVar[float | None] = 0.1  # flat colour fields: cells may jump further
    pixelated: ClassVar[bool] = True
    decides: ClassVar[tuple[str, ...]] = ("pixel_size",)

    @classmethod
    def resolve(cls, settings: AskedSettings, size: tuple[int, int]) -> dict[str, Any]:
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
        assert s.pixel_size is not None, "pixel_size is resolved by PixelDrawer.resolve"
        self.cols, self.rows = s.pixel_size
        self.palette = (
            torch.tensor(parse_palette(s.palette), device=ctx.device) if s.palette else None
        )
        noise = self.start_noise((self.cols, self.rows))  # init_noise fills the grid
        if ctx.init_image is not None:
            # Cell averages of the init image.  (1, 3, rows, cols)
            start = F.adaptive_avg_pool2d(ctx.init_image, (self.rows, self.cols))
        elif noise is not None:
            start = noise
        else:
            start = torch.rand((1, 3, self.rows, self.cols), generator=ctx.generator)
        self.cells = start.to(ctx.device, torch.float32).clone().requires_grad_(True)
        cell = self.width // self.cols
        hexes = s.pixel_shape == "hex"
        self.hexes = hex_cells(self.rows, self.cols, cell).to(ctx.device) if hexes else None

    def parameters(self) -> list[dict[str, Any]]:
        return [{"params": [self.cells], "lr": self.ctx.settings.learning_rate}]

    def render(self) -> torch.Tensor:
        cells = self.cells
        if self.palette is not None:
            cells = _NearestColour.apply(cells, self.palette)
        if self.hexes is not None:  # (1, 3, R*C) -> each pixel its hexagon's colour
            return cells.flatten(2)[:, :, self.hexes]  # (1, 3, H, W)
        # (1, 3, rows*cell, cols*cell) == (1, 3, H, W) since the size was trimmed to whole cells.
        return F.interpolate(cells, size=(self.height, self.width), mode="nearest")

    @torch.no_grad()
    def clamp_(self) -> None:
        self.cells.clamp_(0.0, 1.0)

    @torch.no_grad()
    def warp(self, camera: Camera) -> None:
        """Move the colour grid (a translation in pixels is one in cells of that size)."""
        cell = self.width / self.cols
        self.cells.copy_(camera.warp(self.cells, scale=1 / cell).clamp(0.0, 1.0))
