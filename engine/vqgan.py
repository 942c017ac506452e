"""A taming-transformers-compatible VQGAN (Esser et al. 2021, "Taming Transformers") and its loader.

The modules follow the published architecture and reproduce the official state-dict key names and
shapes, so the official checkpoints load unchanged: `encoder.*`, `decoder.*`, `quant_conv.*`,
`post_quant_conv.*` and `quantize.embedding.weight` (VQModel) or `quantize.proj.*` and
`quantize.embed.weight` (GumbelVQ). Checkpoints are read by `engine.checkpoints`: a
downloaded file can never run code.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.utils.checkpoint import checkpoint

from engine.checkpoints import read_checkpoint
from engine.errors import CheckpointError

log = logging.getLogger(__name__)

VQMODEL = "taming.models.vqgan.VQModel"
GUMBELVQ = "taming.models.vqgan.GumbelVQ"
NET2NET = "taming.models.cond_transformer.Net2NetTransformer"
# Where a Net2NetTransformer checkpoint keeps the VQGAN.
NET2NET_PREFIX = "first_stage_model."

# With decoder checkpointing, levels 0..RECOMPUTED_LEVELS (the high-resolution ones) recompute
# their activations in backward.
RECOMPUTED_LEVELS = 2


# -- architecture ---------------------------------------------------------------------------


@dataclass(frozen=True)
class VQGANConfig:
    """Architecture of a taming VQGAN: the yaml's `ddconfig` plus the quantiser's size."""

    ch: int
    ch_mult: tuple[int, ...]
    num_res_blocks: int
    attn_resolutions: tuple[int, ...]
    z_channels: int
    resolution: int
    n_embed: int
    embed_dim: int
    in_channels: int = 3
    out_ch: int = 3
    double_z: bool = False
    dropout: float = 0.0
    gumbel: bool = False

    @property
    def factor(self) -> int:
        """Downsampling factor f: one halving per level but the last."""
        return 2 ** (len(self.ch_mult) - 1)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], gumbel: bool) -> VQGANConfig:
        """From a yaml `model.params` mapping (`ddconfig`, `n_embed`, `embed_dim`)."""
        dd = params["ddconfig"]
        return cls(
            ch=int(dd["ch"]),
            ch_mult=tuple(int(m) for m in dd["ch_mult"]),
            num_res_blocks=int(dd["num_res_blocks"]),
            attn_resolutions=tuple(int(r) for r in dd["attn_resolutions"]),
            z_channels=int(dd["z_channels"]),
            resolution=int(dd["resolution"]),
            n_embed=int(params["n_embed"]),
            embed_dim=int(params["embed_dim"]),
            in_channels=int(dd.get("in_channels", 3)),
            out_ch=int(dd.get("out_ch", 3)),
            double_z=bool(dd.get("double_z", False)),
            dropout=float(dd.get("dropout", 0.0)),
            gumbel=gumbel,
        )


# The official configs (vqgan_imagenet_f16_16384 and vqgan_gumbel_f8_8192 from taming's model zoo).
IMAGENET_F16_16384 = VQGANConfig(
    ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(16,),
    z_channels=256, resolution=256, n_embed=16384, embed_dim=256,
)  # fmt: skip
GUMBEL_F8_8192 = VQGANConfig(
    ch=128, ch_mult=(1, 1, 2, 4), num_res_blocks=2, attn_resolutions=(32,),
    z_channels=256, resolution=256, n_embed=8192, embed_dim=256, gumbel=True,
)  # fmt: skip
# Small enough to build and run in milliseconds (the catalog's 'tiny-random'); GroupNorm(32)
# needs channels in multiples of 32.
TINY_CONFIG = VQGANConfig(
    ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,),
    z_channels=8, resolution=32, n_embed=64, embed_dim=8,
)  # fmt: skip


def _norm(channels: int) -> nn.GroupNorm:
    # taming: 32 groups, eps 1e-6, affine.
    return nn.GroupNorm(32, channels, eps=1e-6, affine=True)


def _maybe_checkpoint(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, enabled: bool
) -> torch.Tensor:
    """Run `fn(x)`, recomputing its activations in backward instead of storing them if enabled."""
    if enabled and torch.is_grad_enabled():
        out: torch.Tensor = checkpoint(fn, x, use_reentrant=False)
        return out
    return fn(x)


class ResnetBlock(nn.Module):
    """GroupNorm -> swish -> 3x3 conv, twice, plus a (1x1 when channels change) shortcut."""

    def __init__(self, c_in: int, c_out: int, dropout: float):
        super().__init__()
        self.norm1 = _norm(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = _norm(c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions, 1x1 q/k/v/proj_out, scale C**-0.5."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        # (B, 1, HW, C): one head whose width is the channel count, so SDPA's default scale is
        # taming's C**-0.5; SDPA picks a memory-efficient kernel where one exists.
        q, k, v = (
            t.flatten(2).transpose(1, 2).unsqueeze(1) for t in (self.q(y), self.k(y), self.v(y))
        )
        out = F.scaled_dot_product_attention(q, k, v)  # (B, 1, HW, C)
        out = out.squeeze(1).transpose(1, 2).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Pad right and bottom by one, then a 3x3 stride-2 conv (taming's asymmetric padding)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution: `block[i]` (each followed by `attn[i]` if any), then an optional resample."""

    def __init__(self, c_in: int, c_out: int, n_blocks: int, attention: bool, dropout: float):
        super().__init__()
        ins = [c_in] + [c_out] * (n_blocks - 1)
        self.block = nn.ModuleList(ResnetBlock(c, c_out, dropout) for c in ins)
        self.attn = nn.ModuleList(AttnBlock(c_out) for _ in ins) if attention else nn.ModuleList()

    def resample(self) -> nn.Module | None:
        """The `downsample` (encoder) or `upsample` (decoder) module, if this level has one."""
        return self._modules.get("downsample") or self._modules.get("upsample")

    def forward(self, h: torch.Tensor, checkpointing: bool = False) -> torch.Tensor:
        for i, block in enumerate(self.block):
            h = _maybe_checkpoint(block, h, checkpointing)
            if len(self.attn):
                h = _maybe_checkpoint(self.attn[i], h, checkpointing)
        resample = self.resample()
        return h if resample is None else _maybe_checkpoint(resample, h, checkpointing)


