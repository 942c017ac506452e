"""Cutouts: augmented square views of the image for CLIP, after clipit's scheme, in one batch.

Groups (fractions of n): whole image pooled avg+max and letterboxed (1/8, at least 1); "zoom" crops
with perspective and colour jitter; "wide" views with affine and perspective; then noise.
Every random number comes from the run's generator (drawn on CPU), so a seed fixes the
augmentations and concurrent runs never share an RNG. All views of one input size are a single
`warp_perspective` call: no Python loop per cutout.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from kornia.enhance import adjust_hue, adjust_saturation, sharpness
from kornia.geometry.transform import get_perspective_transform, warp_perspective

from engine.presets import DEFAULT_AUGMENTS


def _u(n: int, lo: float, hi: float, g: torch.Generator, *shape: int) -> torch.Tensor:
    """Uniform samples in [lo, hi) of shape (n, *shape) from the generator, on CPU."""
    return torch.rand((n, *shape), generator=g) * (hi - lo) + lo


def _send(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small CPU tensor (matrices, factors) on `device`. To a GPU it goes from pinned memory
    without blocking: a copy from pageable memory would make the host wait for every queued
    kernel, once per tensor and step. Elsewhere it is a plain `.to`, so the CPU path (and its
    bytes per seed) is unchanged."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def _device_generator(g: torch.Generator, device: torch.device) -> torch.Generator:
    """A generator on `device` seeded from `g`: bulk noise is drawn where it is used, not copied."""
    seed = int(torch.randint(0, 2**62, (1,), generator=g))
    return torch.Generator(device).manual_seed(seed)


def _rect(cx: torch.Tensor, cy: torch.Tensor, w: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Corners (tl, tr, br, bl) of axis-aligned boxes.  (n,) x4 -> (n, 4, 2)"""
    dx = torch.stack([-w, w, w, -w], dim=1) / 2
    dy = torch.stack([-h, -h, h, h], dim=1) / 2
    return torch.stack([cx[:, None] + dx, cy[:, None] + dy], dim=-1)


