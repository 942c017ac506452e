"""Resolution: `Settings` (what was asked) -> `ResolvedSettings` (what will run, nothing left open).

Each value comes from the first of these that has it:
1. what the caller gave (the fields set on the `Settings`);
2. the defaults of the model guiding the run alone (its catalog entry's world, e.g. `shapes`);
3. the caller's `defaults` (a service's own defaults, such as the HTTP form's scale 2.5);
4. the quality and aspect presets; then the style's drawer trims the size to what it can draw.

The CLI, `POST /generate`, jobs and the web page all resolve here, so they agree.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any

import torch
from pydantic import ValidationError

from engine import catalog, presets
from engine.drawers import DRAWERS, drawer_class
from engine.errors import SettingsError
from engine.prompts import parse_prompts, split_scenes
from engine.settings import MAX_SEED, Limits, ResolvedSettings, Settings, settings_error


def resolve(
    settings: Settings, limits: Limits | None = None, defaults: Mapping[str, Any] | None = None
) -> ResolvedSettings:
    """Fill what the model, `defaults` and the presets decide; check the limits. Iterations
    nobody asked for (the quality's or the model's default) are cut to `max_iterations`, and a
    size nobody asked for (neither `size` nor `scale`) to `max_pixels`."""
    limits = limits or Limits()
    s = _with_defaults(settings, defaults or {})
    q = presets.QUALITY[s.quality]
    scale = s.scale if s.scale is not None else q.scale
    if scale > limits.max_scale:
        raise SettingsError("scale", f"must be at most {limits.max_scale:g}, got {scale:g}")
    iterations = s.iterations or q.iterations
    if "iterations" not in settings.model_fields_set:  # a default, not asked for: cut to the
        iterations = min(iterations, limits.max_iterations)  # limit (an asked number is checked)
    values: dict[str, Any] = {
        "scale": scale,
        "iterations": iterations,
        "cutouts": s.cutouts or presets.DEFAULT_CUTOUTS,
        "clip_models": s.clip_models or list(q.clip_models),
        "seed": s.seed if s.seed is not None else random.SystemRandom().randrange(2**32),
    }
    check_models_and_device(values["clip_models"], s.device)
    size = s.size or presets.base_size(s.aspect, scale)
    if not {"size", "scale"} & settings.model_fields_set:  # a default size: cut to the limit
        size = _within(size, limits.max_pixels)
    values.update(drawer_class(s.style).resolve(s, size))
    try:
        resolved = ResolvedSettings.model_validate({**dict(s), **values})
    except ValidationError as exc:
        raise settings_error(exc) from None
    if resolved.seed + resolved.variations - 1 > MAX_SEED:
        raise SettingsError("seed", f"with {resolved.variations} variations, at most "
                            f"{MAX_SEED - resolved.variations + 1}")  # fmt: skip
    check_limits(resolved, limits)
    check_controls(resolved)
    return resolved


def _within(size: tuple[int, int], max_pixels: int) -> tuple[int, int]:
    """`size` shrunk, keeping its aspect, to at most `max_pixels` (a style's trim only lowers)."""
    w, h = size
    if w * h <= max_pixels:
        return size
    factor = math.sqrt(max_pixels / (w * h))
    return (max(8, math.floor(w * factor)), max(8, math.floor(h * factor)))


def as_resolved(settings: Settings, limits: Limits | None = None) -> ResolvedSettings:
    """Settings as they will run: resolved ones are only checked against `limits` (resolving
    them again would change nothing), others are resolved."""
    if isinstance(settings, ResolvedSettings):
        check_limits(settings, limits or Limits())
        return settings
    return resolve(settings, limits)


def _with_defaults(settings: Settings, defaults: Mapping[str, Any]) -> Settings:
    """The settings with what they leave out taken from the model's world, then `defaults`."""
    update = world_values(settings)
    given = {k for k in settings.model_fields_set if getattr(settings, k) is not None}
    given |= set(update)
    update.update({k: v for k, v in defaults.items() if k not in given})
    if not update:
        return settings
    try:
        return Settings.model_validate({**dict(settings), **update})
    except ValidationError as exc:
        raise settings_error(exc) from None


def world_values(s: Settings) -> dict[str, Any]:
    """The values of the guiding model's world that `s` leaves out.

    The world's canvas holds for every aspect and quality: the aspect's base size times the
    scale (the world's own unless one is given), and its pixel grid. A quality above draft keeps
    its iterations; what one style decides (a pixel grid) means nothing to the others; in a fast
    world the style takes its `fast_lr`.
    """
    world = catalog.world_defaults(s.clip_models)
    if world is None:
        return {}
    given = {name for name in s.model_fields_set if getattr(s, name) is not None}
    skip = set(given)
    if s.quality != "draft":
        skip.add("iterations")
    drawer = drawer_class(s.style)
    skip |= {f for other in DRAWERS.values() if other is not drawer for f in other.decides}
    values = {**world.values, **world.canvas(s.aspect, s.scale if "scale" in given else None)}
    if world.fast and drawer.fast_lr is not None:
        values["learning_rate"] = drawer.fast_lr
    return {k: v for k, v in values.items() if k not in skip}


def check_models_and_device(clip_models: list[str], device: str | None) -> None:
    """Raise `SettingsError` for an unknown CLIP model or a device name torch does not know."""
    for name in clip_models:
        try:
            catalog.split_clip_name(name)
        except ValueError as exc:
            raise SettingsError("clip_models", str(exc)) from None
    if device:
        parse_device(device)


def parse_device(name: str) -> torch.device:
    """`name` as a torch device; `SettingsError` when torch knows no such device."""
    try:
        return torch.device(name)
    except (RuntimeError, ValueError):
        raise SettingsError(
            "device", f"unknown device {name!r}; use cpu, cuda, cuda:N (a GPU's index) or mps"
        ) from None


def usable_device(name: str | None) -> torch.device:
    """The device a run on this machine takes: `name`, else CUDA when there is a GPU, else the
    CPU; `SettingsError` when `name` asks for a GPU this machine does not have."""
    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = parse_device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise SettingsError("device", f"{name!r}, but this machine has no CUDA GPU; use cpu")
        if device.index is not None and device.index >= count:
            raise SettingsError("device", f"{name!r}, but this machine has {count} CUDA GPUs "
                                f"(cuda:0 to cuda:{count - 1})")  # fmt: skip
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise SettingsError("device", f"{name!r}, but this machine has no Apple GPU; use cpu")
    return device


def world_canvases(clip_models: list[str] | None) -> dict[str, tuple[int, int]]:
    """aspect -> base size at scale 1 in the world of the models guiding a run alone ({}: the
    models bring no canvas, the presets' `ASPECT` holds)."""
    world = catalog.world_defaults(clip_models)
    return dict(world.canvases) if world is not None else {}


def check_controls(s: Settings) -> None:
    """Raise `SettingsError` for a creative control that would do nothing as asked."""
    unset = Settings.model_fields["symmetry_weight"].get_default()
    if s.symmetry == "none" and s.symmetry_weight != unset:
        raise SettingsError(
            "symmetry_weight", "has no effect without symmetry; give symmetry horizontal, "
            "vertical or both",
        )  # fmt: skip
    if s.init_image and s.init_noise != "default":
        raise SettingsError(
            "init_noise", "the init image is the start; give no init_noise with an init_image"
        )


def check_limits(s: ResolvedSettings, limits: Limits) -> None:
    """Raise `SettingsError` for the first resolved value over a configurable limit."""
    w, h = s.size
    if w * h > limits.max_pixels:
        raise SettingsError(
            "size", f"{w}x{h} is {w * h} pixels; at most {limits.max_pixels} are allowed"
        )
    for field, value, most in (
        ("iterations", s.iterations, limits.max_iterations),
        ("cutouts", s.cutouts, limits.max_cutouts),
        ("strokes", s.strokes, limits.max_strokes),
        ("variations", s.variations, limits.max_variations),
    ):
        if value > most:
            raise SettingsError(field, f"must be between 1 and {most}, got {value}")
    if s.frames > limits.max_frames:
        raise SettingsError("frames", f"must be between 0 and {limits.max_frames}, got {s.frames}")
    if s.total_iterations > limits.max_iterations:
        raise SettingsError(
            "frame_iterations",
            f"the animation would run {s.total_iterations} iterations (iterations + (frames - 1) "
            f"x frame_iterations); at most {limits.max_iterations}: lower frames or "
            "frame_iterations",
        )
    if len(s.prompts) > limits.max_prompt_chars:
        raise SettingsError("prompts", f"the text is {len(s.prompts)} characters long; "
                            f"at most {limits.max_prompt_chars} are allowed")  # fmt: skip
    n = max(len(parse_prompts(scene)) for scene in split_scenes(s.prompts)) + len(s.image_prompts)
    if n > limits.max_prompts:
        raise SettingsError("prompts", f"{n} prompts given; at most {limits.max_prompts}")
