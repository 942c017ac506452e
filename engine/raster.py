"""A differentiable stroke rasteriser in plain PyTorch (no compiled extension, no diffvg).

Strokes are cubic Bezier paths with a width and an RGBA colour, drawn with round caps and joins
and composited in order ("over", Porter & Duff 1984) on a background. Each Bezier segment is
sampled into a polyline; a pixel's coverage comes from its distance to the polyline,
`clamp(0.5 + width / 2 - distance, 0, 1)`, a one-pixel anti-aliasing ramp whose integral is the
stroke's area. Gradients reach the control points and widths through that ramp (it plays the
part of diffvg's boundary term, Li et al. 2020), and the colours through every covered pixel.

Work is done per (tile, stroke) pair: the canvas is cut into square tiles and a stroke only
visits the tiles that its bounding box touches and that its polyline passes close enough to.
Memory stays bounded: the distance pass keeps one piece index per pair pixel (not one value per
polyline piece), and when the pairs exceed a budget, groups of tiles are rendered one at a time
with activation checkpointing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


@dataclass(frozen=True)
class RasterOptions:
    """Accuracy and memory knobs of `render_strokes`; the defaults suit 224 to 1024 px canvases."""

    # Line pieces per cubic Bezier segment; None picks the fewest (a multiple of 4) that keep
    # every polyline within `tolerance` pixels of its curves by a conservative bound.
    samples: int | None = None
    tolerance: float = 0.5
    tile: int = 16  # tile side in pixels
    # Most (pair, pixel) slots rendered at once; beyond it tiles go in checkpointed groups.
    max_slots: int = 2**25
    # Most (pair, pixel, polyline segment) distances held at once in the distance pass.
    chunk: int = 2**25


def bezier_basis(samples: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Cubic Bernstein weights at t = i / samples, i < samples: (samples, 4)."""
    t = torch.arange(samples, dtype=dtype, device=device) / samples
    s = 1 - t
    return torch.stack([s**3, 3 * s * s * t, 3 * s * t * t, t**3], dim=1)


def _segment_controls(points: torch.Tensor) -> torch.Tensor:
    """(N, 3S+1, 2) -> the four control points of each segment (N, S, 4, 2)."""
    k = (points.shape[1] - 1) // 3
    assert points.shape[1] == 3 * k + 1 and k >= 1, "points must be (N, 3*S+1, 2)"
    dev = points.device
    idx = (torch.arange(k, device=dev) * 3)[:, None] + torch.arange(4, device=dev)  # (S, 4)
    return points[:, idx]


def flat_samples(points: torch.Tensor, tolerance: float) -> int:
    """Pieces per cubic so that the polyline stays within `tolerance` px (a multiple of 4, <= 64).

    A chord over a parameter step 1/k strays at most |B''| / (8 k^2) from the curve, and
    |B''| <= 6 max|P[i] - 2 P[i+1] + P[i+2]| for a cubic (the control polygon bound).
    """
    if points.shape[0] == 0:
        return 4
    c = _segment_controls(points.detach())  # (N, S, 4, 2)
    bend = (c[:, :, :-2] - 2 * c[:, :, 1:-1] + c[:, :, 2:]).norm(dim=-1).max()  # synced below
    k = math.sqrt(0.75 * float(bend) / tolerance)
    return min(64, 4 * max(1, math.ceil(k / 4)))


def bezier_polyline(
    points: torch.Tensor, samples: int, segments: torch.Tensor | None = None
) -> torch.Tensor:
    """Sample cubic Bezier paths (N, 3S+1, 2) into polylines (N, S*samples+1, 2).

    With `segments` (N,) in 1..S, stroke n uses only its first `segments[n]` Bezier segments;
    the polyline's remaining points repeat its end point (zero-length pieces draw nothing new).
    """
    ctrl = _segment_controls(points)  # (N, S, 4, 2)
    n, k = ctrl.shape[:2]
    basis = bezier_basis(samples, points.dtype, points.device)  # (samples, 4)
    body = torch.einsum("tj,nsjd->nstd", basis, ctrl).reshape(n, k * samples, 2)
    poly = torch.cat([body, points[:, -1:]], dim=1)  # (N, S*samples+1, 2)
    if segments is None:
        return poly
    last = points.gather(1, (3 * segments).view(n, 1, 1).expand(n, 1, 2).long())  # (N, 1, 2)
    valid = torch.arange(poly.shape[1], device=points.device) <= (segments * samples)[:, None]
    return torch.where(valid[..., None], poly, last)


# -- pairs of (tile, stroke) -------------------------------------------------------------------


