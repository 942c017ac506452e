"""What a request costs: an estimate of its run time in seconds, and the ceiling T2A_MAX_COST.

One iteration of a run is CLIP's forward and backward pass over every cutout of every picture
for each CLIP model, plus the drawer's pass over the pixels of every picture:

    seconds = iterations x (clip x cutouts x models x pictures x batch + drawer(pixels) x pictures)

where an animation's iterations are all its frames' (`total_iterations`).

`models` weighs each CLIP by its size (ViT-B/32 is 1), `batch` is what a batch of pictures
saves (0.70 a picture for four on the CPU), and the drawer's part follows what it declares: one
that decodes through a VQGAN (`uses_vqgan`) pays the decoder per pixel, a pixelated one next to
nothing, any other draws strokes and pays the rasteriser per pixel and stroke. Nothing here
decides by a style's name.

Calibration (README, "Performance"; `bench/iteration.py`, `bench/vqgan.py`, `bench/raster.py`),
ViT-B/32 with 40 cutouts:
- CPU (2 cores): pixel art 148x148 11.95 s an iteration -> `clip` 0.30 s a cutout; a batch of
  four 33.43 s -> 0.70 a picture; the image style at 1024x1024 with four pictures took 580 s
  for its first iteration (issue 30, point 2) -> the decoder 1.37e-4 s a pixel and picture; the
  rasteriser from its GPU figure (8.2 ms for 1024 strokes at 400x224) times the CPU/GPU ratio
  of CLIP (about 330) -> 3e-5 s a pixel for 1024 strokes.
- GPU (H100): pixel art 0.036 s -> `clip` 0.0009 s a cutout; the image style 0.062 s at
  144x144 and 0.116 s at 592x592 -> the decoder 0.023 s + 1.64e-7 s a pixel; painting 0.052 s
  at any size -> the rasteriser 0.016 s for 1024 strokes.
The estimate is a guide for admission (the order of magnitude), not a promise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine import ResolvedSettings, drawer_class, pick_device
from engine.errors import SettingsError


@dataclass(frozen=True)
class Speeds:
    """Seconds of the parts of one iteration on one kind of device."""

    clip: float  # a cutout of a picture through a ViT-B/32-sized CLIP, forward and backward
    decoder_fixed: float  # a VQGAN decoder pass, whatever its size
    decoder: float  # ... and a pixel of it (VQGAN f16)
    raster_fixed: float  # a stroke rasteriser pass of 1024 strokes
    raster: float  # ... and a pixel of it
    plain: float  # a pixel of any other drawer


CPU = Speeds(clip=0.30, decoder_fixed=0.0, decoder=1.37e-4, raster_fixed=0.0, raster=3e-5,
             plain=1e-7)  # fmt: skip
GPU = Speeds(clip=0.0009, decoder_fixed=0.023, decoder=1.64e-7, raster_fixed=0.016, raster=0.0,
             plain=1e-9)  # fmt: skip
# The default ceiling (T2A_MAX_COST unset). On a CPU the card's default picture already takes
# over an hour (the image style at 352x352: about 25 s an iteration), so four hours keep every
# draft and refuse what would hold the worker for days; a GPU makes a draft in seconds, and an
# hour holds its line long enough.
DEFAULT_MAX_COST = {"cpu": 4 * 3600.0, "gpu": 3600.0}
# CLIP models by cost relative to ViT-B/32 (forward+backward FLOPs); unknown names count 1.
CLIP_WEIGHTS = {"ViT-B/32": 1.0, "ViT-B/16": 4.4, "ViT-L/14": 20.0, "ViT-L/14@336px": 45.0,
                "RN50": 1.0, "RN101": 1.8, "RN50x4": 2.5, "RN50x16": 7.0,
                "tiny-random": 0.001, "shapes": 0.01}  # fmt: skip
SMALL_VQGANS = {"tiny-random": 0.001, "shapes": 0.01}  # decoders far smaller than f16-16384
BATCH_SAVING = 0.1  # each further picture of a batch costs 10% less (0.70 each for four)


def speeds_of(device: str | None) -> tuple[Speeds, str]:
    """The speeds of the device runs go to (T2A_DEVICE, else what `pick_device` finds)."""
    kind = pick_device(device).type
    return (CPU, "cpu") if kind == "cpu" else (GPU, "gpu")


def max_cost(configured: float | None, device: str | None) -> float:
    """The ceiling in estimated seconds: T2A_MAX_COST, else the device's default."""
    return configured if configured is not None else DEFAULT_MAX_COST[speeds_of(device)[1]]


