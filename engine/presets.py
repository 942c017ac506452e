"""Quality and aspect tables (after the Text2Art fork of clipit)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Quality:
    clip_models: tuple[str, ...]
    iterations: int
    scale: float


QUALITY: dict[str, Quality] = {
    "draft": Quality(("ViT-B/32",), 200, 1.0),
    "normal": Quality(("ViT-B/32", "ViT-B/16"), 350, 2.0),
    "better": Quality(("RN50", "ViT-B/32", "ViT-B/16"), 500, 3.0),
    "best": Quality(("RN50x4", "ViT-B/32", "ViT-B/16"), 500, 4.0),
}

# Base (width, height) before scaling.
ASPECT: dict[str, tuple[int, int]] = {
    "widescreen": (160, 90),
    "portrait": (128, 160),
    "square": (150, 150),
}

DEFAULT_CUTOUTS = 40

# Defaults of runs guided by the bundled 'shapes' CLIP alone (engine.shapes): its world is flat
# shapes seen at 64 px, so a small canvas, a coarse pixel grid, fewer views and the bundled VQGAN
# (every style in under half a minute on a 2-core CPU, offline).  Only the settings a request
# leaves out are taken from here.
SHAPES_CLIP = "shapes"
SHAPES_WORLD: dict[str, object] = {
    "size": (64, 64),
    "iterations": 100,
    "cutouts": 16,
    "pixel_size": (16, 16),
    "strokes": 256,
    "vqgan_model": "shapes",
}
# Step sizes of the shapes world per style: its pictures are flat colour fields that must form in
# 100 iterations, so pixel cells and stroke points move faster than CLIP's defaults let them.
SHAPES_LEARNING_RATES: dict[str, float] = {"pixel art": 0.1, "painting": 2.0}


def base_size(aspect: str, scale: float) -> tuple[int, int]:
    """The aspect's base size times `scale`, rounded down to whole pixels."""
    w, h = ASPECT[aspect]
    return (max(8, int(w * scale)), max(8, int(h * scale)))


def trim(size: tuple[int, int], multiple: int) -> tuple[int, int]:
    """Round both sides down to a multiple (never below one multiple)."""
    w, h = size
    return (max(multiple, w - w % multiple), max(multiple, h - h % multiple))
