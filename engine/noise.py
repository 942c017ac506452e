"""Start images for a run without an init image (`init_noise`), after nerdyrodent's VQGAN-CLIP
`-in pixels|gradient` and fractal ("Perlin") noise: drawn on the CPU from the run's generator,
so a seed gives the same start on every device."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

DEFAULT_NOISE = "default"  # the style's own start (what every run did before the choice)
INIT_NOISES = ("pixels", "gradient", "perlin", DEFAULT_NOISE)
OCTAVES = 6  # most octaves of fractal noise (the finest is 2**5 + 1 cells across)


def noise_image(kind: str, size: tuple[int, int], g: torch.Generator) -> torch.Tensor:
    """A (1, 3, H, W) start image in [0, 1] of `kind` ('pixels', 'gradient' or 'perlin') for
    `size` = (W, H), on the CPU."""
    w, h = size
    if kind == "pixels":  # every pixel its own random colour
        return torch.rand((1, 3, h, w), generator=g)
    if kind == "gradient":
        return gradient(w, h, g)
    if kind == "perlin":
        return fractal(w, h, g)
    raise ValueError(f"unknown init noise {kind!r}; choose one of {', '.join(INIT_NOISES)}")


def gradient(w: int, h: int, g: torch.Generator) -> torch.Tensor:
    """Each channel a straight ramp between two random values in a random direction."""
    angle = torch.rand(3, generator=g) * 2 * math.pi  # (3,)
    ends = torch.rand(2, 3, generator=g)  # (2, 3): the value at each end of the ramp
    ys, xs = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    along = xs[None] * angle.cos()[:, None, None] + ys[None] * angle.sin()[:, None, None]
    lo = along.amin(dim=(1, 2), keepdim=True)
    hi = along.amax(dim=(1, 2), keepdim=True)
    t = (along - lo) / (hi - lo).clamp(min=1e-6)  # (3, H, W) in [0, 1]
    return (ends[0][:, None, None] + (ends[1] - ends[0])[:, None, None] * t)[None]


def fractal(w: int, h: int, g: torch.Generator) -> torch.Tensor:
    """Fractal noise: octaves of smooth random noise (random values on a grid 2**k + 1 cells
    across, bicubic between them), each at half the amplitude of the one before."""
    total = torch.zeros((1, 3, h, w))
    for k in range(OCTAVES):
        cells = 2**k + 1
        if cells > max(w, h):
            break
        grid = torch.rand((1, 3, cells, cells), generator=g)
        up = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=True)
        total += up * 0.5**k
    lo = total.amin(dim=(2, 3), keepdim=True)
    hi = total.amax(dim=(2, 3), keepdim=True)
    return (total - lo) / (hi - lo).clamp(min=1e-6)  # each channel stretched to [0, 1]
