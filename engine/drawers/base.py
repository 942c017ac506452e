"""The Drawer protocol: what every style implements, so any one replaces another."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from engine import presets

if TYPE_CHECKING:
    from engine.models import ModelCache
    from engine.settings import ResolvedSettings, Settings


@dataclass
class DrawerContext:
    """Everything a drawer may use to build its parameters."""

    settings: ResolvedSettings
    device: torch.device
    # CPU generator seeded from settings.seed: draw on CPU, then move to `device`, so a seed
    # gives the same start on every device.
    generator: torch.Generator
    # (1, 3, H, W) in [0, 1] at the resolved size, on `device`; None without an init image.
    init_image: torch.Tensor | None = None
    models: ModelCache | None = None


class Drawer:
    """Base class of the styles. Subclasses set `name`, `default_lr` and implement `render()`."""

    name: ClassVar[str]
    default_lr: ClassVar[float]
    # Resolved sizes are trimmed down to a multiple of this.
    multiple: ClassVar[int] = 1

    def __init__(self, ctx: DrawerContext):
        self.ctx = ctx
        self.width, self.height = ctx.settings.size

    @classmethod
    def resolve(cls, settings: Settings, size: tuple[int, int]) -> dict[str, Any]:
        """The style's own resolution (engine.resolve calls it): at least the trimmed `size` and
        the learning rate. `settings` holds what was asked, `size` the size before trimming."""
        return {
            "size": presets.trim(size, cls.multiple),
            "learning_rate": settings.learning_rate or cls.default_lr,
        }

    def parameters(self) -> list[dict[str, Any]]:
        """Adam parameter groups: [{'params': [...], 'lr': ...}, ...]."""
        raise NotImplementedError

    def render(self) -> torch.Tensor:
        """The current image: (1, 3, H, W) in [0, 1] on the context's device."""
        raise NotImplementedError

    @torch.no_grad()
    def clamp_(self) -> None:
        """Project parameters back into their valid range after each optimiser step."""

    def to_svg(self) -> str | None:
        """A vector original of the current image, for styles that have one."""
        return None
