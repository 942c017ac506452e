"""Drawer registry: style name -> Drawer class (one file per style)."""

from __future__ import annotations

from engine.drawers.base import Drawer, DrawerContext
from engine.drawers.image import ImageDrawer
from engine.drawers.painting import PaintingDrawer
from engine.drawers.pixel import PixelDrawer

DRAWERS: dict[str, type[Drawer]] = {
    ImageDrawer.name: ImageDrawer,
    PixelDrawer.name: PixelDrawer,
    PaintingDrawer.name: PaintingDrawer,
}


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


__all__ = ["Drawer", "DrawerContext", "create_drawer", "drawer_class", "list_drawers"]
