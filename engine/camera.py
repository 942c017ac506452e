"""The camera of an animation: keyframe schedules and the move from one frame to the next.

A schedule is a number (the same every frame) or keyframes in Disco Diffusion's form,
`"0:(1.0), 30:(1.04), 60:(1.0)"`: linear between two keyframes, the first value before the first
keyframe and the last after the last. Each frame f >= 1 moves the picture of frame f-1 by the
values at f: it is scaled by `zoom` and turned by `angle` degrees (counter-clockwise) about the
centre, then shifted by `translate_x`, `translate_y` pixels (right, down). `Camera.map_points`
applies that move to coordinates (exact: the painting style moves its strokes); `Camera.warp`
resamples an image by it, filling what the move uncovers by reflection (never black).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Per-frame bounds of each move (a frame is a small step; beyond these the picture is lost).
BOUNDS = {
    "zoom": (0.5, 2.0),
    "angle": (-90.0, 90.0),
    "translate_x": (-256.0, 256.0),
    "translate_y": (-256.0, 256.0),
}
CAMERA_FIELDS = tuple(BOUNDS)
NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_KEYFRAME = re.compile(rf"\s*(\d+)\s*:\s*\(\s*({NUMBER})\s*\)\s*")


def schedule_pattern(field: str) -> str:
    """What `parse_schedule` reads, as a regular expression (the published API schema's): a
    number or keyframes `FRAME:(VALUE), ...`; a move that is never negative has no sign."""
    number = "[+]?" + NUMBER.removeprefix("[-+]?") if BOUNDS[field][0] > 0 else NUMBER
    key = rf"\s*\d+\s*:\s*\(\s*{number}\s*\)\s*"
    return rf"^(\s*{number}\s*|{key}(,{key})*)$"


@dataclass(frozen=True)
class Schedule:
    """Keyframes (frame, value), sorted by frame; one keyframe at 0 for a constant."""

    keys: tuple[tuple[int, float], ...]

    def at(self, frame: int) -> float:
        """The value at `frame`, linear between keyframes."""
        keys = self.keys
        if frame <= keys[0][0]:
            return keys[0][1]
        for (f0, v0), (f1, v1) in zip(keys, keys[1:], strict=False):
            if frame <= f1:
                return v0 + (v1 - v0) * (frame - f0) / (f1 - f0)
        return keys[-1][1]


def parse_schedule(text: str | float | int, field: str = "zoom") -> Schedule:
    """A number, or keyframes `FRAME:(VALUE), ...`; ValueError saying where it went wrong."""
    low, high = BOUNDS[field]
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return Schedule(((0, _bounded(float(text), low, high)),))
    source = str(text).strip()
    if re.fullmatch(NUMBER, source):
        return Schedule(((0, _bounded(float(source), low, high)),))
    keys: dict[int, float] = {}
    position = 0
    for part in source.split(","):
        at = position + len(part) - len(part.lstrip()) + 1  # 1-based, where the keyframe starts
        match = _KEYFRAME.fullmatch(part)
        if match is None:
            raise ValueError(
                f"at position {at}: expected a number or keyframes like '0:(1.0), 30:(1.04)', "
                f"got {part.strip()!r}"
            )
        frame = int(match.group(1))
        if frame in keys:
            raise ValueError(f"at position {at}: frame {frame} is given twice")
        try:
            keys[frame] = _bounded(float(match.group(2)), low, high)
        except ValueError as exc:
            raise ValueError(f"at position {at}: {exc}") from None
        position += len(part) + 1
    return Schedule(tuple(sorted(keys.items())))


def _bounded(value: float, low: float, high: float) -> float:
    if not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"values must be between {low:g} and {high:g}, got {value:g}")
    return value


def canonical(text: str | float | int) -> str:
    """How a schedule is kept in settings: a plain number as `1.04`, keyframes as written."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return f"{float(text):g}"
    source = str(text).strip()
    return f"{float(source):g}" if re.fullmatch(NUMBER, source) else source


@dataclass(frozen=True)
class Camera:
    """The move from one frame to the next (see the module's docstring)."""

    zoom: float = 1.0
    angle: float = 0.0  # degrees, counter-clockwise on the screen
    translate_x: float = 0.0  # pixels, to the right
    translate_y: float = 0.0  # pixels, down
    wrap: bool = False  # a tile (`tile`): what leaves one side comes back at the other

    @property
    def still(self) -> bool:
        return (self.zoom, self.angle, self.translate_x, self.translate_y) == (1.0, 0.0, 0.0, 0.0)

    def matrix(self, size: tuple[int, int], scale: float = 1.0) -> torch.Tensor:
        """(2, 3) affine map of points in pixels of a `size` picture: new = A @ old + b.

        `scale` expresses the translation in other units (pixel-art cells: 1 / cell size)."""
        w, h = size
        c = math.cos(math.radians(self.angle)) * self.zoom
        s = math.sin(math.radians(self.angle)) * self.zoom
        # y grows downwards: a counter-clockwise turn on the screen is (c, s; -s, c).
        a = torch.tensor([[c, s], [-s, c]], dtype=torch.float64)
        centre = torch.tensor([w / 2, h / 2], dtype=torch.float64)
        shift = torch.tensor([self.translate_x, self.translate_y], dtype=torch.float64) * scale
        b = centre - a @ centre + shift
        return torch.cat([a, b[:, None]], dim=1)

    def map_points(self, points: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Points (..., 2) in pixels, moved by the camera."""
        m = self.matrix(size).to(points.device, points.dtype)
        return points @ m[:, :2].T + m[:, 2]

    def warp(self, image: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """(N, C, H, W) resampled by the move (bilinear; uncovered parts reflected, or with
        `wrap` taken from the other side: the picture is a torus)."""
        _, _, h, w = image.shape
        grid = self._grid((w, h), scale).to(image.device, image.dtype)
        if self.wrap:  # sample a copy with one pixel of the other side around it
            image = F.pad(image, (1, 1, 1, 1), mode="circular")
            grid = _wrapped(grid, w, h)
        return F.grid_sample(
            image, grid.expand(len(image), -1, -1, -1), mode="bilinear",
            padding_mode="reflection", align_corners=False,
        )  # fmt: skip

    def uncovered(self, size: tuple[int, int]) -> torch.Tensor:
        """(H, W) bool: the pixels no point of the previous picture lands on."""
        w, h = size
        inside = torch.ones(1, 1, h, w, dtype=torch.float64)
        moved = F.grid_sample(inside, self._grid(size), mode="nearest", padding_mode="zeros",
                              align_corners=False)  # fmt: skip
        return moved[0, 0] < 0.5

    def _grid(self, size: tuple[int, int], scale: float = 1.0) -> torch.Tensor:
        """(1, H, W, 2) `grid_sample` grid: where each pixel of the moved picture comes from."""
        w, h = size
        m = self.matrix(size, scale)
        ys, xs = torch.meshgrid(
            torch.arange(h, dtype=torch.float64) + 0.5,
            torch.arange(w, dtype=torch.float64) + 0.5,
            indexing="ij",
        )
        source = (torch.stack([xs, ys], dim=-1) - m[:, 2]) @ torch.linalg.inv(m[:, :2]).T
        return torch.stack([source[..., 0] / w * 2 - 1, source[..., 1] / h * 2 - 1], dim=-1)[None]


def _wrapped(grid: torch.Tensor, w: int, h: int) -> torch.Tensor:
    """A `grid_sample` grid over a (w, h) picture as one over its copy padded by one pixel of
    the other side, each source point taken modulo the picture's size."""
    x = torch.remainder((grid[..., 0] + 1) / 2 * w, w) + 1  # pixels of the padded copy
    y = torch.remainder((grid[..., 1] + 1) / 2 * h, h) + 1
    return torch.stack([x / (w + 2) * 2 - 1, y / (h + 2) * 2 - 1], dim=-1)


def camera_at(settings: object, frame: int) -> Camera:
    """The camera move into `frame` (>= 1) from the settings' schedules (wrapping round a
    tile's edges)."""
    values = {name: parse_schedule(getattr(settings, name), name).at(frame) for name in BOUNDS}
    return Camera(**values, wrap=bool(getattr(settings, "tile", False)))