def _jitter(quads: torch.Tensor, amount: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Move each corner by up to `amount` x the quad's size (a random perspective)."""
    n = quads.shape[0]
    span = (quads.amax(dim=1) - quads.amin(dim=1))[:, None, :]  # (n, 1, 2)
    return quads + _u(n, -1, 1, g, 4, 2) * amount.view(n, 1, 1) * span


def zoom_quads(
    n: int, w: int, h: int, g: torch.Generator, power: float = 1.0, perspective: float = 0.1
) -> torch.Tensor:
    """Source quads of resized crops (10-75% of the area, ratio 3:4..4:3), perspective 0.1.

    `power` shapes the distribution of the area as nerdyrodent's `-cutp`: the fraction is
    u ** power of the way from 10% to 75% (u uniform), so above 1 small crops are more common."""
    if power == 1.0:
        area = _u(n, 0.1, 0.75, g)
    else:
        area = torch.rand((n,), generator=g).pow(power) * 0.65 + 0.1
    side = (area * w * h).sqrt()
    ratio = _u(n, math.log(3 / 4), math.log(4 / 3), g).exp().sqrt()
    cw = (side * ratio).clamp(max=w)
    ch = (side / ratio).clamp(max=h)
    cx = cw / 2 + _u(n, 0, 1, g) * (w - cw)
    cy = ch / 2 + _u(n, 0, 1, g) * (h - ch)
    return _jitter(_rect(cx, cy, cw, ch), torch.full((n,), perspective), g)


def wide_quads(
    n: int,
    w: int,
    h: int,
    g: torch.Generator,
    strength: float = 1.0,
    perspective: bool = True,
    affine: bool = True,
) -> torch.Tensor:
    """Source quads of whole-image views: rotate 15 deg, shift 10%, scale 0.9-1.1 (the affine
    part), perspective 0.2 with p = 0.4; `strength` scales every one of these amounts."""
    a = strength if affine else 0.0
    side = float(max(w, h))  # a square around the image keeps portrait portrait
    scale = _u(n, 1 - 0.1 * a, 1 + 0.1 * a, g)
    cx = w / 2 + _u(n, -0.1 * a, 0.1 * a, g) * w
    cy = h / 2 + _u(n, -0.1 * a, 0.1 * a, g) * h
    quads = _rect(cx, cy, side * scale, side * scale)
    angle = _u(n, -15 * a, 15 * a, g) * math.pi / 180
    cos, sin = angle.cos()[:, None], angle.sin()[:, None]
    centre = torch.stack([cx, cy], dim=-1)[:, None]  # (n, 1, 2)
    d = quads - centre
    rotated = torch.stack(
        [cos * d[..., 0] - sin * d[..., 1], sin * d[..., 0] + cos * d[..., 1]], -1
    )
    tilt = 0.2 * strength if perspective else 0.0
    amount = torch.where(_u(n, 0, 1, g) < 0.4, tilt, 0.0)  # perspective with p = 0.4
    return _jitter(rotated + centre, amount, g)


def warp_quads(images: torch.Tensor, quads: torch.Tensor, size: int) -> torch.Tensor:
    """Warp each image's source quad onto a size x size square.  (B, 3, H, W), (B, 4, 2) ->
    (B, 3, S, S)"""
    s = size
    dst = _rect(*(torch.full((len(quads),), v) for v in ((s - 1) / 2, (s - 1) / 2, s - 1, s - 1)))
    # Matrices from the source quads to the cut square, computed on CPU in float64.
    m = _send(get_perspective_transform(quads.double() - 0.5, dst.double()).float(), images.device)
    return warp_perspective(images, m, (s, s), align_corners=True)


def wide_views(images: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    """One random whole-image view (as `wide_quads`) of each image.  (B, 3, H, W) -> (B, 3, S, S)"""
    _, _, h, w = images.shape
    return warp_quads(images, wide_quads(len(images), w, h, g), size)


def whole_views(image: torch.Tensor, size: int, copies: int) -> torch.Tensor:
    """The whole image, pooled (avg + max) / 2 to fit, letterboxed.  -> (copies, 3, size, size)"""
    _, _, h, w = image.shape
    scale = size / max(w, h)
    tw, th = max(1, round(w * scale)), max(1, round(h * scale))
    pooled = (F.adaptive_avg_pool2d(image, (th, tw)) + F.adaptive_max_pool2d(image, (th, tw))) / 2
    left, top = (size - tw) // 2, (size - th) // 2
    boxed = F.pad(pooled, (left, size - tw - left, top, size - th - top))
    return boxed.expand(copies, -1, -1, -1)


def _torus(
    image: torch.Tensor, quads: torch.Tensor, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A tile's views: the picture shifted by a random offset (as a torus), that picture with
    half of itself wrapped round each side (1, 3, 2H, 2W) and the quads moved onto it."""
    _, _, h, w = image.shape
    dy, dx = (int(v) for v in torch.randint(0, 2**31 - 1, (2,), generator=g))
    image = image.roll((dy % h, dx % w), dims=(2, 3))
    pw, ph = w // 2, h // 2
    padded = F.pad(image, (pw, w - pw, ph, h - ph), mode="circular")
    return image, padded, quads + torch.tensor([pw, ph], dtype=quads.dtype)


class Cutouts:
    """n augmented square views of size `cut_size` (the CLIP model's input).

    `zoom=False` leaves out the zoom crops (and their hue jitter): every view then shows the
    whole picture, for a model whose captions name where things are and their exact colours.
    `wide` scales the wide views' rotation, shift, scale and perspective (1: clipit's).
    `wrap` treats the picture as a torus (a tile): it is shifted by a random offset (its edges
    land anywhere in the views) and views reach round its edges instead of into black.
    `augments` names the augmentations (`engine.presets.AUGMENTS`; default clipit's) and
    `cut_power` shapes the zoom crops' sizes (see `zoom_quads`).
    """

    def __init__(
        self,
        cut_size: int,
        n: int,
        noise: float = 0.1,
        zoom: bool = True,
        wide: float = 1.0,
        wrap: bool = False,
        augments: tuple[str, ...] | list[str] = DEFAULT_AUGMENTS,
        cut_power: float = 1.0,
    ):
        self.cut_size, self.n, self.noise, self.wide, self.wrap = cut_size, n, noise, wide, wrap
        self.augments, self.cut_power = frozenset(augments), cut_power
        self.n_whole = max(1, n // 8)
        self.n_zoom = (n - self.n_whole) // 2 if zoom else 0
        self.n_wide = n - self.n_whole - self.n_zoom

    def __call__(self, image: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """(1, 3, H, W) in [0, 1] -> (n, 3, S, S)"""
        _, _, h, w = image.shape
        s, dev, on = self.cut_size, image.device, self.augments
        tilt = 0.1 if "perspective" in on else 0.0
        zoom = zoom_quads(self.n_zoom, w, h, g, self.cut_power, tilt)
        wide = wide_quads(self.n_wide, w, h, g, self.wide, "perspective" in on, "affine" in on)
        quads = torch.cat([zoom, wide])
        source = image
        if self.wrap:
            image, source, quads = _torus(image, quads, g)
        views = warp_quads(source.expand(len(quads), -1, -1, -1), quads, s)
        if "colour" in on:
            views = self._colour_jitter(views, g)
        views = _extra_augments(views, on, g)
        out = torch.cat([whole_views(image, s, self.n_whole), views])  # (n, 3, S, S)
        if "noise" not in on:
            return out
        fac = _send(_u(self.n, 0, self.noise, g).view(-1, 1, 1, 1), dev)
        return out + fac * torch.randn(out.shape, generator=_device_generator(g, dev), device=dev)

    def _colour_jitter(self, views: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Hue +-0.1 turn and saturation x0.9-1.1 on the zoom group, each view with p = 0.7."""
        k = self.n_zoom
        on = (_u(k, 0, 1, g) < 0.7).float()
        hue = _send(_u(k, -0.1, 0.1, g) * 2 * math.pi * on, views.device)
        sat = _send(1 + _u(k, -0.1, 0.1, g) * on, views.device)
        zoom = adjust_saturation(adjust_hue(views[:k], hue), sat)
        return torch.cat([zoom, views[k:]])


def _extra_augments(views: torch.Tensor, on: frozenset[str], g: torch.Generator) -> torch.Tensor:
    """The augmentations beyond clipit's, each on a view with p = 0.5 (as kornia's defaults):
    sharpness x0-2, a left-right flip, a random box erased to a random colour.  (k, 3, S, S)"""
    k, _, s, _ = views.shape
    dev = views.device
    if "sharpness" in on:
        chosen = _u(k, 0, 1, g) < 0.5
        factor = torch.where(chosen, _u(k, 0, 2, g), torch.ones(k))
        views = sharpness(views, _send(factor, dev))
    if "flip" in on:
        chosen = _send((_u(k, 0, 1, g) < 0.5).view(-1, 1, 1, 1), dev)
        views = torch.where(chosen, views.flip(-1), views)
    if "erasing" in on:
        # kornia's RandomErasing: 2-33% of the view, aspect 0.3-3.3, here a random colour.
        area = _u(k, 0.02, 0.33, g) * s * s
        ratio = _u(k, math.log(0.3), math.log(3.3), g).exp()
        bw, bh = (area * ratio).sqrt().clamp(max=s), (area / ratio).sqrt().clamp(max=s)
        x0, y0 = _u(k, 0, 1, g) * (s - bw), _u(k, 0, 1, g) * (s - bh)
        chosen = _u(k, 0, 1, g) < 0.5
        colour = _u(k, 0, 1, g, 3).view(k, 3, 1, 1)
        pos = torch.arange(s, dtype=torch.float32)
        inside_x = (pos >= x0[:, None]) & (pos < (x0 + bw)[:, None])  # (k, S)
        inside_y = (pos >= y0[:, None]) & (pos < (y0 + bh)[:, None])
        box = inside_y[:, :, None] & inside_x[:, None, :] & chosen.view(k, 1, 1)  # (k, S, S)
        views = torch.where(_send(box[:, None], dev), _send(colour, dev), views)
    return views
