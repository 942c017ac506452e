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
- presets: `QUALITY`, `ASPECT`, `base_size`;
- image prompts: `parse_image_prompt` ('file.png:0.5' -> file, weight, stop) and
  `image_prompt_entry` (back);
- animation: `frame_progress` (which frame a run is at), `CAMERA_FIELDS` (the camera's moves)
  and `schedule_pattern` (a move's number-or-keyframes form, as a regular expression);
- resuming: `RunState` (a stopped run), `encode_state` / `decode_state`, `write_state` /
  `read_state`, `state_path` (where the CLI keeps one), `run_identity`, `Checkpoint`.
"""

from engine.animation import frame_progress
from engine.camera import CAMERA_FIELDS, schedule_pattern
from engine.catalog import (
    VQGAN_MODELS,
    bundled_models,
    known_clip_models,
    list_models,
    model_files,
    prompt_hints,
)
from engine.drawers import drawer_class, list_drawers, normalise_style
from engine.errors import (
    Cancelled,
    CheckpointError,
    EngineError,
    SettingsError,
    StateError,
    WeightsError,
)
from engine.files import atomic_write, atomic_write_bytes, publish
from engine.generate import Result, Step, generate, pick_device
from engine.models import ModelCache
from engine.output import output_filename, read_png_settings, save_outputs
from engine.prepare import load_models, missing_weights
from engine.presets import ASPECT, QUALITY, base_size
from engine.prompts import image_prompt_entry, parse_image_prompt
from engine.resolve import ResolvedSettings, resolve, usable_device, world_canvases
from engine.runstate import (
    STATE_SUFFIX,
    Checkpoint,
    RunState,
    decode_state,
    encode_state,
    read_state,
    run_identity,
    state_path,
    write_state,
)
from engine.settings import MAX_VARIATIONS, Limits, Settings, choices, picture_seed, solo
from engine.version import __version__
from engine.weights import cache_dir, ensure_file

__all__ = [
    "ASPECT",
    "CAMERA_FIELDS",
    "MAX_VARIATIONS",
    "QUALITY",
    "STATE_SUFFIX",
    "VQGAN_MODELS",
    "Cancelled",
    "Checkpoint",
    "CheckpointError",
    "EngineError",
    "Limits",
    "ModelCache",
    "ResolvedSettings",
    "Result",
    "RunState",
    "Settings",
    "SettingsError",
    "StateError",
    "Step",
    "WeightsError",
    "__version__",
    "atomic_write",
    "atomic_write_bytes",
    "base_size",
    "bundled_models",
    "cache_dir",
    "choices",
    "decode_state",
    "drawer_class",
    "encode_state",
    "ensure_file",
    "frame_progress",
    "image_prompt_entry",
    "generate",
    "known_clip_models",
    "list_drawers",
    "list_models",
    "load_models",
    "missing_weights",
    "model_files",
    "normalise_style",
    "output_filename",
    "parse_image_prompt",
    "pick_device",
    "prompt_hints",
    "picture_seed",
    "publish",
    "read_png_settings",
    "read_state",
    "resolve",
    "run_identity",
    "save_outputs",
    "schedule_pattern",
    "solo",
    "state_path",
    "write_state",
    "usable_device",
    "world_canvases",
]
