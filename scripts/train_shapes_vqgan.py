"""Train the 'shapes' VQGAN on the procedural world (seeded, CPU, about 15 minutes on one core).

python scripts/train_shapes_vqgan.py [--steps 850] [--seed 0] [--threads 1] [--out-dir DIR]

A small taming-style VQModel (f=4) fitted to flat-colour renders with an L1 + L2 reconstruction
loss, a commitment loss and an EMA codebook with dead-code restarts (van den Oord et al. 2017,
"Neural Discrete Representation Learning", appendix A.1); no GAN or LPIPS: the art is flat colour.
Writes shapes_vqgan.yaml (a taming config) and shapes_vqgan.safetensors (taming key names,
float16).
The same seed and thread count give a bit-identical file; its sha256 is printed at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import save_file

from engine.shapes.world import COLOURS, random_scene, render
from engine.vqgan import VQGAN, VQGANConfig, build_vqgan, check_keys, nearest_codes

# ch=64, not 32: taming's GroupNorm has 32 groups, and with one channel per group the decoder's
# last norm maps any flat region to the same value, so it could not tell flat colours apart.
CONFIG = VQGANConfig(
    ch=64, ch_mult=(1, 1, 1), num_res_blocks=1, attn_resolutions=(),
    z_channels=16, resolution=64, n_embed=512, embed_dim=16,
)  # fmt: skip
CROP = 32  # training crops (px) of renders drawn at 64-128 px
BATCH = 12
LR = 1e-3
WARMUP = 30
BETA = 0.25  # commitment weight (van den Oord et al.)
EMA_DECAY = 0.95
DEAD_BELOW = 0.05  # EMA usage (codes per batch) under which a code is restarted
RESTART_EVERY = 25
HELD_OUT_SEED = 20_240_601  # evaluation scenes, never seen in training
NAMED = torch.tensor(list(COLOURS.values()), dtype=torch.float32) / 255.0  # (9, 3)


def batch(rng: np.random.Generator, n: int = BATCH, crop: int = CROP) -> torch.Tensor:
    """n random crops (n, 3, crop, crop) in [-1, 1] of scenes (30% with two shapes) at 64-128 px."""
    out = np.empty((n, crop, crop, 3), dtype=np.uint8)
    for i in range(n):
        size = int(rng.integers(64, 129))
        img = np.asarray(render(random_scene(rng, two=0.3), size, 0.05, rng))
        y, x = rng.integers(0, size - crop + 1, 2)
        out[i] = img[y : y + crop, x : x + crop]
    return torch.from_numpy(out).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def held_out(n: int, size: int) -> torch.Tensor:
    """n held-out renders (n, 3, size, size) in [-1, 1]."""
    rng = np.random.default_rng(HELD_OUT_SEED + size)
    imgs = [np.asarray(render(random_scene(rng, two=0.3), size)) for _ in range(n)]
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


class EmaCodebook:
    """EMA codebook updates and dead-code restarts for `model.quantize.embedding`."""

    def __init__(self, model: VQGAN, first: torch.Tensor, g: torch.Generator):
        self.weight = model.codebook  # (n_embed, D): the VQModel's embedding, updated in place
        n = self.weight.shape[0]
        # Start from encoder outputs, so every code begins near the data.
        self.weight.data.copy_(first[torch.randint(len(first), (n,), generator=g)])
        self.size = torch.ones(n)  # EMA of assignments per code
        self.sum = self.weight.data.clone()  # EMA of the vectors assigned, (n_embed, D)
        self.g = g

    @torch.no_grad()
    def update(self, flat: torch.Tensor, idx: torch.Tensor) -> None:
        """flat (N, D) encoder outputs assigned to codes idx (N,)."""
        onehot = F.one_hot(idx, self.weight.shape[0]).float()  # (N, n_embed)
        self.size.mul_(EMA_DECAY).add_(onehot.sum(0), alpha=1 - EMA_DECAY)
        self.sum.mul_(EMA_DECAY).add_(onehot.T @ flat, alpha=1 - EMA_DECAY)
        n = self.size.sum()
        smoothed = (self.size + 1e-5) / (n + self.size.numel() * 1e-5) * n  # Laplace smoothing
        self.weight.data.copy_(self.sum / smoothed[:, None])

    @torch.no_grad()
    def restart_dead(self, flat: torch.Tensor) -> int:
        """Move codes used less than DEAD_BELOW onto random encoder outputs; how many moved."""
        dead = (self.size < DEAD_BELOW).nonzero().squeeze(1)
        if len(dead):
            pick = flat[torch.randint(len(flat), (len(dead),), generator=self.g)]
            self.weight.data[dead] = pick
            self.sum[dead] = pick
            self.size[dead] = 1.0
        return len(dead)


def encode_free(model: VQGAN, x: torch.Tensor) -> torch.Tensor:
    """Unquantised latent (B, D, h, w)."""
    return model.quant_conv(model.encoder(x))


def step_loss(model: VQGAN, ema: EmaCodebook, x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Reconstruction + commitment loss of one batch; updates the EMA codebook."""
    z = encode_free(model, x)  # (B, D, h, w)
    idx = nearest_codes(z.detach(), ema.weight.detach())  # (B, h, w)
    q = ema.weight.detach()[idx].movedim(-1, 1)  # (B, D, h, w)
    rec = model.decode(z + (q - z).detach())  # straight-through (Bengio 2013)
    l1 = (rec - x).abs().mean()
    loss = l1 + F.mse_loss(rec, x) + BETA * F.mse_loss(z, q)
    ema.update(z.detach().movedim(1, -1).reshape(-1, z.shape[1]), idx.flatten())
    return loss, float(l1.detach())


