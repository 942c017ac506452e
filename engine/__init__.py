"""text2art's engine: CLIP-guided generation with no web, no global state, nothing at import.

This module is the engine's face: `api` (the service and the command line) imports from here
and from `engine.errors` only (`scripts.check_rules` holds it to that). What it offers:

- settings: `Settings` (every option), `resolve` -> `ResolvedSettings`, `Limits`, `choices`;
- styles: `list_drawers`, `drawer_class` (what a style declares), `normalise_style`;
- running: `generate` -> `Result`, progress as `Step`, `ModelCache`, `pick_device`, and before a
  run `missing_weights` / `load_models`;
- outputs: `save_outputs`, `output_filename`, `read_png_settings`, the batch helpers
  `picture_seed` / `solo`, and the atomic writes (`atomic_write`, `atomic_write_bytes`,
  `publish`);
- models and weights: the catalog (`known_clip_models`, `VQGAN_MODELS`, `list_models`,
  `bundled_models`, `model_files`) and the cache (`cache_dir`, `ensure_file`);
- presets: `QUALITY`, `ASPECT`, `base_size`.
"""

from engine.catalog import (
    VQGAN_MODELS,
    bundled_models,
    known_clip_models,
    list_models,
    model_files,
    prompt_hints,
)
from engine.drawers import drawer_class, list_drawers, normalise_style
from engine.errors import Cancelled, CheckpointError, EngineError, SettingsError, WeightsError
from engine.files import atomic_write, atomic_write_bytes, publish
from engine.generate import Result, Step, generate, pick_device
from engine.models import ModelCache
from engine.output import output_filename, read_png_settings, save_outputs
from engine.prepare import load_models, missing_weights
from engine.presets import ASPECT, QUALITY, base_size
from engine.resolve import ResolvedSettings, resolve, usable_device, world_canvases
from engine.settings import MAX_VARIATIONS, Limits, Settings, choices, picture_seed, solo
from engine.version import __version__
from engine.weights import cache_dir, ensure_file

__all__ = [
    "ASPECT",
    "MAX_VARIATIONS",
    "QUALITY",
    "VQGAN_MODELS",
    "Cancelled",
    "CheckpointError",
    "EngineError",
    "Limits",
    "ModelCache",
    "ResolvedSettings",
    "Result",
    "Settings",
    "SettingsError",
    "Step",
    "WeightsError",
    "__version__",
    "atomic_write",
    "atomic_write_bytes",
    "base_size",
    "bundled_models",
    "cache_dir",
    "choices",
    "drawer_class",
    "ensure_file",
    "generate",
    "known_clip_models",
    "list_drawers",
    "list_models",
    "load_models",
    "missing_weights",
    "model_files",
    "normalise_style",
    "output_filename",
    "pick_device",
    "prompt_hints",
    "picture_seed",
    "publish",
    "read_png_settings",
    "resolve",
    "save_outputs",
    "solo",
    "usable_device",
    "world_canvases",
]
