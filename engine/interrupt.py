"""Prompt cancel: a cancel that lands inside an iteration, within one block of a model.

`generate`'s `should_stop` is read between two iterations, where the run's state can be saved
and resumed to the same bytes. A person's cancel needs no state, only speed: at the largest
size one iteration on a CPU takes minutes. A `Tripwire` reads `should_abort()`

- at the loop's own boundaries (after each picture's render, each picture's cutouts, each CLIP
  batch: `check()`),
- when each block of a model starts its forward pass (every element of an `nn.ModuleList`:
  a CLIP transformer's residual blocks, a VQGAN decoder's levels and resnet blocks),
- and when the gradient reaches each block's output in the backward pass,

and raises `Cancelled` without a state there. The hooks only read a flag: gradients and
pictures are unchanged (the fingerprint test runs with them armed).

The models are shared by every run of a process (`ModelCache`), so a forward hook acts only
for the thread that armed it; a gradient hook belongs to one run's tensor anyway.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from engine.errors import Cancelled


def blocks(modules: Iterable[nn.Module]) -> list[nn.Module]:
    """The blocks of `modules` where a cancel may land: every element of an `nn.ModuleList`
    inside them (each module once)."""
    found: dict[int, nn.Module] = {}
    for module in modules:
        for inner in module.modules():
            if isinstance(inner, nn.ModuleList):
                found.update((id(block), block) for block in inner)
    return list(found.values())


class Tripwire:
    """Raises `Cancelled` (no state) as soon as `should_abort()` is true at a boundary."""

    def __init__(self, should_abort: Callable[[], bool] | None, where: Callable[[], str]):
        self.should_abort = should_abort
        self.where = where  # e.g. "iteration 3 of 300", for the message
        self.thread = threading.get_ident()

    @property
    def armed(self) -> bool:
        return self.should_abort is not None

    def check(self) -> None:
        """Raise `Cancelled` if the run is to stop now."""
        if self.should_abort is not None and self.should_abort():
            raise Cancelled(f"cancelled during {self.where()}")

    def _on_forward(self, module: nn.Module, args: Any, output: Any) -> None:
        if threading.get_ident() != self.thread:  # another run's use of a shared model
            return
        self.check()
        if isinstance(output, torch.Tensor) and output.requires_grad:
            output.register_hook(self._on_gradient)

    def _on_gradient(self, grad: torch.Tensor) -> None:
        self.check()  # returns None: the gradient is left as it is

    @contextmanager
    def armed_on(self, modules: Iterable[nn.Module]) -> Iterator[Tripwire]:
        """Hooks on the blocks of `modules` for the block; removed on the way out."""
        if self.should_abort is None:
            yield self
            return
        self.thread = threading.get_ident()
        handles = [block.register_forward_hook(self._on_forward) for block in blocks(modules)]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()
