"""What several benchmarks share: a model cache holding the image style's VQGAN at full size
with random weights under its real name, so a bench costs what the real model costs and
downloads nothing."""

from __future__ import annotations

import torch

from engine import ModelCache
from engine.vqgan import IMAGENET_F16_16384, build_vqgan

VQGAN_NAME = "imagenet_f16_16384"  # cached with random weights under the real name


def with_random_vqgan(device: torch.device, models: ModelCache | None = None) -> ModelCache:
    """`models` (a new cache by default) with the random full-size VQGAN on `device`."""
    models = models or ModelCache()
    g = torch.Generator().manual_seed(0)
    models.get("vqgan", VQGAN_NAME, device, lambda: build_vqgan(IMAGENET_F16_16384, g, device))
    return models
