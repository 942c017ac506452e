"""CLIP through open_clip: a model from an architecture and a weights file, text and image
embeddings, the spherical loss. Which names exist and where their weights are: engine.catalog."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from engine.checkpoints import read_state_dict
from engine.images import clip_square
from engine.prompts import Prompt

log = logging.getLogger(__name__)

# CLIP's published normalisation (OpenAI).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Keys of OpenAI's TorchScript archives that are attributes, not weights.
_NON_WEIGHT_KEYS = ("input_resolution", "context_length", "vocab_size")


@dataclass
class ClipModel:
    """One loaded CLIP: its module, tokenizer and input size."""

    name: str
    model: Any  # open_clip.model.CLIP, frozen, eval mode
    tokenizer: Any
    input_size: int
    device: torch.device

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-norm text embeddings.  (n, d)"""
        tokens = self.tokenizer(list(texts)).to(self.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)

    # "float32", or "bfloat16" autocast (keeps float32's range, so small gradients survive).
    # float32 is the default: on an H100 a step is bound by kernel launches, not arithmetic, and
    # autocast adds a cast per weight per step (measured slower); T4s have no native bfloat16.
    precision: str = "float32"
    # Whether zoomed-in crops are fair views of a picture. True for CLIP (trained on crops of
    # photos); False for a model that reads the whole scene, where a crop changes the caption.
    zoom_views: bool = True
    # How far the whole-picture views move (engine.cutouts.Cutouts' `wide`; 1 is clipit's).
    view_strength: float = 1.0

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings of images in [0, 1] at the input size.  (B, 3, S, S) -> (B, d)"""
        if self.precision not in ("float32", "bfloat16"):
            raise ValueError(f"precision must be float32 or bfloat16, not {self.precision!r}")
        mean = x.new_tensor(CLIP_MEAN).view(1, 3, 1, 1)
        std = x.new_tensor(CLIP_STD).view(1, 3, 1, 1)
        with torch.autocast(x.device.type, torch.bfloat16, enabled=self.precision == "bfloat16"):
            features = self.model.encode_image((x - mean) / std)
        return F.normalize(features.float(), dim=-1)


def open_clip_model(
    name: str, arch: str, weights: Path | None, device: torch.device | str = "cpu"
) -> ClipModel:
    """An open_clip architecture with the weights file's weights (None: seeded random)."""
    import open_clip

    quiet = _NoRandomInitWarning()
    logging.getLogger().addFilter(quiet)  # open_clip warns on the root logger
    try:
        model = open_clip.create_model(arch, pretrained=None)
    finally:
        logging.getLogger().removeFilter(quiet)
    if weights is None:
        _random_init_(model, torch.Generator().manual_seed(0))
    else:
        load_weights_file(model, weights)
    return _wrap(name, model, open_clip.get_tokenizer(arch), device)


class _NoRandomInitWarning(logging.Filter):
    """Drops open_clip's "No pretrained weights loaded ... initialized randomly": the weights
    are loaded right after, from our own file (or seeded on purpose)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")


def tiny_clip_model(name: str, device: torch.device | str = "cpu") -> ClipModel:
    """`_tiny_clip()` with ViT-B/32's tokenizer: a whole CLIP for tests, built in a second."""
    import open_clip

    return _wrap(name, _tiny_clip(), open_clip.get_tokenizer("ViT-B-32"), device)


def _wrap(name: str, model: Any, tokenizer: Any, device: torch.device | str) -> ClipModel:
    device = torch.device(device)
    model = model.to(device).eval().requires_grad_(False)
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    return ClipModel(name, model, tokenizer, int(size), device)


