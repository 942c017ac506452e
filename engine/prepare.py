"""Before a run starts: the weights files it needs and lacks, and its models loaded.

`text2art generate` fetches and loads through here before its progress bar starts (so a missing
file or a slow load never sits under a 0% bar); which models a run uses is its CLIP models and,
for a style that declares `uses_vqgan`, its VQGAN.
"""

from __future__ import annotations

from pathlib import Path

import torch

from engine import catalog
from engine.drawers import drawer_class
from engine.models import ModelCache
from engine.settings import ResolvedSettings
from engine.weights import WeightFile


def run_vqgan(settings: ResolvedSettings) -> str | None:
    """The VQGAN the run decodes with, or None when its style draws without one."""
    return settings.vqgan_model if drawer_class(settings.style).uses_vqgan else None


def missing_weights(settings: ResolvedSettings) -> list[tuple[str, WeightFile | None, Path]]:
    """(label, how to fetch it or None, where it goes) of each file the run needs and lacks."""
    return catalog.missing_files(settings.clip_models, run_vqgan(settings))


def load_models(
    settings: ResolvedSettings, device: torch.device, models: ModelCache | None = None
) -> ModelCache:
    """Load every model of the run into `models` (a new cache when None) and return it."""
    models = models if models is not None else ModelCache()
    for name in settings.clip_models:
        models.clip(name, device)
    vqgan = run_vqgan(settings)
    if vqgan is not None:
        models.vqgan(vqgan, device)
    return models
