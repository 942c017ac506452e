"""Plain tables: qualities and aspects (after the Text2Art fork of clipit), pixel-art palettes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


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

PIXEL_SHAPES = ("square", "hex")  # pixel art's cells (pixray's pixel types)

# The cutouts' augmentations by name, in the order they are applied (engine.cutouts), with the
# spellings also accepted; the default is clipit's set (what every run used before the choice).
AUGMENTS = ("affine", "perspective", "colour", "sharpness", "flip", "erasing", "noise")
AUGMENT_ALIASES = {
    "color": "colour",
    "jitter": "colour",
    "erase": "erasing",
    "sharpen": "sharpness",
}
DEFAULT_AUGMENTS = ("affine", "perspective", "colour", "noise")


def parse_augments(value: str | list[str]) -> list[str]:
    """'flip, affine' or a list -> the named augmentations in `AUGMENTS` order; 'none' (or
    nothing) is none; ValueError listing the names."""
    items = value.split(",") if isinstance(value, str) else list(value)
    names = {str(i).strip().lower() for i in items} - {"", "none"}
    names = {AUGMENT_ALIASES.get(n, n) for n in names}
    unknown = sorted(names - set(AUGMENTS))
    if unknown:
        raise ValueError(f"unknown augmentation {unknown[0]!r}; choose from {', '.join(AUGMENTS)}")
    return [name for name in AUGMENTS if name in names]


# Pixel-art palettes by name (a palette may also be given as hex colours).
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


def base_size(aspect: str, scale: float) -> tuple[int, int]:
    """The aspect's base size times `scale`, rounded down to whole pixels."""
    w, h = ASPECT[aspect]
    return (max(8, int(w * scale)), max(8, int(h * scale)))


def trim(size: tuple[int, int], multiple: int) -> tuple[int, int]:
    """Round both sides down to a multiple (never below one multiple)."""
    w, h = size
    return (max(multiple, w - w % multiple), max(multiple, h - h % multiple))


def parse_size(value: Any) -> tuple[int, int] | None:
    """'640x360', '640,360', [640, 360] -> (640, 360)."""
    if value is None or value == "":
        return None
    parts = re.split(r"[x×,\s]+", value.strip().lower()) if isinstance(value, str) else list(value)
    try:
        w, h = (int(p) for p in parts)
    except (TypeError, ValueError):
        raise ValueError(f"expected WIDTHxHEIGHT such as 640x360, got {value!r}") from None
    if w < 8 or h < 8:
        raise ValueError(f"width and height must be at least 8, got {w}x{h}")
    return (w, h)


def parse_widths(value: Any) -> tuple[float, float] | None:
    """'2,8', [2, 8] -> (2.0, 8.0): a range of stroke widths in pixels (0.5 to 256)."""
    if value is None or value == "":
        return None
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        low, high = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise ValueError(f"expected MIN,MAX pixels such as 2,8, got {value!r}") from None
    if not 0.5 <= low <= high <= 256:
        raise ValueError(f"need 0.5 <= MIN <= MAX <= 256 pixels, got {low:g},{high:g}")
    return (low, high)
