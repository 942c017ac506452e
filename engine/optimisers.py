"""The optimisers a run may use: PyTorch's own, by name, with what each keeps per parameter.

Every one here is element-wise (each value of a parameter has its own moments), so one optimiser
over every picture's parameters is one per picture, and a batch of variations gives each picture
the bytes of its solo run. A run's state (`engine.runstate`) saves what `state_dict()` holds per
parameter: `SCALARS` are 0-d tensors, every other entry has its parameter's shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

DEFAULT_OPTIMISER = "adam"  # what every run used before the choice existed

# name -> torch class, in the order the help texts list them.
OPTIMISERS: dict[str, Callable[[list[dict[str, Any]]], torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "radam": torch.optim.RAdam,
    "nadam": torch.optim.NAdam,
    "adagrad": torch.optim.Adagrad,
    "adamax": torch.optim.Adamax,
    "rmsprop": torch.optim.RMSprop,
}

# name -> the per-parameter state entries of that optimiser (with its default options).
STATE_KEYS: dict[str, frozenset[str]] = {
    "adam": frozenset({"step", "exp_avg", "exp_avg_sq"}),
    "adamw": frozenset({"step", "exp_avg", "exp_avg_sq"}),
    "radam": frozenset({"step", "exp_avg", "exp_avg_sq"}),
    "nadam": frozenset({"step", "mu_product", "exp_avg", "exp_avg_sq"}),
    "adagrad": frozenset({"step", "sum"}),
    "adamax": frozenset({"step", "exp_avg", "exp_inf"}),
    "rmsprop": frozenset({"step", "square_avg"}),
}
# State entries that are one number (0-d tensors), whatever the parameter's shape.
SCALARS = frozenset({"step", "mu_product"})


def make_optimiser(name: str, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """PyTorch's optimiser `name` over the parameter groups (each with its own `lr`)."""
    if name not in OPTIMISERS:
        raise ValueError(f"unknown optimiser {name!r}; choose one of {', '.join(OPTIMISERS)}")
    return OPTIMISERS[name](groups)


def state_keys(opt: torch.optim.Optimizer) -> frozenset[str]:
    """The per-parameter state entries `opt` keeps (`STATE_KEYS` of its kind)."""
    name = next((n for n, cls in OPTIMISERS.items() if type(opt) is cls), None)
    assert name is not None, f"{type(opt).__name__} is not one of OPTIMISERS"
    return STATE_KEYS[name]
