"""Settings: every generation option, its default, limits and help text, in one place.

The CLI flags, the HTTP form fields, the JSON schema and the README table all derive from the
`Settings` model below. Option names follow clipit so notebook users feel at home.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from engine import presets
from engine.camera import CAMERA_FIELDS, canonical, parse_schedule
from engine.drawers import DEFAULT_STYLE, describe_styles, list_drawers, normalise_style
from engine.errors import SettingsError
from engine.noise import INIT_NOISES
from engine.optimisers import DEFAULT_OPTIMISER, OPTIMISERS
from engine.prompts import image_prompt_entry, parse_image_prompt, parse_prompts, split_scenes

QUALITIES = tuple(presets.QUALITY)
ASPECTS = tuple(presets.ASPECT)
MAX_VARIATIONS = 4  # pictures in one batch (each adds its cutouts to the CLIP batch)
MAX_SEED = 2**63 - 1
SYMMETRIES = ("none", "horizontal", "vertical", "both")
# Fields added after PNGs and run states were first written: a record of the settings (PNG
# metadata, a run's identity) leaves each out while it has its default, so a picture made
# without them keeps its bytes, and an older text2art (whose settings forbid unknown fields)
# still reads it with `--from`.
QUIET_DEFAULTS = (
    "optimiser", "symmetry", "symmetry_weight", "tile", "init_noise", "augments", "cut_power",
    "save_every", "stroke_width", "pixel_shape",
)  # fmt: skip


def choices(field: str) -> tuple[str, ...] | None:
    """The names a field's value is one of (any case; styles have aliases too), or None for a
    free field: the validators check them, and the CLI lists them in its help. The styles are
    the registered drawers (engine.drawers)."""
    named = {"style": tuple(list_drawers()), "quality": QUALITIES, "aspect": ASPECTS}
    named |= {"optimiser": tuple(OPTIMISERS), "symmetry": SYMMETRIES, "init_noise": INIT_NOISES}
    named["pixel_shape"] = presets.PIXEL_SHAPES
    return named.get(field)


class Limits(BaseModel):
    """Configurable ceilings that protect a shared GPU (a service may lower or raise them)."""

    model_config = ConfigDict(frozen=True)

    max_pixels: int = Field(1024 * 1024, ge=64, description="Largest width x height.")
    max_iterations: int = Field(5000, ge=1, description="Most optimisation steps.")
    max_cutouts: int = Field(128, ge=1, description="Most cutouts per step.")
    max_prompt_chars: int = Field(1000, ge=1, description="Longest prompt text.")
    max_prompts: int = Field(8, ge=1, description="Most prompts (text and image together).")
    max_strokes: int = Field(4096, ge=1, description="Most strokes for the painting style.")
    max_scale: float = Field(8.0, gt=0, description="Largest scale factor.")
    max_variations: int = Field(
        MAX_VARIATIONS,
        ge=1,
        le=MAX_VARIATIONS,
        description="Most pictures in one batch (memory grows with each).",
    )
    max_frames: int = Field(240, ge=1, description="Most frames of an animation.")


S = TypeVar("S", bound="Settings")


class Settings(BaseModel):
    """All options of one generation. `None` means "let the presets decide" (engine.resolve)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    prompts: str = Field(
        "Underwater City",
        description="Text prompts: 'a | b:0.5 | c:-1:0.2' gives text, weight and stop; "
        "a negative weight pushes away from that text.",
        examples=["underwater city | artstation:0.5"],
    )
    image_prompts: list[str] = Field(
        default_factory=list,
        description="Image files whose CLIP embedding is a target, like a text prompt; "
        "'file.png:0.5' gives a weight (negative: away from it) and ':0.5:0.2' a stop.",
    )
    init_image: str | None = Field(
        None, description="Image file to start from instead of noise.", examples=[None]
    )
    init_weight: float = Field(
        0.0, ge=0.0, le=100.0, description="Keep the image close to the init image (0 = off)."
    )
    iterations: int | None = Field(
        None, ge=1, description="Optimisation steps (default: the quality's).", examples=[200]
    )
    quality: str = Field(
        "draft",
        description="draft, normal, better or best: CLIP models, iterations and scale.",
        examples=["draft"],
    )
    aspect: str = Field(
        "square", description="widescreen, portrait or square.", examples=["square"]
    )
    scale: float | None = Field(
        None,
        gt=0.0,
        description="Multiplies the aspect's base size (default: the quality's).",
        examples=[2.5],
    )
    size: tuple[int, int] | None = Field(
        None, description="Explicit WIDTHxHEIGHT; wins over aspect and scale.", examples=[None]
    )
    style: str = Field(
        DEFAULT_STYLE,
        description=f"{describe_styles()}; any case.",
        examples=["pixel art"],
    )
    seed: int | None = Field(
        None, ge=0, le=MAX_SEED, description="Random seed (drawn and reported when empty)."
    )
    # At most `Limits.max_variations` (checked at resolution: a service may allow fewer).
    variations: int = Field(
        1,
        ge=1,
        description="Pictures made side by side from the seeds seed, seed+1, ... in one batch "
        "(each reproducible on its own with its seed).",
    )
    make_video: bool = Field(False, description="Also make an MP4 of the generation.")
    save_every: int = Field(
        0, ge=0, description="Also keep the picture every N iterations as a PNG (0: never)."
    )
    # -- animation (engine.camera): 0 frames is a still picture --------------------------------
    frames: int = Field(
        0,
        ge=0,
        description="Frames of an animation (0: a still picture); the video has one per frame.",
    )
    frame_iterations: int = Field(
        20, ge=1, description="Iterations of each frame after the first (which gets iterations)."
    )
    zoom: str = Field(
        "1",
        description="Scale per frame (1: none, 1.04: zoom in), or keyframes like "
        "'0:(1.0), 30:(1.04), 60:(1.0)'.",
        examples=["1.04"],
    )
    angle: str = Field(
        "0",
        description="Degrees turned per frame, counter-clockwise, or keyframes.",
        examples=["0"],
    )
    translate_x: str = Field(
        "0", description="Pixels moved right per frame, or keyframes.", examples=["0"]
    )
    translate_y: str = Field(
        "0", description="Pixels moved down per frame, or keyframes.", examples=["0"]
    )
    fps: int = Field(12, ge=1, le=60, description="Frames per second of an animation's video.")
    cutouts: int | None = Field(
        None, ge=1, description="Augmented crops per step seen by CLIP (default 40)."
    )
    augments: list[str] = Field(
        default_factory=lambda: list(presets.DEFAULT_AUGMENTS),
        description="The cutouts' augmentations, comma-separated, from "
        f"{', '.join(presets.AUGMENTS)} (or none; default {','.join(presets.DEFAULT_AUGMENTS)}).",
        examples=[",".join(presets.DEFAULT_AUGMENTS)],
    )
    cut_power: float = Field(
        1.0,
        gt=0.0,
        le=10.0,
        description="Shapes the cutouts' sizes: above 1 more small crops (detail), below 1 more "
        "large ones (nerdyrodent's -cutp).",
    )
    clip_models: list[str] | None = Field(
        None,
        description="CLIP models by clipit's names (ViT-B/32, ViT-B/16, RN50, ...), the bundled "
        "offline 'shapes', 'tiny-random' (tests), 'NAME:random' or 'NAME=/path/to/weights' "
        "(default: the quality's).",
        examples=[["ViT-B/32"]],
    )
    learning_rate: float | None = Field(
        None, gt=0.0, le=100.0, description="The optimiser's step size (default: the style's)."
    )
    # -- creative controls (README: Creative controls) -----------------------------------------
    optimiser: str = Field(
        DEFAULT_OPTIMISER,
        description=f"PyTorch's optimiser: {', '.join(OPTIMISERS)}.",
        examples=[DEFAULT_OPTIMISER],
    )
    symmetry: str = Field(
        "none",
        description="Mirror symmetry as a loss: none, horizontal (left-right mirror), vertical "
        "(top-bottom) or both.",
        examples=["none"],
    )
    symmetry_weight: float = Field(
        1.0, ge=0.0, le=100.0, description="Weight of the symmetry loss (needs symmetry)."
    )
    tile: bool = Field(False, description="A seamless tile: the picture wraps around like a torus.")
    init_noise: str = Field(
        "default",
        description="How a picture starts without an init image: pixels, gradient (smooth), "
        "perlin (fractal) or default (the style's own).",
        examples=["default"],
    )
    pixel_size: tuple[int, int] | None = Field(
        None,
        description="Pixel-art grid as COLUMNSxROWS (default ~80x45 wide, 40x40 square, "
        "40x50 portrait).",
    )
    palette: str | list[str] | None = Field(
        None,
        description=f"Pixel-art palette: a name ({', '.join(presets.PALETTES)}) or hex "
        "colours like '#1a1c2c,#5d275d'.",
    )
    pixel_shape: str = Field(
        "square", description="Pixel-art cells: square, or hex (hexagons).", examples=["square"]
    )
    smoothness_weight: float = Field(
        0.0, ge=0.0, le=100.0, description="Penalise differences between neighbouring pixels."
    )
    saturation_weight: float = Field(
        0.0, ge=0.0, le=100.0, description="Penalise over-saturated colours."
    )
    vqgan_model: str = Field(
        "imagenet_f16_16384", description="VQGAN checkpoint for the image style."
    )
    strokes: int = Field(1024, ge=1, description="Number of strokes for the painting style.")
    stroke_width: tuple[float, float] | None = Field(
        None,
        description="Painting strokes' width as MIN,MAX pixels; they start at MIN (default: "
        "1 up to 5% of the height).",
    )
    decoder_checkpointing: bool | None = Field(
        None,
        description="Recompute VQGAN decoder activations to save GPU memory "
        "(default: on from 640x352 pixels).",
    )
    device: str | None = Field(None, description="torch device (default: cuda if available).")

    # -- validators: one message per field, naming what is allowed --------------------------
    @field_validator("style", mode="before")
    @classmethod
    def _style(cls, v: Any) -> str:
        return normalise_style(v)

    @field_validator("quality", mode="before")
    @classmethod
    def _quality(cls, v: Any) -> str:
        return _choice(v, QUALITIES)

    @field_validator("aspect", mode="before")
    @classmethod
    def _aspect(cls, v: Any) -> str:
        return _choice(v, ASPECTS)

    @field_validator("optimiser", "symmetry", "init_noise", "pixel_shape", mode="before")
    @classmethod
    def _named(cls, v: Any, info: ValidationInfo) -> str:
        allowed = choices(str(info.field_name))
        assert allowed is not None, "a named field has choices"
        return _choice(v, allowed)

    @field_validator("size", "pixel_size", mode="before")
    @classmethod
    def _size(cls, v: Any) -> tuple[int, int] | None:
        return presets.parse_size(v)

    @field_validator("stroke_width", mode="before")
    @classmethod
    def _stroke_width(cls, v: Any) -> tuple[float, float] | None:
        return presets.parse_widths(v)

    @field_validator("prompts")
    @classmethod
    def _prompts(cls, v: str) -> str:
        for scene in split_scenes(v):
            parse_prompts(scene)  # raises ValueError with the reason
        return v

    @field_validator(*CAMERA_FIELDS, mode="before")
    @classmethod
    def _schedule(cls, v: Any, info: ValidationInfo) -> str:
        if v is None or (isinstance(v, str) and not v.strip()):
            return "1" if info.field_name == "zoom" else "0"
        parse_schedule(v, str(info.field_name))  # raises ValueError saying where
        return canonical(v)

    @field_validator("image_prompts")
    @classmethod
    def _image_prompts(cls, v: list[str]) -> list[str]:
        parsed = [parse_image_prompt(entry) for entry in v]  # raises ValueError with the reason
        return [image_prompt_entry(p.text, p.weight, p.stop) for p in parsed]

    @field_validator("clip_models", mode="before")
    @classmethod
    def _clip_models(cls, v: Any) -> list[str] | None:
        if v is None or v == "" or v == []:
            return None
        items = v.split(",") if isinstance(v, str) else list(v)
        items = [str(m).strip() for m in items if str(m).strip()]
        return items or None

    @field_validator("augments", mode="before")
    @classmethod
    def _augments(cls, v: Any) -> list[str]:
        return presets.parse_augments(v if v is not None else "none")

    @field_validator("palette", mode="before")
    @classmethod
    def _palette(cls, v: Any) -> str | list[str] | None:
        if v is None or v == "":
            return None
        presets.parse_palette(v)  # raises ValueError listing the named palettes
        return v

    # -- construction helpers ---------------------------------------------------------------
    @classmethod
    def create(cls: type[S], **values: Any) -> S:
        """Build settings, turning pydantic's errors into a `SettingsError` naming the field."""
        try:
            return cls(**values)
        except ValidationError as exc:
            raise settings_error(exc) from None

    def to_json_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict (tuples become lists)."""
        return self.model_dump(mode="json")

    @property
    def total_iterations(self) -> int:
        """Every iteration of the run: an animation's first frame gets `iterations`, each
        later frame `frame_iterations` (0 iterations while the presets have not decided)."""
        return (self.iterations or 0) + max(0, self.frames - 1) * self.frame_iterations

    @property
    def wants_video(self) -> bool:
        """Whether the run makes an MP4: asked for, or an animation (which is one)."""
        return self.make_video or self.frames > 0


class ResolvedSettings(Settings):
    """Settings with every value the loop needs decided; `pixel_size` (pixel art) and
    `decoder_checkpointing` (image) stay None for the styles that have no use for them."""

    iterations: int = Field(ge=1, description="Optimisation steps.")
    scale: float = Field(gt=0.0, description="Multiplies the aspect's base size.")
    size: tuple[int, int] = Field(description="WIDTHxHEIGHT of the picture.")
    seed: int = Field(ge=0, le=MAX_SEED, description="Random seed.")
    cutouts: int = Field(ge=1, description="Augmented crops per step seen by CLIP.")
    clip_models: list[str] = Field(description="CLIP models guiding the run.")
    learning_rate: float = Field(gt=0.0, le=100.0, description="The optimiser's step size.")


def record(settings: Settings, exclude: set[str]) -> dict[str, Any]:
    """The settings as JSON for a record (PNG metadata, a run's identity), without `exclude`
    and without the `QUIET_DEFAULTS` that have their default."""
    data = settings.model_dump(mode="json", exclude=exclude)
    for name in QUIET_DEFAULTS:
        if name in data and data[name] == _default(name):
            del data[name]
    return data


def _default(name: str) -> Any:
    default = Settings.model_fields[name].get_default(call_default_factory=True)
    return list(default) if isinstance(default, list | tuple) else default


def picture_seed(first: int, index: int) -> int:
    """The seed of picture `index` (from 1) of a batch of variations whose seed is `first`."""
    return first + index - 1


def solo(settings: S, seed: int) -> S:
    """The settings that make one picture of a batch alone: its seed, one picture."""
    return settings.model_copy(update={"seed": seed, "variations": 1})


def _choice(value: Any, allowed: tuple[str, ...]) -> str:
    v = str(value).strip().lower()
    if v not in allowed:
        raise ValueError(f"unknown value {value!r}; choose one of {', '.join(allowed)}")
    return v


def settings_error(exc: ValidationError) -> SettingsError:
    """The first pydantic error as a `SettingsError` with a readable message."""
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "settings"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err["type"] == "extra_forbidden":
        msg = f"unknown option; known options are {', '.join(Settings.model_fields)}"
    return SettingsError(field, msg)
