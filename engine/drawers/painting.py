"""Painting: coloured Bezier strokes optimised by CLIP (CLIPDraw, Frans et al. 2021)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

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
        self.max_width = max(1.0, 0.05 * self.height)
        self.segments = segments.to(ctx.device)
        self.points = points.to(ctx.device).requires_grad_(True)
        self.widths = torch.full((len(points),), START_WIDTH, device=ctx.device)
        self.widths.requires_grad_(True)
        self.colours = colours.to(ctx.device).requires_grad_(True)
        # (3, H, W) init image, or white.
        self.background = ctx.init_image[0] if ctx.init_image is not None else None

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
        self.widths.clamp_(1.0, self.max_width)
        self.colours.clamp_(0.0, 1.0)

    def to_svg(self) -> str:
        bg = self.background if self.background is not None else (1.0, 1.0, 1.0)
        size = (self.width, self.height)
        return strokes_to_svg(self.points, self.widths, self.colours, size, bg, self.segments)
