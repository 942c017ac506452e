"""Forward and forward+backward time and peak memory of the stroke rasteriser (engine.raster).

Strokes start as the painting style starts them (CLIPDraw's short random walks, random RGBA);
`--radius` makes them longer, `--width` wider, to see how cost grows as strokes spread out.
Prints a markdown table: median milliseconds over `--repeats` runs after a warm-up.

    python bench/raster.py                        # CPU: a reduced grid
    python bench/raster.py --device cuda          # the full grid: 64..2048 strokes, 3 sizes
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.iteration import peak_mib, reset_peak  # noqa: E402
from engine.drawers import painting  # noqa: E402
from engine.raster import RasterOptions, flat_samples, render_strokes  # noqa: E402

FULL_STROKES = [64, 256, 1024, 2048]
FULL_SIZES = ["224x224", "400x224", "640x352"]


def median_ms(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall time of `fn` in milliseconds, after two warm-up calls."""
    times = []
    for i in range(repeats + 2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def make_strokes(
    n: int, size: tuple[int, int], device: torch.device, radius: float, width: float
) -> tuple[torch.Tensor, ...]:
    """The painting style's start (seed 0), scaled by `radius`, with widths up to `width`."""
    g = torch.Generator().manual_seed(0)
    points, segments, colours = painting.random_strokes(n, size, g)
    points = points[:, :1] + (points - points[:, :1]) * (radius / painting.START_RADIUS)
    widths = 1 + (width - 1) * torch.rand(n, generator=g)
    tensors = (points, widths, colours, segments)
    return tuple(t.to(device) for t in tensors)


def run_case(
    n: int, size: tuple[int, int], device: torch.device, args: argparse.Namespace
) -> tuple[int, float, float, float]:
    """(samples, forward ms, forward+backward ms, peak MiB) for one stroke count and size."""
    points, widths, colours, segments = make_strokes(n, size, device, args.radius, args.width)
    params = [t.requires_grad_(True) for t in (points, widths, colours)]
    opts = RasterOptions(tile=args.tile)
    opts = replace(opts, samples=args.samples or flat_samples(points, opts.tolerance))
    weight = torch.rand(3, size[1], size[0], device=device)  # a loss that touches every pixel

    def forward() -> torch.Tensor:
        return render_strokes(*params, size, 1.0, segments=segments, options=opts)

    def step() -> None:
        (forward() * weight).sum().backward()
        for p in params:
            p.grad = None

    with torch.no_grad():
        fwd = median_ms(forward, device, args.repeats)
    reset_peak(device)
    both = median_ms(step, device, args.repeats)
    assert opts.samples is not None
    return opts.samples, fwd, both, peak_mib(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--strokes", type=int, nargs="+", default=None)
    ap.add_argument("--sizes", nargs="+", default=None, help="WIDTHxHEIGHT ...")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--radius", type=float, default=painting.START_RADIUS)
    ap.add_argument("--width", type=float, default=1.0, help="widths drawn in [1, WIDTH] px")
    ap.add_argument("--samples", type=int, default=None, help="pieces per segment (adaptive)")
    ap.add_argument("--tile", type=int, default=RasterOptions.tile)
    args = ap.parse_args()
    device = torch.device(args.device)
    cpu = device.type == "cpu"
    strokes = args.strokes or ([64, 256, 1024] if cpu else FULL_STROKES)
    sizes = args.sizes or (["224x224", "400x224"] if cpu else FULL_SIZES)
    args.repeats = args.repeats or (3 if cpu else 20)
    name = torch.cuda.get_device_name() if not cpu else f"CPU x{torch.get_num_threads()}"
    print(
        f"device: {name}, radius {args.radius}, widths 1..{args.width} px, "
        f"tile {args.tile}, samples per segment {args.samples or 'adaptive'}, "
        f"median of {args.repeats}\n"
    )
    memory = "peak allocated (MiB)" if not cpu else "peak RSS of the process (MiB)"
    print(f"| strokes | size | samples | forward (ms) | forward+backward (ms) | {memory} |")
    print("|---|---|---|---|---|---|")
    for size_text in sizes:
        w, h = (int(v) for v in size_text.split("x"))
        for n in strokes:
            k, fwd, both, mib = run_case(n, (w, h), device, args)
            print(f"| {n} | {w}x{h} | {k} | {fwd:.2f} | {both:.2f} | {mib:.0f} |", flush=True)


if __name__ == "__main__":
    main()
