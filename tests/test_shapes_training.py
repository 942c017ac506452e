"""The training script of the 'shapes' CLIP: its hard negatives, its losses, its reproducibility."""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import torch

from engine.shapes.model import ShapesClip, vocabulary
from engine.shapes.world import captioned_scene
from scripts import train_shapes_model as train


def _changed(a: object, b: object) -> list[str]:
    fields = ("shape", "colour", "position", "size", "background")
    return [f for f in fields if getattr(a, f) != getattr(b, f)]


def test_hard_negatives_change_one_named_attribute_mostly_the_shape() -> None:
    rng = np.random.default_rng(0)
    counts: Counter[str] = Counter()
    for _ in range(600):
        s = captioned_scene(rng, two=0.3)
        n = train.hard_negative(s, rng)
        changed = _changed(s, n)
        assert len(changed) == 1 and n.caption() != s.caption(), (s, n)
        attr = changed[0]
        said = {"position": s.say_position, "size": s.say_size, "background": s.say_background}
        assert said.get(attr, True), f"{attr} changed but not named: {s.caption()!r}"
        if attr == "colour":  # never the background's or the other shape's colour
            assert n.colour not in {t.colour for t in s.shapes()[1:]} | {s.background}
        counts[attr] += 1
    assert 0.5 < counts["shape"] / 600 < 0.7  # shape_share = 0.6
    assert counts["colour"] > 50 and counts["position"] > 20


def test_picture_loss_is_lowest_for_the_true_picture() -> None:
    g = torch.Generator().manual_seed(0)
    shares = torch.softmax(torch.randn(2, 9, 8, 8, generator=g) * 5, dim=1)
    exact = train.picture_loss(torch.log(shares), shares)
    wrong = train.picture_loss(torch.log(shares.roll(1, dims=1)), shares)
    assert exact < wrong
    entropy = -(shares * torch.log(shares)).sum(1)  # the least a cross-entropy can be
    assert exact >= entropy.min() - 1e-5


def test_contrastive_loss_prefers_matching_pairs() -> None:
    g = torch.Generator().manual_seed(1)
    image = torch.nn.functional.normalize(torch.randn(4, 16, generator=g), dim=-1)
    negatives = torch.nn.functional.normalize(torch.randn(4, 16, generator=g), dim=-1)
    scale = torch.tensor(20.0)
    right = train.contrastive_loss(scale, image, torch.cat([image, negatives]))
    swapped = train.contrastive_loss(scale, image, torch.cat([negatives, image]))
    assert right < 0.1 < swapped


def _tiny_run(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = ShapesClip(len(vocabulary()))
    data = train.Batches(64, 16, seed)
    train.train_picture(model, data, 3)
    train.train_shape(model, data, 3)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_training_is_seeded_and_trains_both_branches_apart() -> None:
    torch.manual_seed(0)
    start = ShapesClip(len(vocabulary())).state_dict()
    a, b = _tiny_run(0), _tiny_run(0)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # reproducible
    moved = {k for k in a if not torch.equal(a[k], start[k])}
    assert any(k.startswith("text.words.") for k in moved)  # phase 1: the picture branch
    assert any(k.startswith("text.shape_words.") for k in moved)  # phase 2: the shape branch
    assert "visual.shape_conv.weight" in moved
    c = _tiny_run(1)
    assert not torch.equal(a["text.seed.0.weight"], c["text.seed.0.weight"])


def test_fresh_batches_are_new_scenes() -> None:
    data = train.Batches(32, 8, 0)
    scenes, x = data(fresh=True)
    assert len(scenes) == 8 and x.shape == (8, 3, 64, 64)
    assert not {dataclasses.astuple(s) for s in scenes} <= {
        dataclasses.astuple(s) for s in data.scenes
    }
