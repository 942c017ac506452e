"""Zero-shot retrieval gates of the 'shapes' CLIP and judges of what it draws (an evaluation
harness of scripts/eval_shapes_model.py and the tests: it does not ship with the engine)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from engine.shapes.world import (
    COLOURS,
    POSITIONS,
    SHAPES,
    Scene,
    Shape,
    random_scene,
    render,
    to_array,
    with_defaults,
)

GATES = {"colour": 0.95, "shape": 0.85, "position": 0.80}


def variants(s: Scene, attr: str) -> list[Scene]:
    """The scene first, then every scene differing only in `attr`."""
    values = {
        "colour": [c for c in COLOURS if c not in (s.colour, s.background)],
        "shape": [x for x in SHAPES if x != s.shape],
        "position": [p for p in POSITIONS if p != s.position],
    }[attr]
    return [s] + [dataclasses.replace(s, **{attr: v}) for v in values]  # type: ignore[arg-type]


def held_out(n: int, seed: int) -> list[Scene]:
    """n scenes with every attribute named in the caption (seed apart from training's 0)."""
    rng = np.random.default_rng(seed)
    return [random_scene(rng, mention=1.0) for _ in range(n)]


@torch.no_grad()
def accuracies(clip: Any, scenes: list[Scene], seed: int) -> dict[str, float]:
    """Fraction of scenes whose own caption ranks first, per attribute."""
    rng = np.random.default_rng(seed + 1)
    x = torch.from_numpy(np.stack([to_array(render(s, 64, 0.04, rng)) for s in scenes]))
    ims = clip.encode_image(x)  # (n, d)
    out = {}
    for attr in GATES:
        hits = 0
        for i, s in enumerate(scenes):
            txt = clip.encode_text([v.caption() for v in variants(s, attr)])
            hits += int((txt @ ims[i]).argmax().item() == 0)
        out[attr] = hits / len(scenes)
    return out


# -- judging generated pictures ---------------------------------------------------------------


def distractors(scene: Scene) -> list[Scene]:
    """The scene, then every caption that differs from it in one thing it names: the (first)
    shape's colour, shape or position, the background, or, with two shapes, the second's colour
    and shape and the two swapped."""
    out = [scene] + [v for a in ("colour", "shape") for v in variants(scene, a)[1:]]
    if scene.say_position:
        out += variants(scene, "position")[1:]
    if scene.say_background:
        taken = {t.colour for t in scene.shapes()} | {scene.background}
        out += [dataclasses.replace(scene, background=c) for c in COLOURS if c not in taken]
    if scene.second is not None:
        second = scene.second
        out += [
            dataclasses.replace(scene, second=dataclasses.replace(second, colour=c))
            for c in COLOURS
            if c not in (scene.colour, second.colour, scene.background)
        ]
        out += [
            dataclasses.replace(scene, second=dataclasses.replace(second, shape=x))
            for x in SHAPES
            if x != second.shape
        ]
        first = scene.shapes()[0]
        swapped = dataclasses.replace(
            scene,
            shape=second.shape,
            colour=second.colour,
            second=dataclasses.replace(second, shape=first.shape, colour=first.colour),
        )
        out += [swapped] if swapped != scene else []
    return out


@torch.no_grad()
def ranks_first(clip: Any, image: np.ndarray, scene: Scene) -> bool:
    """Whether the model prefers the scene's own caption to all its `distractors`.
    image: (H, W, 3) uint8, resized to the model's input by its encoder."""
    x = torch.from_numpy(image.copy()).permute(2, 0, 1).float().div(255)[None]  # (1, 3, H, W)
    x = torch.nn.functional.interpolate(x, size=(clip.input_size,) * 2, mode="area")
    sims = clip.encode_text([d.caption() for d in distractors(scene)]) @ clip.encode_image(x)[0]
    return int(sims.argmax()) == 0


def nearest_colours(image: np.ndarray) -> np.ndarray:
    """Index into COLOURS of each pixel's nearest named colour.  (H, W, 3) uint8 -> (H, W)"""
    ref = np.array(list(COLOURS.values()), dtype=float)  # (K, 3)
    dist = ((image[..., None, :].astype(float) - ref) ** 2).sum(-1)  # (H, W, K)
    return np.asarray(dist.argmin(-1))


def colour_shares(image: np.ndarray) -> dict[str, float]:
    """Fraction of the pixels nearest to each named colour."""
    counts = np.bincount(nearest_colours(image).ravel(), minlength=len(COLOURS))
    return dict(zip(COLOURS, (counts / counts.sum()).tolist(), strict=True))


def colours_agree(image: np.ndarray, scene: Scene, least: float = 0.05) -> bool:
    """Every shape's colour covers at least `least` of the picture and is among the commonest
    colours besides the background (one per shape, plus one for neighbours such as red and
    orange that share pixels); a named background is the commonest colour of all."""
    shares = colour_shares(image)
    if scene.say_background and max(shares, key=shares.__getitem__) != scene.background:
        return False
    shares.pop(scene.background, None)
    wanted = [t.colour for t in scene.shapes()]
    top = sorted(shares, key=shares.__getitem__, reverse=True)[: len(wanted) + 1]
    return all(c in top and shares[c] >= least for c in wanted)


def positions_agree(image: np.ndarray, scene: Scene) -> bool:
    """Each shape's colour has its centre of mass on the named side (left/right of the middle,
    likewise top/bottom), or within a sixth of the side from the middle where the position is
    the centre (named, or left out: the world's default)."""
    names = nearest_colours(image)
    h, w = names.shape
    for thing in scene.shapes():
        ys, xs = np.nonzero(names == list(COLOURS).index(thing.colour))
        if len(xs) == 0:
            return False
        fx, fy = POSITIONS[thing.position]
        cx, cy = xs.mean() / (w - 1), ys.mean() / (h - 1)
        for want, got in ((fx, cx), (fy, cy)):
            if want != 0.5 and (got - 0.5) * (want - 0.5) <= 0:  # on the wrong side
                return False
            if want == 0.5 and abs(got - 0.5) > 1 / 6:  # not near the middle
                return False
    return True


def prompt(
    shape: str,
    colour: str,
    background: str | None = None,
    position: str | None = None,
    second: tuple[str, str, str] | None = None,
) -> Scene:
    """A prompt as people write it: size left out, position and background only when given
    (what is left out takes the world's defaults). `second` is (shape, colour, position) of a
    second shape."""
    scene = Scene(
        shape,
        colour,
        background or "white",
        position=position or "centre",
        say_size=False,
        say_position=position is not None,
        say_background=background is not None,
        second=Shape(*second) if second else None,
    )
    return with_defaults(scene)


# Prompts used while choosing the semantic settings below; the tests hold out their own.
TUNING_PROMPTS = [
    prompt("circle", "blue"),
    prompt("square", "red", "yellow"),
    prompt("star", "purple", position="right"),
    prompt("triangle", "green", "black"),
    prompt("ring", "orange"),
    prompt("circle", "yellow", position="left", second=("square", "blue", "right")),
]


def semantic_settings(scene: Scene, style: str, seed: int = 1) -> Any:
    """engine.Settings of the run `text2art generate CAPTION --clip-model shapes --style STYLE`
    makes on a CPU: everything else from the shapes world's defaults (presets.SHAPES_WORLD)."""
    from engine import Settings

    return Settings.create(
        prompts=scene.caption(), style=style, clip_models=["shapes"], seed=seed, device="cpu"
    )


def judge(clip: Any, image: np.ndarray, scene: Scene) -> dict[str, bool]:
    """The three verdicts on a generated picture: ranked first, colours, positions."""
    return {
        "ranked": ranks_first(clip, image, scene),
        "colours": colours_agree(image, scene),
        "positions": positions_agree(image, scene),
    }
