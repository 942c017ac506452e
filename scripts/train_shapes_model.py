"""Train the 'shapes' CLIP on the procedural world (seeded, CPU, about 25 minutes on 2 cores).

python scripts/train_shapes_model.py [--picture-steps 3500] [--shape-steps 2000] [--threads 2]

Two phases (engine.shapes.model describes the two parts of the embedding):
1. picture: the caption's imagined picture must predict the rendered one: per-cell
   cross-entropy of the text encoder's colour logits against the image's colour shares, each
   colour weighted by the inverse of its area so that a small shape counts as much as the
   background around it;
2. shape: the text encoder's shape branch and the image's shape filters learn CLIP's symmetric
   contrastive loss (Radford et al. 2021) on the shape part of the similarity, where each
   image's candidates also include its caption with one named attribute changed, 60% of the
   time its shape (hard negatives). Every batch is new scenes rendered on the spot (on a fixed
   pool the shape part learns the pool by heart: 78% shape retrieval against 86% for a
   comparable run on fresh scenes). The picture branch is not
   touched, and this phase draws its own random numbers, so it depends on phase 1 only
   through the weights.

The same seed and thread count give a bit-identical file; its sha256 is printed at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from engine.perceptor import CLIP_MEAN, CLIP_STD
from engine.shapes.model import ShapesClip, WordTokenizer, vocab_json, vocabulary
from engine.shapes.world import (
    COLOURS,
    POSITIONS,
    SHAPES,
    SIZES,
    Scene,
    captioned_scene,
    render,
)


def make_pool(n: int, rng: np.random.Generator) -> tuple[list[Scene], np.ndarray]:
    """n captioned scenes (30% with two shapes) and their 64 px renders (uint8, (n, 3, 64, 64)),
    each shape moved by up to 4% of the side."""
    scenes = [captioned_scene(rng, two=0.3) for _ in range(n)]
    imgs = np.stack([np.asarray(render(s, 64, 0.04, rng)).transpose(2, 0, 1) for s in scenes])
    return scenes, imgs


def hard_negative(s: Scene, rng: np.random.Generator, shape_share: float = 0.6) -> Scene:
    """The caption with one named attribute changed: the shape `shape_share` of the time, else
    the colour, position, size or background (those the caption names)."""
    said = {"position": s.say_position, "size": s.say_size, "background": s.say_background}
    others = ["colour", *[a for a, yes in said.items() if yes]]
    attr = "shape" if rng.random() < shape_share else str(rng.choice(others))
    pools = {
        "colour": list(COLOURS),
        "shape": list(SHAPES),
        "position": list(POSITIONS),
        "size": list(SIZES),
        "background": list(COLOURS),
    }
    current = getattr(s, attr)
    taken = {t.colour for t in s.shapes()} | {s.background}
    choices = [v for v in pools[attr] if v != current and not (attr == "colour" and v in taken)]
    return dataclasses.replace(s, **{attr: str(rng.choice(choices))})  # type: ignore[arg-type]


def normalise(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] images -> CLIP's normalisation, as engine.perceptor.ClipModel feeds the model."""
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """What the drawers make of a picture, without moving it: 30% pixelated (8-32 cells a side,
    as pixel art draws), brightness +-5%, and the cutouts' noise.  (B, 3, 64, 64) in [0, 1]"""
    b = x.shape[0]
    pixelate = torch.rand(b, generator=g) < 0.3
    if pixelate.any():
        cells = int(torch.randint(8, 33, (1,), generator=g))
        small = F.adaptive_avg_pool2d(x[pixelate], cells)
        x = x.clone()
        x[pixelate] = F.interpolate(small, size=x.shape[-2:], mode="nearest")
    x = x * (1 + 0.1 * (torch.rand(b, 1, 1, 1, generator=g) - 0.5))
    noise = torch.rand(b, 1, 1, 1, generator=g) * 0.1  # as Cutouts(noise=0.1)
    return (x + noise * torch.randn(x.shape, generator=g)).clamp(0, 1)


