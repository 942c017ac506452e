"""Drawer registry: style name -> Drawer class (one file per style).

Every list of styles, every accepted spelling and every per-style decision outside this folder
comes from here: `list_drawers()` (the choices, in the order people see them),
`normalise_style()` (any spelling -> the canonical name) and `drawer_class()` (what a style
declares: learning rates, pixelation, the settings it decides, the models it uses).
"""

from __future__ import annotations

import re

from engine.drawers.base import Drawer, DrawerContext
from engine.drawers.image import ImageDrawer
from engine.drawers.painting import PaintingDrawer
from engine.drawers.pixel import PixelDrawer

# In the order the help texts, the error messages and the web page list them.
DRAWERS: dict[str, type[Drawer]] = {
    drawer.name: drawer for drawer in (ImageDrawer, PaintingDrawer, PixelDrawer)
}

DEFAULT_STYLE = ImageDrawer.name  # clipit's default style


def list_drawers() -> list[str]:
    """The registered style names."""
    return list(DRAWERS)


def drawer_class(name: str) -> type[Drawer]:
    """The Drawer class of a style; unknown names raise ValueError listing the choices."""
    if name not in DRAWERS:
        raise ValueError(f"unknown style {name!r}; choose one of {', '.join(DRAWERS)}")
    return DRAWERS[name]


def create_drawer(name: str, ctx: DrawerContext) -> Drawer:
    """Build the drawer of a style for one run."""
    return drawer_class(name)(ctx)


def _squeeze(spelling: str) -> str:
    """A spelling as compared: lower case, without spaces, underscores or dashes."""
    return re.sub(r"[\s_\-]+", "", str(spelling).strip().lower())


def spellings() -> dict[str, str]:
    """Every accepted spelling (squeezed) -> its canonical style name."""
    return {
        _squeeze(spelling): drawer.name
        for drawer in DRAWERS.values()
        for spelling in (drawer.name, *drawer.aliases)
    }


def normalise_style(value: str) -> str:
    """Map any accepted spelling ('Pixel Art', 'pixeldraw', 'VQGAN', ...) to a canonical style."""
    style = spellings().get(_squeeze(value))
    if style is None:
        allowed = ", ".join(f"'{s}'" for s in DRAWERS)
        raise ValueError(f"unknown style {value!r}; choose one of {allowed}")
    return style


def describe_styles() -> str:
    """The styles as the help texts name them: 'image (VQGAN), painting (strokes) or pixel art'."""
    named = [f"{d.name} ({d.medium})" if d.medium else d.name for d in DRAWERS.values()]
    return ", ".join(named[:-1]) + " or " + named[-1] if len(named) > 1 else named[0]


__all__ = [
    "DEFAULT_STYLE",
    "DRAWERS",
    "Drawer",
    "DrawerContext",
    "create_drawer",
    "describe_styles",
    "drawer_class",
    "list_drawers",
    "normalise_style",
    "spellings",
]
