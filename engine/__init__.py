"""text2art's engine: CLIP-guided generation with no web, no global state, nothing at import."""

from engine.generate import Cancelled, Result, Step, generate
from engine.models import ModelCache
from engine.settings import Limits, Settings, SettingsError

__version__ = "0.1.0"

__all__ = [
    "Cancelled",
    "Limits",
    "ModelCache",
    "Result",
    "Settings",
    "SettingsError",
    "Step",
    "__version__",
    "generate",
]