def _tiny_clip() -> Any:
    """A 2-layer CLIP with 32-pixel input and random weights: for tests, built in a second."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    vision = CLIPVisionCfg(layers=2, width=64, head_width=32, patch_size=8, image_size=32)
    text = CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=2, layers=2)
    model = CLIP(embed_dim=64, vision_cfg=vision, text_cfg=text, quick_gelu=True)
    _random_init_(model, torch.Generator().manual_seed(0))
    return model


@torch.no_grad()
def _random_init_(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Deterministic random weights from an explicit generator (norm layers: identity)."""
    for name, p in sorted(model.named_parameters()):
        if name == "logit_scale":
            p.fill_(math.log(1 / 0.07))
        elif p.ndim == 1 and ("ln" in name or "norm" in name or "bn" in name):
            p.fill_(1.0 if name.endswith("weight") else 0.0)
        elif p.ndim == 1 and name.endswith("bias"):
            p.zero_()
        else:
            fan_in = p[0].numel() if p.ndim > 1 else p.numel()
            std = min(0.02, 1 / math.sqrt(max(fan_in, 1)))
            p.copy_(torch.randn(p.shape, generator=generator) * std)


def load_weights_file(model: torch.nn.Module, path: Path) -> None:
    """Load a weights file into an open_clip model; mismatched keys and shapes are named."""
    sd = {k: v for k, v in read_state_dict(path).items() if k not in _NON_WEIGHT_KEYS}
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    shapes = [k for k in expected if k in sd and sd[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(
            f"{path} does not fit this CLIP architecture: missing keys {_few(missing)}, "
            f"unexpected keys {_few(unexpected)}, wrong shapes {_few(shapes)}"
        )
    model.load_state_dict(sd)
    log.info("loaded CLIP weights from %s", path)


def _few(keys: list[str], n: int = 5) -> str:
    return str(keys[:n])[:-1] + (", ...]" if len(keys) > n else "]")


def spherical_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared great-circle distance between unit vectors (Crowson's VQGAN+CLIP).  -> (n, m)"""
    return (x[:, None] - y[None]).norm(dim=-1).div(2).arcsin().pow(2).mul(2)


class _FloorGrad(torch.autograd.Function):
    """Forward max(x, floor), backward as if identity: a prompt that reached its stop rests."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, floor: torch.Tensor) -> torch.Tensor:
        return torch.maximum(x, floor)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


@dataclass
class Targets:
    """Prompt embeddings for one CLIP model."""

    embeds: torch.Tensor  # (n, d) unit norm
    weights: torch.Tensor  # (n,)
    stops: torch.Tensor  # (n,)

    def loss(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """Weighted spherical distance, summed over prompts, mean over cutouts."""
        signed = spherical_distance(image_embeds, self.embeds) * self.weights.sign()  # (B, n)
        floored = _FloorGrad.apply(signed, self.stops.expand_as(signed))
        return (self.weights.abs() * floored.mean(dim=0)).sum()


def build_targets(
    clip: ClipModel,
    prompts: Sequence[Prompt],
    image_prompts: Sequence[Image.Image],
    image_weights: Sequence[Prompt] | None = None,
) -> Targets:
    """Encode text prompts and image prompts once per run; `image_weights` holds each image
    prompt's weight and stop (default: weight 1, no stop)."""
    embeds, weights, stops = [], [], []
    if prompts:
        embeds.append(clip.encode_text([p.text for p in prompts]))
        weights += [p.weight for p in prompts]
        stops += [p.stop for p in prompts]
    weighted = image_weights or [Prompt("")] * len(image_prompts)
    for img, weight in zip(image_prompts, weighted, strict=True):
        with torch.no_grad():
            embeds.append(clip.encode_image(_square_tensor(img, clip.input_size, clip.device)))
        weights.append(weight.weight)
        stops.append(weight.stop)
    dev = clip.device
    return Targets(
        torch.cat(embeds),
        torch.tensor(weights, device=dev),
        torch.tensor(stops, device=dev),
    )


def _square_tensor(img: Image.Image, size: int, device: torch.device) -> torch.Tensor:
    """CLIP's centre crop and bicubic resize, as (1, 3, size, size) in [0, 1]."""
    from torchvision.transforms.functional import pil_to_tensor

    square = clip_square(img.convert("RGB"), size)  # only the crop is resampled
    return pil_to_tensor(square).float().div(255).unsqueeze(0).to(device)
