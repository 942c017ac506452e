"""A thread-safe cache of loaded models (CLIP, VQGAN), shared by all runs of a process; which
names exist and how each loads is engine.catalog's."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from engine.catalog import load_clip, load_vqgan

if TYPE_CHECKING:
    from engine.perceptor import ClipModel
    from engine.vqgan import VQGAN


class ModelCache:
    """Loads each (kind, name, device) once; concurrent callers wait for the same load."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, str, str], Any] = {}
        self._locks: dict[tuple[str, str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, kind: str, name: str, device: torch.device, factory: Callable[[], Any]) -> Any:
        """The cached object for the key, built by `factory()` on first use."""
        key = (kind, name, str(device))
        with self._guard:
            if key in self._items:
                return self._items[key]
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._items:
                self._items[key] = factory()
            return self._items[key]

    def clip(self, name: str, device: torch.device) -> ClipModel:
        """A CLIP by catalog name ('ViT-B/32', 'shapes', ...), 'NAME:random' or 'NAME=/path'."""
        model: ClipModel = self.get("clip", name, device, lambda: load_clip(name, device))
        return model

    def vqgan(self, name: str, device: torch.device) -> VQGAN:
        """A VQGAN by catalog name ('imagenet_f16_16384', 'shapes', 'tiny-random', ...)."""
        model: VQGAN = self.get("vqgan", name, device, lambda: load_vqgan(name, device))
        return model

    def loaded(self) -> list[str]:
        """'kind:name@device' for every loaded model."""
        with self._guard:
            return [f"{k}:{n}@{d}" for (k, n, d) in self._items]

    def clear(self) -> None:
        """Forget every model (frees memory once no run holds them)."""
        with self._guard:
            self._items.clear()
            self._locks.clear()
