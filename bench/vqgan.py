"""Seconds per iteration and peak memory of the image style, with and without decoder checkpointing.

A full-size imagenet_f16_16384 VQGAN with random weights (the same cost as the real one; nothing is
downloaded), at each quality's default size. Two steps are timed:
  decode: render (quantise + decode) -> pixel loss -> backward -> Adam step -> clamp;
  full:   the same with 40 cutouts and a random-weight ViT-B/32 CLIP ('ViT-B/32:random') and the
          spherical prompt loss instead of the pixel loss (what one generation step costs with the
          draft quality's single CLIP).
Peak memory includes the weights (VQGAN ~290 MiB, ViT-B/32 ~580 MiB). Prints a markdown table.

    python bench/vqgan.py                                  # CPU: draft only, 3 iterations
    python bench/vqgan.py --device cuda --aspects square widescreen portrait
    python bench/vqgan.py --variations 4                   # the full step for 4 pictures at once

With `--variations N` the full step renders N pictures (N drawers, one Adam), cuts each one's
40 views and sends all N x 40 through CLIP in one batch, as `generate(variations=N)` does; the
extra column divides its time by N solo steps.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import VQGAN_NAME, with_random_vqgan  # noqa: E402
from bench.iteration import peak_mib, reset_peak  # noqa: E402
from engine import ModelCache, Settings, resolve  # noqa: E402
from engine.drawers.base import DrawerContext  # noqa: E402
from engine.drawers.image import ImageDrawer  # noqa: E402
from engine.presets import DEFAULT_CUTOUTS, QUALITY  # noqa: E402


def make_drawer(
    quality: str, aspect: str, checkpointing: bool, models: ModelCache, device: torch.device
) -> ImageDrawer:
    """An image drawer at the quality's default size, resolved by the drawer itself."""
    s = resolve(Settings.create(
        style="image", quality=quality, aspect=aspect, seed=0, vqgan_model=VQGAN_NAME,
        decoder_checkpointing=checkpointing, device=str(device),
    ))  # fmt: skip
    return ImageDrawer(DrawerContext(s, device, torch.Generator().manual_seed(0), None, models))


def decode_step(drawer: ImageDrawer) -> Callable[[], None]:
    """render -> mean squared pixel loss -> backward -> Adam -> clamp."""
    opt = torch.optim.Adam(drawer.parameters())

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        drawer.render().sub(0.5).square().mean().backward()
        opt.step()
        drawer.clamp_()

    return step


def full_step(drawers: list[ImageDrawer], clip: object, device: torch.device) -> Callable[[], None]:
    """render -> cutouts -> CLIP -> spherical loss to a prompt -> backward -> Adam -> clamp,
    for every drawer at once (one CLIP batch of N x 40 views)."""
    from engine.cutouts import Cutouts
    from engine.perceptor import ClipModel, spherical_distance

    assert isinstance(clip, ClipModel)
    cut = Cutouts(clip.input_size, DEFAULT_CUTOUTS)
    gens = [torch.Generator().manual_seed(i) for i in range(len(drawers))]
    target = clip.encode_text(["underwater city"])  # (1, d)
    opt = torch.optim.Adam([group for d in drawers for group in d.parameters()])

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        views = torch.cat([cut(d.render(), g) for d, g in zip(drawers, gens, strict=True)])
        embeds = clip.encode_image(views)  # (N x 40, d)
        spherical_distance(embeds, target).view(len(drawers), -1).mean(1).sum().backward()
        opt.step()
        for d in drawers:
            d.clamp_()

    return step


def measure(step: Callable[[], None], iterations: int, device: torch.device) -> tuple[float, float]:
    """Median seconds per step after one warm-up step, and peak MiB over the timed steps."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    step()
    reset_peak(device)
    times = []
    for _ in range(iterations):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), peak_mib(device)


def cell(result: tuple[float, float] | str) -> str:
    """'s/it | MiB' columns, or the reason there is no figure."""
    if isinstance(result, str):
        return f"{result} | {result}"
    return f"{result[0]:.3f} | {result[1]:.0f}"


def run_one(
    make: Callable[[], Callable[[], None]], iterations: int, device: torch.device
) -> tuple[float, float] | str:
    """Measure one configuration; an out-of-memory error becomes 'OOM'."""
    try:
        return measure(make(), iterations, device)
    except torch.OutOfMemoryError:
        return "OOM"
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()


def row(
    quality: str, aspect: str, ckpt: bool, clip: object, models: ModelCache, device: torch.device,
    iterations: int, variations: int = 1,
) -> str:  # fmt: skip
    """One table row: decode step and full step (solo, and N at once) for a size and
    checkpointing setting."""

    def drawer() -> ImageDrawer:
        return make_drawer(quality, aspect, ckpt, models, device)

    def full(n: int) -> tuple[float, float] | str:
        if not clip:
            return "-"
        return run_one(lambda: full_step([drawer() for _ in range(n)], clip, device),
                       iterations, device)  # fmt: skip

    dec = run_one(lambda: decode_step(drawer()), iterations, device)
    solo = full(1)
    w, h = drawer().ctx.settings.size or (0, 0)
    line = f"| {quality} | {w}x{h} | {'on' if ckpt else 'off'} | {cell(dec)} | {cell(solo)} |"
    if variations > 1:
        batch = full(variations)
        ratio = (
            f"{batch[0] / (variations * solo[0]):.2f}"
            if isinstance(batch, tuple) and isinstance(solo, tuple)
            else "-"
        )
        line += f" {cell(batch)} | {ratio} |"
    return line


def load_models(args: argparse.Namespace, device: torch.device) -> tuple[ModelCache, object]:
    """A cache holding the random full-size VQGAN, and the CLIP (None if unavailable/off)."""
    models = with_random_vqgan(device)
    if args.no_clip:
        return models, None
    try:
        return models, models.clip(args.clip_model, device)
    except ImportError:  # no perceptor in this checkout: the decode step only
        return models, None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--qualities", nargs="+", default=None, choices=list(QUALITY))
    ap.add_argument("--aspects", nargs="+", default=["square"])
    ap.add_argument("--clip-model", default="ViT-B/32:random")
    ap.add_argument("--no-clip", action="store_true", help="time the decode step only")
    ap.add_argument("--variations", type=int, default=1, help="also time N pictures at once")
    args = ap.parse_args()
    device = torch.device(args.device)
    cpu = device.type == "cpu"
    iterations = args.iterations or (3 if cpu else 10)
    qualities = args.qualities or (["draft"] if cpu else list(QUALITY))
    models, clip = load_models(args, device)
    name = torch.cuda.get_device_name() if not cpu else f"CPU x{torch.get_num_threads()}"
    clip_name = args.clip_model if clip else "none"
    print(f"device: {name}, VQGAN: f16-16384 (random weights), CLIP: {clip_name}, ", end="")
    print(f"{iterations} timed iterations (median)\n")
    cols = ["quality", "size", "checkpointing", "decode s/it", "decode peak MiB"]
    cols += ["full s/it", "full peak MiB"]
    if args.variations > 1:
        n = args.variations
        cols += [f"full x{n} s/it", f"full x{n} peak MiB", f"x{n} vs solo, per picture"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for aspect in args.aspects:
        for q in qualities:
            for ckpt in (False, True):
                line = row(q, aspect, ckpt, clip, models, device, iterations, args.variations)
                print(line, flush=True)


if __name__ == "__main__":
    main()
