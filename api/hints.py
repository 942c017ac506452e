"""What the web page suggests, as this server would run it (`GET /info`): each quality's
iterations, each aspect's size, the default scale, and prompts the loaded models understand.

Every figure comes from resolving a request the way `POST /generate` does (the server's model
overrides and the card's defaults), so a server on the bundled `shapes` models shows its world's
64x64 canvas and 100 iterations, and a server on the real models the quality presets.
"""

from __future__ import annotations

from typing import Any

from api.config import ApiConfig
from api.forms import resolve_settings, server_overrides
from engine import ASPECT, QUALITY, ResolvedSettings, Settings, prompt_hints, world_canvases
from engine.errors import SettingsError


def _resolved(config: ApiConfig, **values: Any) -> ResolvedSettings:
    """A request of `values` (the default style) as this server would resolve it."""
    given = {"prompts": "hint", "seed": 0, **values, **server_overrides(config)}
    return resolve_settings(Settings.create(**given), config)


def run_hints(config: ApiConfig) -> dict[str, Any]:
    """`qualities`, `aspects` and `default_scale` of `/info`, as this server runs them."""
    try:
        qualities = {name: _resolved(config, quality=name) for name in QUALITY}
        aspects = {name: _resolved(config, aspect=name) for name in ASPECT}
    except SettingsError:  # a misconfigured server (serve refuses to start with one): presets
        return preset_hints()
    bases = world_canvases(config.clip_models) or ASPECT
    return {
        "qualities": {
            name: {"clip_models": list(s.clip_models), "iterations": s.iterations}
            for name, s in qualities.items()
        },
        "aspects": {
            name: {"base_size": list(bases.get(name, ASPECT[name])), "default_size": list(s.size)}
            for name, s in aspects.items()
        },
        "default_scale": qualities["draft"].scale,
    }


def preset_hints() -> dict[str, Any]:
    """The quality and aspect presets as they are (no model, no world)."""
    return {
        "qualities": {
            name: {"clip_models": list(q.clip_models), "iterations": q.iterations}
            for name, q in QUALITY.items()
        },
        "aspects": {
            name: {"base_size": list(b), "default_size": list(b)} for name, b in ASPECT.items()
        },
        "default_scale": QUALITY["draft"].scale,
    }


def prompt_help(config: ApiConfig) -> dict[str, Any]:
    """An example prompt and keywords to add, for the models this server runs by default."""
    hints = prompt_hints(config.clip_models or list(QUALITY["draft"].clip_models))
    return {"example": hints.example, "keywords": list(hints.keywords)}
