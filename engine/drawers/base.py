"""The Drawer protocol: what every style implements, so any one replaces another."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch

from engine import presets
from engine.noise import DEFAULT_NOISE, noise_image

if TYPE_CHECKING:
    from engine.camera import Camera
    from engine.models import ModelCache


# What a drawer reads of the settings, as protocols: `engine.settings` lists the styles from the
# registry, so the drawers do not import it (not even for types).
class AskedSettings(Protocol):
    """What a style's `resolve` hook reads of the settings asked for (`engine.Settings`)."""

    @property
    def aspect(self) -> str: ...
    @property
    def learning_rate(self) -> float | None: ...
    @property
    def pixel_size(self) -> tuple[int, int] | None: ...
    @property
    def vqgan_model(self) -> str: ...
    @property
    def decoder_checkpointing(self) -> bool | None: ...


class RunSettings(Protocol):
    """What a drawer reads of a run's resolved settings (`engine.ResolvedSettings`)."""

    @property
    def size(self) -> tuple[int, int]: ...
    @property
    def learning_rate(self) -> float: ...
    @property
    def strokes(self) -> int: ...
    @property
    def stroke_width(self) -> tuple[float, float] | None: ...
    @property
    def pixel_size(self) -> tuple[int, int] | None: ...
    @property
    def palette(self) -> str | list[str] | None: ...
    @property
    def pixel_shape(self) -> str: ...
    @property
    def vqgan_model(self) -> str: ...
    @property
    def decoder_checkpointing(self) -> bool | None: ...
    @property
    def init_noise(self) -> str: ...


@dataclass
class DrawerContext:
    """Everything a drawer may use to build its parameters."""

    settings: RunSettings
    device: torch.device
    # CPU generator seeded from settings.seed: draw on CPU, then move to `device`, so a seed
    # gives the same start on every device.
    generator: torch.Generator
    # (1, 3, H, W) in [0, 1] at the resolved size, on `device`; None without an init image.
    init_image: torch.Tensor | None = None
    models: ModelCache | None = None


class Drawer:
    """Base class of the styles: a plug-in declares itself here, and nothing outside
    `engine/drawers/` decides by a style's name.

    Subclasses set `name` and `default_lr` and implement `parameters()` and `render()`; the other
    declarations have defaults. The registry (`engine.drawers`) derives from them the style
    choices of the settings, the CLI, the HTTP form, `/info` and the web page.
    """

    # The canonical style name (what settings, the API and PNG metadata carry).
    name: ClassVar[str]
    # Other accepted spellings (compared like the name: any case, spaces/_/- squeezed).
    aliases: ClassVar[tuple[str, ...]] = ()
    # How the help texts describe it in a word or two ("VQGAN"); empty: the name says it all.
    medium: ClassVar[str] = ""
    # A few words for people: the sub-line of the style's card on the web page, and /info.
    summary: ClassVar[str] = ""
    # The card's icon: the inner markup of an SVG with viewBox "0 0 24 24", stroked in the text
    # colour (the page sets fill and stroke). Default: a sparkle in a frame.
    icon: ClassVar[str] = (
        '<rect x="3" y="3" width="18" height="18" rx="3"/>'
        '<path d="M12 7l1.3 3.7L17 12l-3.7 1.3L12 17l-1.3-3.7L7 12l3.7-1.3z"/>'
    )
    # Adam's step size unless the settings give one.
    default_lr: ClassVar[float]
    # The step size in a world whose pictures must form in few iterations (a model's
    # `WorldDefaults.fast`, e.g. the bundled shapes world); None: `default_lr` there too.
    fast_lr: ClassVar[float | None] = None
    # Blocky pictures: the video and the web page scale them up without smoothing.
    pixelated: ClassVar[bool] = False
    # It decodes through a VQGAN (`settings.vqgan_model`): that model is fetched and loaded.
    uses_vqgan: ClassVar[bool] = False
    # Optional settings that only this style's `resolve` fills; they stay None for the other
    # styles, and a model's world does not fill them for those.
    decides: ClassVar[tuple[str, ...]] = ()
    # Resolved sizes are trimmed down to a multiple of this.
    multiple: ClassVar[int] = 1

    def __init__(self, ctx: DrawerContext):
        self.ctx = ctx
        self.width, self.height = ctx.settings.size

    @classmethod
    def resolve(cls, settings: AskedSettings, size: tuple[int, int]) -> dict[str, Any]:
        """The style's own resolution (engine.resolve calls it): at least the trimmed `size` and
        the learning rate. `settings` holds what was asked, `size` the size before trimming."""
        return {
            "size": presets.trim(size, cls.multiple),
            "learning_rate": settings.learning_rate or cls.default_lr,
        }

    def start_noise(self, size: tuple[int, int]) -> torch.Tensor | None:
        """The run's `init_noise` start image (1, 3, H, W) for `size` = (W, H) on the CPU, from
        the context's generator; None for the style's own start (or with an init image)."""
        kind = self.ctx.settings.init_noise
        if self.ctx.init_image is not None or kind == DEFAULT_NOISE:
            return None
        return noise_image(kind, size, self.ctx.generator)

    def parameters(self) -> list[dict[str, Any]]:
        """Optimiser parameter groups: [{'params': [...], 'lr': ...}, ...]."""
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

    def modules(self) -> list[torch.nn.Module]:
        """The models `render` runs through: a prompt cancel may land inside their blocks
        (`engine.interrupt`). None by default."""
        return []

    def warp(self, camera: Camera) -> None:
        """Move the picture by an animation's camera between two frames (`engine.camera`):
        what the move uncovers is filled, never left black. Random numbers come from the
        context's generator only."""
        raise NotImplementedError(f"the {self.name} style cannot animate")