def lr_at(step: int, steps: int) -> float:
    """Linear warm-up, then cosine decay to 5% of LR."""
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    t = (step - WARMUP) / max(1, steps - WARMUP)
    return LR * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


def train(steps: int, seed: int) -> VQGAN:
    """The fitted model (eval mode, no gradients)."""
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    model = build_vqgan(CONFIG, g).train()
    model.requires_grad_(True)
    model.quantize.requires_grad_(False)  # the codebook moves by EMA only
    with torch.no_grad():
        first = encode_free(model, batch(rng)).movedim(1, -1).reshape(-1, CONFIG.embed_dim)
    ema = EmaCodebook(model, first, g)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=LR, betas=(0.9, 0.99))
    start = time.perf_counter()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps)
        x = batch(rng)
        loss, l1 = step_loss(model, ema, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % RESTART_EVERY == RESTART_EVERY - 1 and step < steps * 0.9:
            with torch.no_grad():
                flat = encode_free(model, x).movedim(1, -1).reshape(-1, CONFIG.embed_dim)
            ema.restart_dead(flat)
        if step % 50 == 0 or step == steps - 1:
            used = int((ema.size > DEAD_BELOW).sum())
            print(
                f"step {step:5d}  loss {float(loss.detach()):.4f}  l1 {l1:.4f}  codes used {used}"
                f"  {time.perf_counter() - start:.0f} s",
                flush=True,
            )
    return model.requires_grad_(False).eval()


def nearest_named(x: torch.Tensor) -> torch.Tensor:
    """Index of the nearest named colour per pixel of (B, 3, H, W) in [0, 1] -> (B, H, W)."""
    return (x.movedim(1, -1)[..., None, :] - NAMED).pow(2).sum(-1).argmin(-1)


@torch.no_grad()
def evaluate(model: VQGAN, n: int = 32) -> None:
    """Print reconstruction quality and codebook use on held-out scenes at 64 and 128 px."""
    for size in (64, 128):
        x = held_out(n, size)
        codes = nearest_codes(encode_free(model, x), model.codebook)
        rec = model.decode(model.encode(x)).clamp(-1, 1)
        a, b = (x + 1) / 2, (rec + 1) / 2
        mae = float((a - b).abs().mean())
        worst = float((a - b).abs().mean((1, 2, 3)).max())
        kept = float((nearest_named(a) == nearest_named(b)).float().mean())
        print(
            f"held-out {n} x {size} px: mean abs error {mae:.4f} (worst image {worst:.4f}), "
            f"named colour kept {kept:.4f}, codes used {len(codes.unique())}/{CONFIG.n_embed}"
        )


def config_yaml() -> str:
    """A taming-transformers model config for CONFIG."""
    c = CONFIG
    doc = {
        "model": {
            "base_learning_rate": LR,
            "target": "taming.models.vqgan.VQModel",
            "params": {
                "embed_dim": c.embed_dim,
                "n_embed": c.n_embed,
                "ddconfig": {
                    "double_z": c.double_z,
                    "z_channels": c.z_channels,
                    "resolution": c.resolution,
                    "in_channels": c.in_channels,
                    "out_ch": c.out_ch,
                    "ch": c.ch,
                    "ch_mult": list(c.ch_mult),
                    "num_res_blocks": c.num_res_blocks,
                    "attn_resolutions": list(c.attn_resolutions),
                    "dropout": c.dropout,
                },
                "lossconfig": {"target": "taming.modules.losses.vqperceptual.DummyLoss"},
            },
        }
    }
    return yaml.safe_dump(doc, sort_keys=False)


def save(model: VQGAN, out_dir: Path, seed: int, steps: int) -> Path:
    """Write the yaml and the safetensors weights; the weights' path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "shapes_vqgan.yaml").write_text(config_yaml(), encoding="utf-8")
    # float16 halves the file (the loader reads any float dtype into float32).
    state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    check_keys(model, state, "trained state dict")
    path = out_dir / "shapes_vqgan.safetensors"
    save_file(state, str(path), metadata={"seed": str(seed), "steps": str(steps)})
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=850)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="the file is bit-identical per count")
    p.add_argument("--out-dir", type=Path, default=Path("engine/assets"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model = train(args.steps, args.seed)
    print(f"trained {args.steps} steps in {time.perf_counter() - start:.0f} s")
    with torch.no_grad():  # evaluate the weights as saved
        for value in model.state_dict().values():
            value.copy_(value.half())
    evaluate(model)
    path = save(model, args.out_dir, args.seed, args.steps)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB) sha256 {digest}")


if __name__ == "__main__":
    main()
