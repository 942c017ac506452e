"""The 'shapes' CLIP: the text encoder imagines the picture a caption describes, as a map of
colour probabilities; the image encoder reads the picture's colours into the same map."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.checkpoints import read_state_dict
from engine.perceptor import CLIP_MEAN, CLIP_STD
from engine.shapes.world import COLOURS, POSITIONS, SHAPES, SIZES
from engine.weights import asset_path

WEIGHTS_FILE = "shapes_clip.safetensors"  # in engine/assets
INPUT_SIZE = 64
GRID = 32  # colour maps are this many cells a side (2x2 pixels each)
K = len(COLOURS)
# Softmax temperature over squared RGB distances ([0, 1] units; named colours are >= 0.16 apart
# squared, so a pixel of a named colour belongs > 0.99 to its own).
TEMP = 0.06
CONTEXT = 16
SHAPE_FILTERS = 16  # learned shape filters, run over every colour's map
BLOCKS = 8  # their responses are pooled over BLOCKS x BLOCKS blocks (8x8 pixels each)
# Weight of the shape part in the similarity (the rest is the picture part); chosen on the
# tuning prompts of scripts.shapes_gates (drawings stay clean, shapes come out).
SHAPE_WEIGHT = 0.35
# How far generation's whole-picture views move for this model (engine.cutouts; 1 is clipit's):
# a little, so the drawing does not overfit one view, not so far that shapes melt into blobs.
VIEW_STRENGTH = 0.3
# Picture part: one value per named colour per cell; shape part: per colour, filter and 8x8 block.
EMBED_DIM = K * GRID * GRID + K * SHAPE_FILTERS * BLOCKS**2
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
    """Fixed front end (no weights): for each named colour, the share of each cell's pixels that
    belong to it. A pixel belongs to the named colours by a softmax of minus its squared RGB
    distance to them (temperature TEMP): nearly all to the nearest one (the rule of the semantic
    judges' pixel statistics), and every pixel keeps a gradient towards the others."""

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
        rgb = x * self.std + self.mean  # (B, 3, S, S) in [0, 1]
        d2 = (rgb[:, None] - self.palette).pow(2).sum(2)  # (B, K, S, S)
        return F.adaptive_avg_pool2d(torch.softmax(-d2 / TEMP, dim=1), GRID)


class ImageEncoder(nn.Module):
    """Two parts, each of unit norm, weighted sqrt(1 - SHAPE_WEIGHT) and sqrt(SHAPE_WEIGHT):

    - picture: the colour maps, centred (a cell of no colour in particular is zero). Linear in
      the colour shares, so its similarity to a caption's imagined picture is a sum over cells
      and the picture that maximises it is the imagined one: CLIP guidance draws the scene
      instead of an adversarial texture.
    - shape: small learned filters run over each colour's map, rectified and pooled over 8x8
      pixel blocks: where each colour has corners, edges, points and holes, a few pixels either
      way. It tells a square from a circle when a shape is a little off its place, which a
      blurred picture cannot."""

    def __init__(self, filters: int = SHAPE_FILTERS):
        super().__init__()
        self.maps = ColourMaps()
        self.filters = filters
        self.shape_conv = nn.Conv2d(1, filters, 5, padding=2)

    def shape_features(self, maps: torch.Tensor) -> torch.Tensor:
        """(B, K, GRID, GRID) -> (B, K * filters * BLOCKS**2), the same filters per colour"""
        b = len(maps)
        f = F.relu(self.shape_conv(maps.reshape(b * K, 1, GRID, GRID)))
        return F.adaptive_avg_pool2d(f, BLOCKS).reshape(b, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) CLIP-normalised -> (B, EMBED_DIM), unit norm"""
        maps = self.maps(x)
        return join_parts((maps - 1.0 / K).flatten(1), self.shape_features(maps))


def join_parts(picture: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    """Both parts normalised and weighted, so cosine = (1 - w) cos_picture + w cos_shape."""
    w = SHAPE_WEIGHT
    return torch.cat(
        [(1 - w) ** 0.5 * F.normalize(picture, dim=-1), w**0.5 * F.normalize(shape, dim=-1)], 1
    )


class _Words(nn.Module):
    """Words + positions -> two transformer layers -> mean over the words.  (n, CONTEXT) ids ->
    (n, width)"""

    def __init__(self, vocab_size: int, width: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width)
        self.pos = nn.Parameter(torch.zeros(CONTEXT, width))
        layer = nn.TransformerEncoderLayer(width, 4, width * 2, dropout=0.0, batch_first=True)
        self.layers = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        mask = tokens != PAD  # (n, L)
        h = self.layers(self.embed(tokens) + self.pos, src_key_padding_mask=~mask)
        return (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)  # type: ignore[no-any-return]


class TextEncoder(nn.Module):
    """Two branches, one per part of the embedding (see ImageEncoder), each reading the words
    with its own small transformer into a 4x4 map of the scene:

    - picture: a deconvolution network paints the imagined picture, logits over the named
      colours for each cell, from 4x4 up to GRID x GRID;
    - shape: a smaller one predicts the shape features of the picture the caption describes.

    Apart, so that learning to tell shapes apart (contrastive, phase 2 of the training script)
    does not disturb the picture the drawing follows (phase 1)."""

    def __init__(self, vocab_size: int, width: int = 96, filters: int = SHAPE_FILTERS):
        super().__init__()
        c = self.channels = 64
        self.words = _Words(vocab_size, width)
        self.seed = nn.Sequential(nn.Linear(width, 256), nn.GELU(), nn.Linear(256, c * 16))
        self.paint = nn.Sequential(
            *_up(c, c), *_up(c, c // 2), *_up(c // 2, c // 2),  # 8, 16, 32 cells a side
            nn.GELU(), nn.Conv2d(c // 2, K, 3, padding=1),
        )  # fmt: skip
        s = self.shape_channels = 32
        self.shape_words = _Words(vocab_size, width // 2)
        self.shape_seed = nn.Sequential(
            nn.Linear(width // 2, 256), nn.GELU(), nn.Linear(256, s * 16)
        )
        self.shape_head = nn.Sequential(
            *_up(s, c), nn.GELU(), nn.Conv2d(c, K * filters, 3, padding=1)
        )  # 8 x 8 blocks, as ImageEncoder.shape_features pools

    def scene(self, tokens: torch.Tensor) -> torch.Tensor:
        """(n, CONTEXT) ids -> (n, channels, 4, 4), the picture branch's map"""
        return self.seed(self.words(tokens)).view(len(tokens), self.channels, 4, 4)  # type: ignore[no-any-return]

    def logits(self, scene: torch.Tensor) -> torch.Tensor:
        """(n, channels, 4, 4) -> (n, K, GRID, GRID): the imagined picture's colour logits"""
        return self.paint(scene)  # type: ignore[no-any-return]

    def picture(self, tokens: torch.Tensor) -> torch.Tensor:
        """(n, CONTEXT) -> (n, K * GRID * GRID): imagined colour shares, centred"""
        return (torch.softmax(self.logits(self.scene(tokens)), dim=1) - 1.0 / K).flatten(1)

    def shape_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """(n, CONTEXT) -> (n, K * filters * 64), like ImageEncoder.shape_features"""
        h = self.shape_seed(self.shape_words(tokens)).view(len(tokens), self.shape_channels, 4, 4)
        return self.shape_head(h).flatten(1)  # type: ignore[no-any-return]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(n, CONTEXT) -> (n, EMBED_DIM), unit norm"""
        return join_parts(self.picture(tokens), self.shape_features(tokens))


def _up(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.GELU(), nn.ConvTranspose2d(c_in, c_out, 4, 2, 1)]  # doubles the side


class ShapesClip(nn.Module):
    """CLIP-style pair of encoders with a learned temperature (Radford et al. 2021)."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.visual = ImageEncoder()
        self.text = TextEncoder(vocab_size)
        self.logit_scale = nn.Parameter(torch.tensor(2.659))  # log(1 / 0.07)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) CLIP-normalised -> (B, EMBED_DIM)"""
        return self.visual(x)  # type: ignore[no-any-return]

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """(n, CONTEXT) -> (n, EMBED_DIM)"""
        return self.text(tokens)  # type: ignore[no-any-return]


def load_shapes_model(path: Path | None = None) -> tuple[ShapesClip, WordTokenizer]:
    """The trained shapes model (engine/assets/shapes_clip.safetensors) and its tokenizer."""
    path = path or asset_path(WEIGHTS_FILE)
    if not path.is_file():
        raise FileNotFoundError(
            f"shapes model weights not found: {path}; run scripts/train_shapes_model.py"
        )
    vocab = vocabulary()
    model = ShapesClip(len(vocab))
    model.load_state_dict(read_state_dict(path))
    return model.eval().requires_grad_(False), WordTokenizer(vocab)


def load_shapes_clip(device: torch.device | str = "cpu", path: Path | None = None) -> Any:
    """The bundled model (or the weights at `path`) wrapped as an engine.perceptor.ClipModel."""
    from engine.perceptor import ClipModel

    model, tokenizer = load_shapes_model(path)
    device = torch.device(device)
    # Captions name positions and exact colours: zoomed, hue-shifted crops would contradict them,
    # and whole views moved as far as CLIP's would blur the imagined picture the drawing follows.
    return ClipModel(
        "shapes",
        model.to(device),
        tokenizer,
        INPUT_SIZE,
        device,
        zoom_views=False,
        view_strength=VIEW_STRENGTH,
    )


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
