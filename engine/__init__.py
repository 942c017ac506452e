"""text2art's engine: CLIP-guided generation with no web, no global state, nothing at import."""

from engine.errors import Cancelled, CheckpointError, EngineError, SettingsError, WeightsError
from engine.generate import Result, Step, generate
from engine.models import ModelCache
from engine.resolve import ResolvedSettings, resolve
from engine.settings import Limits, Settings

__version__ = "0.1.0"

__all__ = [
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
    "generate",
    "resolve",
]