@dataclass
class _Pairs:
    """(tile, stroke) pairs sorted by tile, then front (last-drawn) stroke first."""

    stroke: torch.Tensor  # (P,) stroke index
    tile: torch.Tensor  # (P,) tile index, row-major over the tile grid
    rank: torch.Tensor  # (P,) position within the tile, 0 = topmost stroke
    counts: list[int]  # pairs per tile


def _tile_ranges(
    poly: torch.Tensor, widths: torch.Tensor, tile: int, grid: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """First tile column/row and how many tiles each stroke's reach spans: 4 x (N,)."""
    reach = (widths / 2 + 1.0)[:, None]  # coverage is zero beyond w/2 + 0.5
    lo = ((poly.amin(dim=1) - reach) / tile).floor()  # (N, 2)
    hi = ((poly.amax(dim=1) + reach) / tile).floor()
    size = torch.tensor(grid, device=poly.device, dtype=lo.dtype)  # (columns, rows)
    lo = torch.maximum(lo, torch.zeros_like(lo)).long()
    hi = torch.minimum(hi, size - 1).long()
    span = (hi - lo + 1).clamp(min=0)  # (N, 2); zero for strokes off the canvas
    return lo[:, 0], lo[:, 1], span[:, 0], span[:, 1]


def _candidates(
    poly: torch.Tensor, widths: torch.Tensor, tile: int, grid: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(stroke, tile) of every tile inside a stroke's bounding box, stroke-major: 2 x (P,)."""
    x0, y0, nx, ny = _tile_ranges(poly, widths, tile, grid)
    per_stroke = nx * ny  # (N,)
    total = int(per_stroke.sum())  # host sync: the pair count decides the shapes
    stroke = torch.repeat_interleave(
        torch.arange(poly.shape[0], device=poly.device), per_stroke, output_size=total
    )
    local = torch.arange(total, device=poly.device) - (per_stroke.cumsum(0) - per_stroke)[stroke]
    columns = nx[stroke].clamp(min=1)
    tiles = (y0[stroke] + local // columns) * grid[0] + x0[stroke] + local % columns
    return stroke, tiles


def _near_tile(
    poly: torch.Tensor,
    widths: torch.Tensor,
    stroke: torch.Tensor,
    tiles: torch.Tensor,
    tile: int,
    columns: int,
) -> torch.Tensor:
    """Whether each candidate stroke comes close enough to its tile to cover a pixel: (P,)."""
    centre = torch.stack([tiles % columns, tiles // columns], dim=1).to(poly.dtype)
    centre = (centre + 0.5) * tile  # (P, 2)
    a = poly[stroke, :-1]  # (P, M, 2)
    ba = poly[stroke, 1:] - a
    pa = centre[:, None] - a
    h = ((pa * ba).sum(2) / (ba * ba).sum(2).clamp_min(1e-12)).clamp(0, 1)  # (P, M)
    d = (pa - h[..., None] * ba).norm(dim=2).amin(dim=1)  # (P,)
    # Every pixel centre of the tile lies within (tile - 1) / sqrt(2) of the tile's centre.
    return d < widths[stroke] / 2 + 0.5 + (tile - 1) / math.sqrt(2) + 1e-3


def _pairs(poly: torch.Tensor, widths: torch.Tensor, tile: int, grid: tuple[int, int]) -> _Pairs:
    """Every (tile, stroke) pair where the stroke may cover a pixel, in compositing order."""
    with torch.no_grad():
        poly, widths = poly.detach(), widths.detach()
        stroke, tiles = _candidates(poly, widths, tile, grid)
        keep = _near_tile(poly, widths, stroke, tiles, tile, grid[0])
        stroke, tiles = stroke[keep], tiles[keep]  # host sync
    n = poly.shape[0]
    # Front to back inside a tile: later strokes are drawn over earlier ones.
    order = torch.argsort(tiles * n + (n - 1 - stroke))
    stroke, tiles = stroke[order], tiles[order]
    counts = torch.bincount(tiles, minlength=grid[0] * grid[1])
    rank = torch.arange(len(tiles), device=poly.device) - (counts.cumsum(0) - counts)[tiles]
    return _Pairs(stroke, tiles, rank, counts.tolist())


def _groups(counts: list[int], tile: int, max_slots: int) -> list[tuple[int, int, int, int]]:
    """Split the tiles into runs (t0, t1, p0, p1) whose padded slots stay within `max_slots`."""
    if len(counts) * max(counts, default=0) * tile * tile <= max_slots:
        return [(0, len(counts), 0, sum(counts))]
    groups, t0, p0, kmax = [], 0, 0, 0
    p = 0
    for t, c in enumerate(counts):
        wider = max(kmax, c)
        if t > t0 and (t + 1 - t0) * wider * tile * tile > max_slots:
            groups.append((t0, t, p0, p))
            t0, p0, wider = t, p, c
        kmax = wider
        p += c
    groups.append((t0, len(counts), p0, p))
    return groups


# -- distance from pixels to polylines ---------------------------------------------------------


def _pixel_offsets(tile: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Pixel centres inside a tile, row-major: (tile*tile, 2) as (x, y)."""
    r = torch.arange(tile, dtype=dtype, device=device) + 0.5
    y, x = torch.meshgrid(r, r, indexing="ij")
    return torch.stack([x.flatten(), y.flatten()], dim=1)


def _nearest_chunk(
    poly: torch.Tensor, stroke: torch.Tensor, origin: torch.Tensor, tile: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distance to, and index of, each pixel's nearest polyline piece.

    poly (N, M+1, 2); stroke (Pc,); origin (Pc, 2) -> (Pc, T*T) and (Pc, T*T) in 0..M-1.
    Pixel offsets along x and y are separable, so only the final terms are (Pc, M, T, T).
    """
    a = poly[stroke, :-1]  # (Pc, M, 2)
    ba = poly[stroke, 1:] - a
    length = ba.norm(dim=2, keepdim=True)  # (Pc, M, 1)
    e = ba / length.clamp_min(1e-12)  # unit direction; zero for zero-length pieces
    r = torch.arange(tile, dtype=poly.dtype, device=poly.device) + 0.5
    px = origin[:, None, 0:1] + r - a[..., 0:1]  # (Pc, M, T) pixel x minus piece start
    py = origin[:, None, 1:2] + r - a[..., 1:2]
    px4, py4 = px[:, :, None, :], py[:, :, :, None]  # x along the last axis, y along the third
    ex, ey = e[..., 0, None, None], e[..., 1, None, None]  # (Pc, M, 1, 1)
    along = (px * e[..., 0:1])[:, :, None, :] + (py * e[..., 1:2])[:, :, :, None]  # (Pc, M, T, T)
    along.clamp_(min=torch.zeros((), dtype=poly.dtype, device=poly.device), max=length[..., None])
    dx = torch.addcmul(px4, along, ex, value=-1)  # pixel minus its nearest point on the piece
    dy = torch.addcmul(py4, along, ey, value=-1)
    d2, seg = dx.square_().addcmul_(dy, dy).min(dim=1)  # (Pc, T, T)
    return d2.flatten(1), seg.flatten(1)


def _distance_grad(
    poly: torch.Tensor, first: torch.Tensor, pts: torch.Tensor, grad: torch.Tensor
) -> torch.Tensor:
    """Gradient of pixel-to-polyline distances wrt the polyline points (N, M+1, 2).

    first (K,) flat index of each nearest piece's start; pts (K, 2) pixels; grad (K,).
    """
    flat = poly.reshape(-1, 2)
    a, b = flat[first], flat[first + 1]
    ba = b - a
    h = ((pts - a) * ba).sum(1) / (ba * ba).sum(1).clamp_min(1e-12)
    h = h.clamp(0, 1)[:, None]
    diff = a + h * ba - pts  # nearest point minus pixel
    u = diff / diff.norm(dim=1, keepdim=True).clamp_min(1e-12) * grad[:, None]
    out = torch.zeros_like(flat)
    # Envelope theorem: the piece's nearest point moves with weights (1 - h, h) on its ends.
    out.index_add_(0, first, u * (1 - h)).index_add_(0, first + 1, u * h)
    return out.view_as(poly)


class _PolylineDistance(torch.autograd.Function):
    """Distance from pixel centres to each pair's polyline; saves only the nearest piece."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        poly: torch.Tensor,
        stroke: torch.Tensor,
        origin: torch.Tensor,
        offsets: torch.Tensor,
        chunk: int,
    ) -> torch.Tensor:
        m, tile = poly.shape[1] - 1, math.isqrt(offsets.shape[0])
        step = max(1, chunk // (offsets.shape[0] * m))
        dist, nearest = [], []
        for i in range(0, stroke.shape[0], step):
            d2, seg = _nearest_chunk(poly, stroke[i : i + step], origin[i : i + step], tile)
            dist.append(d2.sqrt_())
            nearest.append((seg + stroke[i : i + step, None] * (m + 1)).int())
        ctx.save_for_backward(poly, torch.cat(nearest), origin, offsets)
        return torch.cat(dist)  # (P, T*T)

    @staticmethod
    def backward(
        ctx: Any, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, None, None, None, None]:
        poly, first, origin, offsets = ctx.saved_tensors
        pair, pixel = (grad != 0).nonzero(as_tuple=True)  # only the anti-aliased rim counts
        pts = origin[pair] + offsets[pixel]  # (K, 2)
        g = _distance_grad(poly, first[pair, pixel].long(), pts, grad[pair, pixel])
        return g, None, None, None, None


# -- compositing -------------------------------------------------------------------------------


def _tile_background(bg: torch.Tensor, tile: int) -> torch.Tensor:
    """(3, Hp, Wp) -> (tiles, 3, tile*tile), tiles row-major."""
    c, h, w = bg.shape
    t = bg.view(c, h // tile, tile, w // tile, tile).permute(1, 3, 0, 2, 4)
    return t.reshape(-1, c, tile * tile)


def _untile(tiles: torch.Tensor, grid: tuple[int, int], tile: int) -> torch.Tensor:
    """(tiles, 3, tile*tile) -> (3, Hp, Wp)."""
    gx, gy = grid
    c = tiles.shape[1]
    t = tiles.view(gy, gx, c, tile, tile).permute(2, 0, 3, 1, 4)
    return t.reshape(c, gy * tile, gx * tile)


def _composite_group(
    poly: torch.Tensor,
    widths: torch.Tensor,
    colours: torch.Tensor,
    bg: torch.Tensor,
    stroke: torch.Tensor,
    origin: torch.Tensor,
    slot: torch.Tensor,
    offsets: torch.Tensor,
    kmax: int,
    chunk: int,
) -> torch.Tensor:
    """Render a run of G tiles: bg (G, 3, T*T); pairs' strokes, origins and slots -> (G, 3, T*T).

    A pair's slot is tile * kmax + rank: the pairs are laid out as (G, kmax) so that the
    front-to-back transmittance is one cumulative product along the strokes of each tile.
    """
    g, pixels = bg.shape[0], bg.shape[2]
    d = _PolylineDistance.apply(poly, stroke, origin, offsets, chunk)  # (P, T*T)
    cover = (0.5 + widths[stroke, None] / 2 - d).clamp(0, 1)
    alpha = colours[stroke, 3:] * cover  # (P, T*T)
    a = alpha.new_zeros(g * kmax, pixels).index_put((slot,), alpha).view(g, kmax, pixels)
    rgb = colours.new_zeros(g * kmax, 3).index_put((slot,), colours[stroke, :3]).view(g, kmax, 3)
    through = torch.cumprod(1 - a, dim=1)  # (G, K, T*T): light passing the first k+1 strokes
    reach = F.pad(through[:, :-1], (0, 0, 1, 0), value=1.0)  # light reaching stroke k
    painted = torch.einsum("gkp,gkc->gcp", a * reach, rgb)  # (G, 3, T*T)
    return painted + through[:, -1:] * bg


def _render_group(
    poly: torch.Tensor,
    widths: torch.Tensor,
    colours: torch.Tensor,
    bg_tiles: torch.Tensor,
    pairs: _Pairs,
    span: tuple[int, int, int, int],
    grid: tuple[int, int],
    o: RasterOptions,
    remember: bool,
) -> torch.Tensor:
    """Tiles t0..t1 (pairs p0..p1): (t1 - t0, 3, T*T); checkpointed unless `remember`."""
    t0, t1, p0, p1 = span
    if p1 == p0:  # no stroke touches these tiles
        return bg_tiles[t0:t1]
    kmax = max(pairs.counts[t0:t1])
    stroke, tile = pairs.stroke[p0:p1], pairs.tile[p0:p1]
    slot = (tile - t0) * kmax + pairs.rank[p0:p1]
    origin = torch.stack([tile % grid[0], tile // grid[0]], dim=1).to(poly.dtype) * o.tile
    offsets = _pixel_offsets(o.tile, poly.dtype, poly.device)  # (T*T, 2)
    args = (poly, widths, colours, bg_tiles[t0:t1], stroke, origin, slot, offsets, kmax, o.chunk)
    if remember:
        return _composite_group(*args)
    return checkpoint(_composite_group, *args, use_reentrant=False)


def _as_background(
    background: torch.Tensor | float | tuple[float, float, float],
    size: tuple[int, int],
    like: torch.Tensor,
) -> torch.Tensor:
    """A colour, a (3,) tensor or a (3, H, W) image -> (3, H, W) on `like`'s device and dtype."""
    w, h = size
    bg = torch.as_tensor(background, dtype=like.dtype, device=like.device)
    if bg.dim() == 0:
        bg = bg.expand(3)
    if bg.dim() == 1:
        return bg.view(3, 1, 1).expand(3, h, w)
    if tuple(bg.shape) != (3, h, w):
        raise ValueError(f"background must be a colour or a (3, {h}, {w}) image, got {bg.shape}")
    return bg


def render_strokes(
    points: torch.Tensor,
    widths: torch.Tensor,
    colours: torch.Tensor,
    size: tuple[int, int],
    background: torch.Tensor | float | tuple[float, float, float] = 1.0,
    *,
    segments: torch.Tensor | None = None,
    options: RasterOptions | None = None,
) -> torch.Tensor:
    """Draw strokes in order over a background: (3, H, W), differentiable (see module docstring).

    points (N, 3S+1, 2) in pixels (x right, y down, pixel centres at +0.5); widths (N,) in
    pixels; colours (N, 4) RGBA in [0, 1]; size (W, H); segments (N,) in 1..S, default all S.
    """
    o = options or RasterOptions()
    w, h = size
    grid = (math.ceil(w / o.tile), math.ceil(h / o.tile))  # (columns, rows)
    bg = _as_background(background, size, points)
    bg = F.pad(bg, (0, grid[0] * o.tile - w, 0, grid[1] * o.tile - h))  # (3, Hp, Wp)
    bg_tiles = _tile_background(bg, o.tile)  # (tiles, 3, T*T)
    samples = o.samples or flat_samples(points, o.tolerance)
    poly = bezier_polyline(points, samples, segments)  # (N, M+1, 2)
    pairs = _pairs(poly, widths, o.tile, grid)
    groups = _groups(pairs.counts, o.tile, o.max_slots)
    # One group keeps its activations; several are recomputed in backward to bound memory.
    remember = len(groups) == 1 or not torch.is_grad_enabled()
    out = [
        _render_group(poly, widths, colours, bg_tiles, pairs, g, grid, o, remember) for g in groups
    ]
    return _untile(torch.cat(out), grid, o.tile)[:, :h, :w]


# -- SVG ---------------------------------------------------------------------------------------


def _png_data_uri(image: torch.Tensor) -> str:
    """(3, H, W) in [0, 1] -> 'data:image/png;base64,...'."""
    import base64
    import io

    from PIL import Image

    arr = image.detach().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _svg_background(background: torch.Tensor | tuple[float, float, float], w: int, h: int) -> str:
    """A full-canvas <rect> for a colour, or an embedded PNG <image> for a (3, H, W) tensor."""
    if isinstance(background, torch.Tensor) and background.dim() == 3:
        uri = _png_data_uri(background)
        return f'<image x="0" y="0" width="{w}" height="{h}" xlink:href="{uri}"/>'
    r, g, b = (round(float(c) * 255) for c in torch.as_tensor(background).expand(3))
    return f'<rect x="0" y="0" width="{w}" height="{h}" fill="rgb({r},{g},{b})"/>'


def _svg_path(points: list[list[float]], width: float, colour: list[float]) -> str:
    """One stroke: 'M x y C x1 y1 x2 y2 x3 y3 ...' with round caps and joins, no fill."""
    xy = [f"{x:.2f} {y:.2f}" for x, y in points]
    d = f"M {xy[0]} " + " ".join(f"C {', '.join(xy[i : i + 3])}" for i in range(1, len(xy), 3))
    r, g, b = (round(min(max(c, 0.0), 1.0) * 255) for c in colour[:3])
    return (
        f'<path d="{d}" fill="none" stroke="rgb({r},{g},{b})" '
        f'stroke-opacity="{min(max(colour[3], 0.0), 1.0):.4f}" stroke-width="{width:.3f}" '
        'stroke-linecap="round" stroke-linejoin="round"/>'
    )


def strokes_to_svg(
    points: torch.Tensor,
    widths: torch.Tensor,
    colours: torch.Tensor,
    size: tuple[int, int],
    background: torch.Tensor | tuple[float, float, float] = (1.0, 1.0, 1.0),
    segments: torch.Tensor | None = None,
) -> str:
    """The strokes of `render_strokes` as an SVG document (same pixel coordinates, same order)."""
    w, h = size
    pts, wid, col = (t.detach().double().cpu().tolist() for t in (points, widths, colours))
    used = [len(p) // 3 for p in pts] if segments is None else segments.cpu().tolist()
    body = [
        _svg_path(p[: 3 * s + 1], wd, c) for p, wd, c, s in zip(pts, wid, col, used, strict=True)
    ]
    return "\n".join(
        [
            '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'width="{w}" height="{h}" viewBox="0 0 {w} {h}">',
            _svg_background(background, w, h),
            *body,
            "</svg>",
            "",
        ]
    )
