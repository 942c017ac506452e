"""Painting: coloured Bezier strokes optimised by CLIP (CLIPDraw, Frans et al. 2021)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from engine.camera import Camera
from engine.drawers.base import Drawer, DrawerContext
from engine.raster import render_strokes, strokes_to_svg

MAX_SEGMENTS = 3  # Bezier segments per stroke, each stroke draws 1..3 of them (CLIPDraw)
START_RADIUS = 0.1  # each control point steps at most +-5% of the canvas from the previous one
START_WIDTH = 1.0  # pixels, CLIPDraw's initial stroke width
# Learning rates of widths and colours relative to the points' (CLIPDraw: 1.0, 0.1, 0.01).
WIDTH_LR, COLOUR_LR = 0.1, 0.01


def random_strokes(
    n: int, size: tuple[int, int], generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CLIPDraw's start: short random walks of control points and random RGBA colours.

    Returns points (n, 3*MAX_SEGMENTS+1, 2) in pixels, segments (n,) in 1..MAX_SEGMENTS and
    colours (n, 4), all on the CPU (drawn from `generator` so a seed gives the same start).
    """
    w, h = size
    start = torch.rand(n, 1, 2, generator=generator)  # in units of the canvas
    steps = START_RADIUS * (torch.rand(n, 3 * MAX_SEGMENTS, 2, generator=generator) - 0.5)
    points = torch.cat([start, start + steps.cumsum(dim=1)], dim=1) * torch.tensor([w, h])
    segments = torch.randint(1, MAX_SEGMENTS + 1, (n,), generator=generator)
    colours = torch.rand(n, 4, generator=generator)
    return points, segments, colours


def _on_canvas(points: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(n,) bool: whether any control point of each stroke lies on the canvas."""
    w, h = size
    x, y = points[..., 0], points[..., 1]
    return ((x >= 0) & (x <= w) & (y >= 0) & (y <= h)).any(dim=1)


class PaintingDrawer(Drawer):
    """Coloured Bézier strokes (CLIPDraw), with the vector original as SVG: `strokes` cubic
    Bezier strokes over a white canvas or the init image."""

    name: ClassVar[str] = "painting"
    aliases: ClassVar[tuple[str, ...]] = ("clipdraw",)
    medium: ClassVar[str] = "strokes"
    summary: ClassVar[str] = "brush strokes, SVG"
    icon: ClassVar[str] = (
        '<path d="M14 4l6 6-8.5 8.5a3 3 0 01-2 .9L5 20l.6-4.5a3 3 0 01.9-2z"/><path d="M12 6l6 6"/>'
    )
    default_lr: ClassVar[float] = 1.0  # control points, in pixels per step
    fast_lr: ClassVar[float | None] = 2.0  # on a small canvas points must travel further

    def __init__(self, ctx: DrawerContext):
        super().__init__(ctx)
        size = (self.width, self.height)
        points, segments, colours = random_strokes(ctx.settings.strokes, size, ctx.generator)
        # Widths stay in [min_width, max_width] and start at the least (CLIPDraw: 1 pixel).
        widths = ctx.settings.stroke_width or (START_WIDTH, max(1.0, 0.05 * self.height))
        self.min_width, self.max_width = widths
        self.segments = segments.to(ctx.device)
        self.points = points.to(ctx.device).requires_grad_(True)
        self.widths = torch.full((len(points),), self.min_width, device=ctx.device)
        self.widths.requires_grad_(True)
        # (3, H, W) init image, or white.
        self.background = ctx.init_image[0] if ctx.init_image is not None else None
        noise = self.start_noise(size)
        if (
            noise is not None
        ):  # init_noise: the background, and each stroke's colour where it starts
            x = points[:, 0, 0].long().clamp(0, self.width - 1)
            y = points[:, 0, 1].long().clamp(0, self.height - 1)
            colours[:, :3] = noise[0, :, y, x].T
            self.background = noise[0].to(ctx.device)
        self.colours = colours.to(ctx.device).requires_grad_(True)

    def parameters(self) -> list[dict[str, Any]]:
        """Points at the run's learning rate; widths and colours at CLIPDraw's ratios to it."""
        lr = self.ctx.settings.learning_rate or self.default_lr
        ratio = lr / self.default_lr
        return [
            {"params": [self.points], "lr": lr},
            {"params": [self.widths], "lr": WIDTH_LR * ratio},
            {"params": [self.colours], "lr": COLOUR_LR * ratio},
        ]

    def render(self) -> torch.Tensor:
        bg = self.background if self.background is not None else 1.0
        size = (self.width, self.height)
        image = render_strokes(
            self.points, self.widths, self.colours, size, bg, segments=self.segments
        )
        return image.unsqueeze(0)  # (1, 3, H, W)

    @torch.no_grad()
    def clamp_(self) -> None:
        self.widths.clamp_(self.min_width, self.max_width)
        self.colours.clamp_(0.0, 1.0)

    @torch.no_grad()
    def warp(self, camera: Camera) -> None:
        """Move every control point by the camera (exact: nothing is resampled); strokes are
        thicker or thinner with the zoom. Where the move uncovers the canvas, the least visible
        strokes (off the canvas first, then the most transparent) start again there."""
        size = (self.width, self.height)
        self.points.copy_(camera.map_points(self.points, size))
        self.widths.mul_(camera.zoom).clamp_(self.min_width, self.max_width)
        holes = camera.uncovered(size).nonzero()  # (K, 2) as (y, x)
        n = round(len(holes) / (self.width * self.height) * len(self.points))
        if n == 0:
            return
        g = self.ctx.generator
        fresh, _, colours = random_strokes(n, size, g)
        where = holes[torch.randint(len(holes), (n,), generator=g)].flip(-1) + 0.5  # (x, y)
        fresh = fresh - fresh[:, :1] + where[:, None].to(fresh.dtype)
        inside = _on_canvas(self.points, size).float().cpu()
        order = torch.argsort(inside * 2 + self.colours[:, 3].cpu(), stable=True)[:n]
        idx = order.to(self.points.device)
        self.points[idx] = fresh.to(self.points)
        self.colours[idx] = colours.to(self.colours)
        self.widths[idx] = self.min_width

    def to_svg(self) -> str:
        bg = self.background if self.background is not None else (1.0, 1.0, 1.0)
        size = (self.width, self.height)
        return strokes_to_svg(self.points, self.widths, self.colours, size, bg, self.segments)
