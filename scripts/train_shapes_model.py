"""Train the 'shapes' CLIP on the procedural world (seeded, CPU, about 11 minutes on 2 cores).

python scripts/train_shapes_model.py [--steps 2000] [--threads 2] [--out FILE.safetensors]

The same seed and thread count give a bit-identical file; its sha256 is printed at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.cutouts import wide_views
from engine.perceptor import CLIP_MEAN, CLIP_STD
from engine.shapes.model import ShapesClip, WordTokenizer, vocab_json, vocabulary
from engine.shapes.world import (
    COLOURS,
    POSITIONS,
    SHAPES,
    SIZES,
    Scene,
    random_scene,
    render,
)


def make_pool(n: int, rng: np.random.Generator) -> tuple[list[Scene], np.ndarray]:
    """n scenes (30% with two shapes) and their 64 px images (uint8, (n, 3, 64, 64)), jittered."""
    scenes = [random_scene(rng, two=0.3) for _ in range(n)]
    imgs = np.stack([np.asarray(render(s, 64, 0.04, rng)).transpose(2, 0, 1) for s in scenes])
    return scenes, imgs


def remention(s: Scene, rng: np.random.Generator, p: float = 0.6) -> Scene:
    """Same scene, freshly drawn choice of which optional attributes the caption names."""
    r = rng.random(3)
    return dataclasses.replace(
        s, say_size=bool(r[0] < p), say_position=bool(r[1] < p), say_background=bool(r[2] < p)
    )


def hard_negative(s: Scene, rng: np.random.Generator) -> Scene:
    """The caption with one named attribute changed (colour, shape, position, size, background)."""
    options = ["colour", "shape"] + [
        a
        for a, said in (
            ("position", s.say_position),
            ("size", s.say_size),
            ("background", s.say_background),
        )
        if said
    ]
    attr = str(rng.choice(options))
    pools = {
        "colour": list(COLOURS),
        "shape": list(SHAPES),
        "position": list(POSITIONS),
        "size": list(SIZES),
        "background": list(COLOURS),
    }
    current = {
        "colour": s.colour,
        "shape": s.shape,
        "position": s.position,
        "size": s.size,
        "background": s.background,
    }[attr]
    new = str(rng.choice([v for v in pools[attr] if v != current]))
    return dataclasses.replace(s, **{attr: new})


def normalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """The views generation shows the model (engine.cutouts without zoom: rotated, shifted,
    letterboxed wholes with noise), some pixelated as pixel art draws.  (B, 3, 64, 64)"""
    b = x.shape[0]
    pixelate = torch.rand(b, generator=g) < 0.3
    if pixelate.any():
        cells = int(torch.randint(8, 33, (1,), generator=g))
        small = F.adaptive_avg_pool2d(x[pixelate], cells)
        x = x.clone()
        x[pixelate] = F.interpolate(small, size=x.shape[-2:], mode="nearest")
    n_whole = b // 8
    x = torch.cat([x[:n_whole], wide_views(x[n_whole:], x.shape[-1], g)])
    x = x * (1 + 0.1 * (torch.rand(b, 1, 1, 1, generator=g) - 0.5))
    noise = torch.rand(b, 1, 1, 1, generator=g) * 0.1  # as Cutouts(noise=0.1)
    return (x + noise * torch.randn(x.shape, generator=g)).clamp(0, 1)


def clutter(n: int, g: torch.Generator) -> torch.Tensor:
    """Pictures of nothing: random colour cells (2-16 a side) blended with random colour fields,
    the kind of mess a badly guided drawer makes.  (n, 3, 64, 64) in [0, 1]"""
    cells = int(torch.randint(2, 17, (1,), generator=g))
    blocks = torch.rand(n, 3, cells, cells, generator=g)
    blocks = F.interpolate(blocks, size=(64, 64), mode="nearest")
    smooth = F.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=(64, 64), mode="bilinear")
    mix = torch.rand(n, 1, 1, 1, generator=g)
    return mix * blocks + (1 - mix) * smooth


def train(steps: int, batch: int, pool_size: int, seed: int, n_clutter: int) -> ShapesClip:
    torch.manual_seed(seed)  # script only: parameter init
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    scenes, imgs = make_pool(pool_size, rng)
    vocab = vocabulary()
    tok = WordTokenizer(vocab)
    model = ShapesClip(len(vocab))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    start = time.time()
    for step in range(steps):
        idx = rng.choice(pool_size, batch, replace=False)
        pos = [remention(scenes[i], rng) for i in idx]
        neg = [hard_negative(s, rng) for s in pos]
        x = augment(torch.from_numpy(imgs[idx]).float() / 255, g)
        tx = F.normalize(
            model.encode_text(tok([s.caption() for s in pos + neg])), dim=-1
        )  # (2B, d)
        fake = augment(clutter(n_clutter, g), g)
        im = F.normalize(model.encode_image(normalise(torch.cat([x, fake]))), dim=-1)
        scale = model.logit_scale.exp().clamp(max=100)
        target = torch.arange(batch)
        # Each image picks its caption among all captions and hard negatives; each caption picks
        # its image among the batch's scenes and the clutter.
        per_image = F.cross_entropy(scale * im[:batch] @ tx.T, target)
        per_text = F.cross_entropy(scale * tx[:batch] @ im.T, target)
        loss = (per_image + per_text) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step} loss {loss.item():.3f} t={time.time() - start:.0f}s", flush=True)
    return model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--pool", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clutter", type=int, default=16, help="pictures of nothing per step")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (the result depends on it)")
    ap.add_argument("--out", type=Path, default=Path("engine/assets/shapes_clip.safetensors"))
    args = ap.parse_args()
    from safetensors.torch import save_file

    torch.set_num_threads(args.threads)
    start = time.time()
    model = train(args.steps, args.batch, args.pool, args.seed, args.clutter)
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(args.out))
    args.out.with_suffix(".json").write_text(vocab_json())
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    size = args.out.stat().st_size / 1e6
    print(f"saved {args.out} ({size:.1f} MB, sha256 {digest}) in {time.time() - start:.0f}s")


if __name__ == "__main__":
    main()
