"""A thread-safe cache of loaded models (CLIP, VQGAN), shared by all runs of a process."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch


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

    def clip(self, name: str, device: torch.device) -> Any:
        """A `engine.perceptor.ClipModel` by clipit name, 'tiny-random' or a weights file."""
        from engine.perceptor import load_clip

        return self.get("clip", name, device, lambda: load_clip(name, device))

    def vqgan(self, name: str, device: torch.device) -> Any:
        """A VQGAN (engine.vqgan) by registry name or 'tiny-random'."""
        from engine.vqgan import load_named_vqgan

        return self.get("vqgan", name, device, lambda: load_named_vqgan(name, device))

    def loaded(self) -> list[str]:
        """'kind:name@device' for every loaded model."""
        with self._guard:
            return [f"{k}:{n}@{d}" for (k, n, d) in self._items]

    def clear(self) -> None:
        """Forget every model (frees memory once no run holds them)."""
        with self._guard:
            self._items.clear()
            self._locks.clear()