class Mid(nn.Module):
    """The middle of encoder and decoder: resnet block, attention, resnet block."""

    def __init__(self, channels: int, dropout: float):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, h: torch.Tensor, checkpointing: bool = False) -> torch.Tensor:
        for module in (self.block_1, self.attn_1, self.block_2):
            h = _maybe_checkpoint(module, h, checkpointing)
        return h


class Encoder(nn.Module):
    """Image (B, in_channels, H, W) -> features (B, z_channels, H/f, W/f)."""

    def __init__(self, c: VQGANConfig):
        super().__init__()
        self.conv_in = nn.Conv2d(c.in_channels, c.ch, 3, padding=1)
        self.down = nn.ModuleList()
        res, c_in = c.resolution, c.ch
        for i, mult in enumerate(c.ch_mult):
            level = Level(c_in, c.ch * mult, c.num_res_blocks, res in c.attn_resolutions, c.dropout)
            if i != len(c.ch_mult) - 1:
                level.downsample = Downsample(c.ch * mult)
                res //= 2
            self.down.append(level)
            c_in = c.ch * mult
        self.mid = Mid(c_in, c.dropout)
        self.norm_out = _norm(c_in)
        self.conv_out = nn.Conv2d(
            c_in, 2 * c.z_channels if c.double_z else c.z_channels, 3, padding=1
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    """Latent features (B, z_channels, h, w) -> image (B, out_ch, h*f, w*f)."""

    def __init__(self, c: VQGANConfig):
        super().__init__()
        c_in = c.ch * c.ch_mult[-1]
        res = c.resolution // c.factor
        self.conv_in = nn.Conv2d(c.z_channels, c_in, 3, padding=1)
        self.mid = Mid(c_in, c.dropout)
        levels: list[Level] = []
        for i in reversed(range(len(c.ch_mult))):
            c_out = c.ch * c.ch_mult[i]
            level = Level(c_in, c_out, c.num_res_blocks + 1, res in c.attn_resolutions, c.dropout)
            if i != 0:
                level.upsample = Upsample(c_out)
                res *= 2
            levels.insert(0, level)  # `up[i]` is level i, as in taming
            c_in = c_out
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(c_in)
        self.conv_out = nn.Conv2d(c_in, c.out_ch, 3, padding=1)

    def _tail(self, h: torch.Tensor) -> torch.Tensor:
        return self.conv_out(F.silu(self.norm_out(h)))

    def forward(self, z: torch.Tensor, checkpointing: bool = False) -> torch.Tensor:
        # Checkpointing covers the levels at 1/4 of the output size and up (levels 0-2), where
        # nearly all activation memory is (4x per halving); lower levels and the middle would add
        # recomputation for little saving.
        h = self.mid(self.conv_in(z))
        for i in reversed(range(len(self.up))):
            h = self.up[i](h, checkpointing and i <= RECOMPUTED_LEVELS)
        return _maybe_checkpoint(self._tail, h, checkpointing)


def _embedding(n_embed: int, embed_dim: int) -> nn.Embedding:
    # Zeros instead of nn.Embedding's normal init: the weights are always loaded or drawn later,
    # and normal_ on the meta device costs seconds on first use (it imports torch._dynamo).
    return nn.Embedding(n_embed, embed_dim, _weight=torch.zeros(n_embed, embed_dim))


class VectorQuantizer(nn.Module):
    """Nearest-codebook quantiser (van den Oord et al. 2017); the codebook is `embedding`."""

    def __init__(self, n_embed: int, embed_dim: int):
        super().__init__()
        self.embedding = _embedding(n_embed, embed_dim)

    @property
    def codebook(self) -> torch.Tensor:
        return self.embedding.weight

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return quantize_st(z, self.codebook)


class GumbelQuantize(nn.Module):
    """Gumbel-softmax quantiser (Jang et al. 2016) as in taming: logits by `proj`, codes `embed`."""

    def __init__(self, z_channels: int, n_embed: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(z_channels, n_embed, 1)
        self.embed = _embedding(n_embed, embed_dim)

    @property
    def codebook(self) -> torch.Tensor:
        return self.embed.weight

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # The noise-free hard choice (taming samples Gumbel noise even in eval): the argmax code,
        # with the gradient of the softmax mixture (straight-through).
        logits = self.proj(z)  # (B, n_embed, h, w)
        hard = self.codebook[logits.argmax(1)].movedim(-1, 1)  # (B, D, h, w)
        soft = torch.einsum("bnhw,nd->bdhw", logits.softmax(1), self.codebook)
        return soft + (hard - soft).detach()


def nearest_codes(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest codebook row per position, by taming's expanded L2 distance."""
    flat = z.movedim(1, -1).reshape(-1, z.shape[1])  # (B*h*w, D)
    dist = flat.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1) - 2 * flat @ codebook.T
    return dist.argmin(1).view(z.shape[0], *z.shape[2:])  # (B, h, w)


def quantize_st(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Snap (B, D, h, w) to the nearest codes; gradients pass straight through (Bengio 2013)."""
    with torch.no_grad():
        q = codebook[nearest_codes(z, codebook)].movedim(-1, 1)  # (B, D, h, w)
    return z + (q - z).detach()


class VQGAN(nn.Module):
    """taming's VQModel / GumbelVQ without the training losses: encode, decode, codebook."""

    def __init__(self, config: VQGANConfig):
        super().__init__()
        c = config
        self.config = c
        self.f = c.factor
        # Default for `decode`; the drawer passes its own per call, so shared models stay read-only.
        self.checkpointing = False
        self.encoder = Encoder(c)
        self.decoder = Decoder(c)
        self.quant_conv = nn.Conv2d(
            2 * c.z_channels if c.double_z else c.z_channels, c.embed_dim, 1
        )
        self.post_quant_conv = nn.Conv2d(c.embed_dim, c.z_channels, 1)
        self.quantize: VectorQuantizer | GumbelQuantize = (
            GumbelQuantize(c.z_channels, c.n_embed, c.embed_dim)
            if c.gumbel
            else VectorQuantizer(c.n_embed, c.embed_dim)
        )

    @property
    def codebook(self) -> torch.Tensor:
        """The code vectors.  (n_embed, embed_dim)"""
        return self.quantize.codebook

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Image in [-1, 1] (B, 3, H, W) -> quantised latent (B, embed_dim, H/f, W/f)."""
        if x.shape[-1] % self.f or x.shape[-2] % self.f:
            raise ValueError(
                f"height and width must be multiples of {self.f}, got {tuple(x.shape)}"
            )
        return self.quantize(self.quant_conv(self.encoder(x)))

    def decode(self, z: torch.Tensor, checkpointing: bool | None = None) -> torch.Tensor:
        """Latent (B, embed_dim, h, w) -> image (B, 3, h*f, w*f), roughly in [-1, 1]."""
        ckpt = self.checkpointing if checkpointing is None else checkpointing
        return self.decoder(self.post_quant_conv(z), ckpt)

    def quantize_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Snap a free latent to its nearest codes (straight-through), for both quantisers."""
        return quantize_st(z, self.codebook)


# -- construction ---------------------------------------------------------------------------


def build_vqgan(
    config: VQGANConfig, generator: torch.Generator, device: torch.device | str = "cpu"
) -> VQGAN:
    """A VQGAN with random weights (PyTorch's default init) drawn from `generator` only."""
    with torch.device("meta"):  # no allocation and no draw from the global RNG
        model = VQGAN(config)
    model.to_empty(device=device)
    _init_random_(model, generator)
    return model.requires_grad_(False).eval()


@torch.no_grad()
def _init_random_(model: nn.Module, generator: torch.Generator) -> None:
    # Drawn on the CPU and copied: the same weights on every device.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            bound = 1 / math.sqrt(m.weight[0].numel())  # kaiming_uniform(a=sqrt(5)) and bias
            for p in (m.weight, m.bias):
                if p is not None:
                    p.copy_(torch.empty(p.shape).uniform_(-bound, bound, generator=generator))
        elif isinstance(m, nn.GroupNorm):
            m.weight.fill_(1.0)
            m.bias.zero_()
        elif isinstance(m, nn.Embedding):
            m.weight.copy_(torch.empty(m.weight.shape).normal_(generator=generator))


def load_vqgan(
    config_path: str | Path, checkpoint_path: str | Path, device: torch.device | str = "cpu"
) -> VQGAN:
    """Load an official taming-transformers pair: a config yaml and a .ckpt/.pt/.safetensors."""
    config, prefix = read_config(config_path)
    weights = select_weights(read_checkpoint(checkpoint_path), prefix)
    with torch.device("meta"):
        model = VQGAN(config)
    check_keys(model, weights, f"{checkpoint_path} (config {config_path})")
    weights = {
        k: v.detach().to(device=device, dtype=torch.float32, copy=True) for k, v in weights.items()
    }
    model.load_state_dict(weights, strict=True, assign=True)
    log.info("loaded VQGAN %s (f=%d, %d codes)", checkpoint_path, model.f, config.n_embed)
    return model.requires_grad_(False).eval()


# -- config and checkpoint files ------------------------------------------------------------


def read_config(path: str | Path) -> tuple[VQGANConfig, str]:
    """The architecture in a taming yaml and the key prefix of its VQGAN in the checkpoint."""
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        model = doc["model"]
        target, params, prefix = model["target"], model.get("params") or {}, ""
        if target == NET2NET:
            first = params["first_stage_config"]
            target, params, prefix = first["target"], first.get("params") or {}, NET2NET_PREFIX
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: not a taming-transformers model config ({exc!r})") from None
    if target not in (VQMODEL, GUMBELVQ):
        allowed = ", ".join((VQMODEL, GUMBELVQ, NET2NET))
        raise CheckpointError(f"{path}: model.target {target!r} is not supported; use {allowed}")
    if params.get("remap"):
        raise CheckpointError(f"{path}: quantiser index remapping ('remap') is not supported")
    try:
        return VQGANConfig.from_params(params, gumbel=target == GUMBELVQ), prefix
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: incomplete ddconfig/n_embed/embed_dim ({exc!r})") from None


def select_weights(checkpoint: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """The VQGAN's entries: under `state_dict` if present, `prefix` removed, `loss.*` dropped."""
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, Mapping):
        raise CheckpointError(f"'state_dict' is a {type(state).__name__}, not a mapping")
    out = {}
    for key, value in state.items():
        if not (isinstance(key, str) and key.startswith(prefix)):
            continue
        key = key[len(prefix) :]
        # Training-only parts: discriminator and LPIPS of the VQGAN loss.
        if not key.startswith("loss."):
            out[key] = value
    return out


def check_keys(model: nn.Module, weights: Mapping[str, Any], source: str) -> None:
    """Raise `CheckpointError` naming missing, unexpected and mis-shaped keys."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    bad = [
        f"{k} {_shape(weights[k])} (expected {expected[k]})"
        for k in sorted(set(expected) & set(weights))
        if _shape(weights[k]) != expected[k]
    ]
    problems = [
        f"{label} ({len(items)}): {_some(items)}"
        for label, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("wrong shapes", bad),
        )
        if items
    ]
    if problems:
        raise CheckpointError(f"{source} does not fit the VQGAN: " + "; ".join(problems))


def _shape(value: Any) -> tuple[int, ...] | str:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__


def _some(items: list[str], n: int = 10) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items) - n} more)" if len(items) > n else "")
