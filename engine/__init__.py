"""text2art's engine: CLIP-guided generation with no web, no global state, nothing at import.

This module is the engine's face: `api` (the service and the command line) imports from here
and from `engine.errors` only (`scripts.check_rules` holds it to that).
"""

from engine.errors import Cancelled, CheckpointError, EngineError, SettingsError, WeightsError
from engine.files import atomic_write, atomic_write_bytes, publish
from engine.generate import Result, Step, generate
from engine.models import ModelCache
from engine.output import output_filename, read_png_settings, save_outputs
from engine.resolve import ResolvedSettings, resolve
from engine.settings import MAX_VARIATIONS, Limits, Settings, picture_seed, solo
from engine.version import __version__

__all__ = [
    "MAX_VARIATIONS",
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
    "generate",
    "output_filename",
    "picture_seed",
    "publish",
    "read_png_settings",
    "resolve",
    "save_outputs",
    "solo",
]
