"""The 'shapes' CLIP: a small conv image encoder and a word-level text encoder (CLIP-style)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.perceptor import CLIP_MEAN, CLIP_STD
from engine.shapes.world import COLOURS, POSITIONS, SHAPES, SIZES

INPUT_SIZE = 64
GRID = 32  # colour maps are this many cells a side
# Softmax temperature over squared RGB distances ([0, 1] units; named colours are >= 0.16 apart
# squared, so a named colour's own map is > 0.99).
TEMP = 0.06
CONTEXT = 16
EMBED_DIM = 64
PAD, UNK = 0, 1
_EXTRA_WORDS = ("a", "an", "and", "the", "at", "in", "on", "of", "background", "center", "middle")


def vocabulary() -> list[str]:
    """The fixed word list: <pad>, <unk>, then every word of the caption grammar."""
    words = set(_EXTRA_WORDS) | set(COLOURS) | set(SHAPES) | set(SIZES)
    for p in POSITIONS:
        words |= set(p.split())
    return ["<pad>", "<unk>", *sorted(words)]


class WordTokenizer:
    """Lower-cased words -> ids (unknown words -> <unk>), padded/truncated to `context`."""

    def __init__(self, vocab: Sequence[str], context: int = CONTEXT):
        self.index = {w: i for i, w in enumerate(vocab)}
        self.context = context

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        """(n,) strings -> (n, context) LongTensor."""
        out = torch.full((len(texts), self.context), PAD, dtype=torch.long)
        for i, text in enumerate(texts):
            ids = [self.index.get(w, UNK) for w in re.findall(r"[a-z]+", text.lower())]
            ids = ids[: self.context] or [UNK]
            out[i, : len(ids)] = torch.tensor(ids)
        return out


class ColourMaps(nn.Module):
    """Fixed front end (no weights): the picture pooled to GRID x GRID cells, and for each named
    colour how much each cell belongs to it: a softmax over the named colours of minus the squared
    RGB distance (temperature TEMP), so a cell counts as the colour it is nearest to (the rule of
    the semantic judges' pixel statistics) whatever its exact shade, and every cell still has a
    gradient towards the other colours."""

    palette: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        palette = torch.tensor(list(COLOURS.values()), dtype=torch.float32) / 255
        self.register_buffer("palette", palette.view(1, -1, 3, 1, 1), persistent=False)
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) CLIP-normalised -> (B, K, GRID, GRID), summing to 1 over K"""
        rgb = F.adaptive_avg_pool2d(x * self.std + self.mean, GRID)  # (B, 3, G, G) in [0, 1]
        d2 = (rgb[:, None] - self.palette).pow(2).sum(2)  # (B, K, G, G)
        return torch.softmax(-d2 / TEMP, dim=1)


class ImageEncoder(nn.Module):
    """Colour maps -> a conv at full grid, then three stride-2 convs down to a 4x4 map (so
    position survives) -> MLP."""

    def __init__(self, width: int = 32, dim: int = EMBED_DIM):
        super().__init__()
        self.maps = ColourMaps()
        # (B, K, 32, 32) -> (B, w/2, 32, 32) -> (w, 16) -> (2w, 8) -> (2w, 4): cheap on CPU.
        self.convs = nn.Sequential(
            nn.Conv2d(len(COLOURS), width // 2, 3, padding=1), nn.GELU(),
            nn.Conv2d(width // 2, width, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(width, width * 2, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(width * 2, width * 2, 3, stride=2, padding=1), nn.GELU(),
        )  # fmt: skip
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(width * 2 * 16, 256), nn.GELU(), nn.Linear(256, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) CLIP-normalised -> (B, dim)"""
        return self.head(self.convs(self.maps(x)))


class TextEncoder(nn.Module):
    """Word embeddings + positions -> one transformer layer -> masked mean (word order matters)."""

    def __init__(self, vocab_size: int, width: int = 64, dim: int = EMBED_DIM):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width)
        self.pos = nn.Parameter(torch.zeros(CONTEXT, width))
        layer = nn.TransformerEncoderLayer(width, 4, width * 2, dropout=0.0, batch_first=True)
        self.layers = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.proj = nn.Linear(width, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(n, CONTEXT) ids -> (n, dim)"""
        mask = tokens != PAD  # (n, L)
        h = self.layers(self.embed(tokens) + self.pos, src_key_padding_mask=~mask)
        h = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return self.proj(h)


class ShapesClip(nn.Module):
    """CLIP-style pair of encoders with a learned temperature (Radford et al. 2021)."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.visual = ImageEncoder()
        self.text = TextEncoder(vocab_size)
        self.logit_scale = nn.Parameter(torch.tensor(2.659))  # log(1 / 0.07)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) CLIP-normalised -> (B, d), not normalised (ClipModel normalises)."""
        return self.visual(x)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """(n, CONTEXT) -> (n, d)"""
        return self.text(tokens)


def asset_path(name: str) -> Path:
    """Path of a file shipped in engine/assets."""
    return Path(str(resources.files("engine") / "assets" / name))


def load_shapes_model(path: Path | None = None) -> tuple[ShapesClip, WordTokenizer]:
    """The trained shapes model (engine/assets/shapes_clip.safetensors) and its tokenizer."""
    from safetensors.torch import load_file

    path = path or asset_path("shapes_clip.safetensors")
    if not path.is_file():
        raise FileNotFoundError(
            f"shapes model weights not found: {path}; run scripts/train_shapes_model.py"
        )
    vocab = vocabulary()
    model = ShapesClip(len(vocab))
    model.load_state_dict(load_file(str(path)))
    return model.eval().requires_grad_(False), WordTokenizer(vocab)


def load_shapes_clip(device: torch.device | str = "cpu") -> Any:
    """`load_clip('shapes')`: the bundled model wrapped as an engine.perceptor.ClipModel."""
    from engine.perceptor import ClipModel

    model, tokenizer = load_shapes_model()
    device = torch.device(device)
    # Captions name positions and exact colours: zoomed, hue-shifted crops would contradict them.
    return ClipModel("shapes", model.to(device), tokenizer, INPUT_SIZE, device, zoom_views=False)


def vocab_json() -> str:
    """The vocabulary and sizes as JSON (written next to the weights for reference)."""
    return json.dumps(
        {
            "vocab": vocabulary(),
            "context": CONTEXT,
            "input_size": INPUT_SIZE,
            "embed_dim": EMBED_DIM,
        }
    )