def clip_weight(names: list[str]) -> float:
    """The CLIP models' cost, in ViT-B/32s (a `name=path` or `name:random` counts as name)."""
    return sum(CLIP_WEIGHTS.get(n.split("=")[0].split(":")[0], 1.0) for n in names)


def parts(s: ResolvedSettings, speeds: Speeds) -> dict[str, float]:
    """Seconds of one iteration: `clip` and the drawer's `pixels` (all pictures)."""
    pictures = s.variations
    batch = max(0.5, 1 - BATCH_SAVING * (pictures - 1))
    clip = speeds.clip * s.cutouts * clip_weight(s.clip_models) * pictures * batch
    pixels = s.size[0] * s.size[1]
    drawer = drawer_class(s.style)
    if drawer.uses_vqgan:
        weight = SMALL_VQGANS.get(s.vqgan_model, 1.0)
        drawn = weight * (speeds.decoder_fixed + speeds.decoder * pixels)
    elif not drawer.pixelated:  # neither decoded nor pixelated: strokes, rasterised
        drawn = (speeds.raster_fixed + speeds.raster * pixels) * s.strokes / 1024
    else:
        drawn = speeds.plain * pixels
    return {"clip": clip, "pixels": drawn * pictures}


def estimate(s: ResolvedSettings, device: str | None) -> float:
    """Estimated seconds of the whole run on `device` (an animation: every frame's iterations)."""
    speeds, _ = speeds_of(device)
    return round(s.total_iterations * sum(parts(s, speeds).values()), 3)


class TooCostly(SettingsError):
    """The request's estimate is over the ceiling (a 422 naming each field to lower)."""

    def __init__(self, estimate_s: float, ceiling: float, lower: list[str]):
        fields = ", ".join(lower)
        super().__init__(
            lower[0],
            f"this request would run about {estimate_s:.0f} s on this server, over its "
            f"ceiling of {ceiling:.0f} s (T2A_MAX_COST): lower {fields}",
        )
        self.estimate_seconds, self.max_cost, self.lower = estimate_s, ceiling, lower

    def context(self) -> dict[str, Any]:
        """What the 422 adds: the estimate, the ceiling and the fields to lower."""
        return {"estimate_seconds": self.estimate_seconds, "max_cost": self.max_cost,
                "lower": self.lower}  # fmt: skip


def to_lower(s: ResolvedSettings, speeds: Speeds) -> list[str]:
    """The card's fields that would lower the estimate, the costliest part's first."""
    cost = parts(s, speeds)
    by_pixels = ["size", "scale"] if cost["pixels"] >= cost["clip"] else []
    fields = by_pixels + ["iterations"] + (["variations"] if s.variations > 1 else [])
    fields += ["frames", "frame_iterations"] if s.frames > 0 else []
    fields += ["quality"] + (["size", "scale"] if not by_pixels else [])
    return fields


def check_cost(s: ResolvedSettings, configured: float | None, device: str | None) -> float:
    """The estimate, if within the ceiling; else `TooCostly`."""
    seconds, ceiling = estimate(s, device), max_cost(configured, device)
    if seconds > ceiling:
        raise TooCostly(seconds, ceiling, to_lower(s, speeds_of(device)[0]))
    return seconds