def picture_loss(logits: torch.Tensor, shares: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of imagined colour logits (B, K, G, G) against colour shares (B, K, G, G),
    each cell weighted by the inverse area of its colours (floor 2% of the picture)."""
    ce = -(shares * F.log_softmax(logits, dim=1)).sum(1)  # (B, G, G)
    area = shares.mean((2, 3), keepdim=True).clamp_min(0.02)  # (B, K, 1, 1)
    weight = (shares / area).sum(1)  # (B, G, G)
    return ((ce * weight).sum((1, 2)) / weight.sum((1, 2))).mean()


def contrastive_loss(scale: torch.Tensor, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric loss on unit embeddings; `text` holds B captions then B hard negatives.
    (B, d), (2B, d)"""
    b = len(image)
    target = torch.arange(b)
    per_image = F.cross_entropy(scale * image @ text.T, target)  # among captions and negatives
    per_text = F.cross_entropy(scale * text[:b] @ image.T, target)
    return (per_image + per_text) / 2


class Batches:
    """Random batches of (scenes, CLIP-normalised augmented images): from a fixed pool, or
    `fresh` (new scenes, rendered on the spot: the shape filters see every shape at many
    places and do not learn the pool by heart)."""

    def __init__(self, pool_size: int, batch: int, seed: int):
        self.rng = np.random.default_rng(seed)
        self.g = torch.Generator().manual_seed(seed)
        self.scenes: list[Scene] = []
        self.imgs: np.ndarray | None = None
        if pool_size:
            self.scenes, self.imgs = make_pool(pool_size, self.rng)
        self.batch = batch

    def __call__(self, fresh: bool = False) -> tuple[list[Scene], torch.Tensor]:
        if fresh or self.imgs is None:
            scenes, imgs = make_pool(self.batch, self.rng)
        else:
            idx = self.rng.choice(len(self.scenes), self.batch, replace=False)
            scenes, imgs = [self.scenes[i] for i in idx], self.imgs[idx]
        x = torch.from_numpy(imgs).float() / 255
        return scenes, normalise(augment(x, self.g))


def _optimise(params: list[torch.nn.Parameter], steps: int, lr: float) -> tuple[Any, Any]:
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    return opt, torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)


def _train(
    name: str, params: list[torch.nn.Parameter], lr: float, steps: int, loss_of: Any
) -> None:
    """`steps` AdamW steps (one-cycle schedule) on `loss_of()`, a new batch's loss each call;
    prints the loss every 250 steps."""
    opt, sched = _optimise(params, steps, lr)
    start = time.time()
    for step in range(steps):
        loss = loss_of()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 0 or step == steps - 1:
            print(f"{name} {step} loss {loss.item():.3f} t={time.time() - start:.0f}s", flush=True)


def train_picture(model: ShapesClip, data: Batches, steps: int) -> None:
    """Phase 1: the imagined picture predicts the rendered one."""
    tok, text = WordTokenizer(vocabulary()), model.text

    def loss_of() -> torch.Tensor:
        scenes, x = data()
        shares = model.visual.maps(x)  # (B, K, G, G)
        return picture_loss(text.logits(text.scene(tok([s.caption() for s in scenes]))), shares)

    _train("picture", list(text.parameters()), 3e-3, steps, loss_of)


def train_shape(model: ShapesClip, data: Batches, steps: int) -> None:
    """Phase 2: the shape branch and the image's shape filters learn to tell each caption from
    its hard negatives by the shape part of the similarity alone."""
    tok, text = WordTokenizer(vocabulary()), model.text
    params = [
        *text.shape_words.parameters(),
        *text.shape_seed.parameters(),
        *text.shape_head.parameters(),
        *model.visual.shape_conv.parameters(),
        model.logit_scale,
    ]

    def loss_of() -> torch.Tensor:
        scenes, x = data(fresh=True)
        captions = [s.caption() for s in scenes]
        captions += [hard_negative(s, data.rng).caption() for s in scenes]
        image = F.normalize(model.visual.shape_features(model.visual.maps(x)), dim=-1)
        captioned = F.normalize(text.shape_features(tok(captions)), dim=-1)
        return contrastive_loss(model.logit_scale.exp().clamp(max=100), image, captioned)

    _train("shape", params, 2e-3, steps, loss_of)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--picture-steps", type=int, default=3500)
    ap.add_argument("--shape-steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--pool", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (the result depends on it)")
    ap.add_argument("--out", type=Path, default=Path("engine/assets/shapes_clip.safetensors"))
    args = ap.parse_args()
    from safetensors.torch import save_file

    torch.set_num_threads(args.threads)
    start = time.time()
    torch.manual_seed(args.seed)  # script only: parameter init
    model = ShapesClip(len(vocabulary()))
    train_picture(model, Batches(args.pool, args.batch, args.seed), args.picture_steps)
    # Phase 2 draws its own fresh scenes: it depends on phase 1 only through the weights.
    train_shape(model, Batches(0, args.batch, args.seed + 1), args.shape_steps)
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(args.out))
    args.out.with_suffix(".json").write_text(vocab_json())
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    size = args.out.stat().st_size / 1e6
    print(f"saved {args.out} ({size:.1f} MB, sha256 {digest}) in {time.time() - start:.0f}s")


if __name__ == "__main__":
    main()
