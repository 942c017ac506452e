"""How long a cancel takes: between iterations (before) and prompt (`should_abort`, after).

One run per case records the moment of every read of `should_abort` (a check: the blocks of
CLIP and of the VQGAN decoder, forward and backward, and the loop's own boundaries). A cancel
asked at a random moment waits for the next check, so the longest gap between two checks is
the worst latency of a prompt cancel, and one whole iteration that of a cancel between
iterations (the median such wait is half of it). The run is then cancelled for real at a
random moment of its third iteration and the time from the flag to `Cancelled` is measured
(the check plus unwinding). CLIP is `ViT-B/32:random` and the image style decodes with a
full-size imagenet_f16_16384 VQGAN with random weights: the real architectures, nothing is
downloaded.

    python bench/cancel.py                                   # 1024x1024 and 512x512, image, CPU
    python bench/cancel.py --sizes 1024x1024 --variations 4 --device cuda
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import with_random_vqgan  # noqa: E402
from engine import Cancelled, ModelCache, Settings, generate, resolve  # noqa: E402


class Reads:
    """`should_abort` that stamps each read and turns true once `flag` is set."""

    def __init__(self) -> None:
        self.stamps: list[float] = []
        self.flag = threading.Event()

    def __call__(self) -> bool:
        self.stamps.append(time.perf_counter())
        return self.flag.is_set()


def one_case(size: str, args: argparse.Namespace, models: ModelCache) -> dict[str, Any]:
    w, h = (int(v) for v in size.split("x"))
    s = resolve(Settings.create(
        prompts="a lighthouse in a storm", style=args.style, clip_models=[args.clip_model],
        size=(w, h), variations=args.variations, cutouts=args.cutouts, iterations=1000, seed=0,
        device=args.device,
    ))  # fmt: skip
    reads, steps = Reads(), []
    asked: list[float] = []
    rng = random.Random(size)

    def on_step(step: Any) -> None:
        steps.append(time.perf_counter())
        if len(steps) == 2:  # in the third iteration, at a random moment of it
            iteration = steps[1] - steps[0]
            timer = threading.Timer(rng.uniform(0, iteration), lambda: ask())
            timer.daemon = True
            timer.start()

    def ask() -> None:
        asked.append(time.perf_counter())
        reads.flag.set()

    try:
        generate(s, models=models, on_step=on_step, should_abort=reads)
    except Cancelled:
        stopped = time.perf_counter()
    inside = [t for t in reads.stamps if steps[0] <= t <= steps[1]]  # the whole 2nd iteration
    edges = [steps[0], *inside, steps[1]]
    gaps = [b - a for a, b in zip(edges, edges[1:], strict=False)]
    return {
        "size": f"{s.size[0]}x{s.size[1]}",
        "iteration": steps[1] - steps[0],
        "checks": len(inside),
        "worst_gap": max(gaps),
        "measured": stopped - asked[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["1024x1024", "512x512"])
    parser.add_argument("--style", default="image")
    parser.add_argument("--clip-model", default="ViT-B/32:random")
    parser.add_argument("--variations", type=int, default=1)
    parser.add_argument("--cutouts", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    models = with_random_vqgan(torch.device(args.device))
    print(f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} threads, "
          f"{args.style}, CLIP {args.clip_model}, {args.cutouts} cutouts, "
          f"variations {args.variations}")  # fmt: skip
    print()
    print(
        "| size | one iteration s | checks per iteration | before: worst / median wait s "
        "| after: worst wait s | after: measured s | worst, before / after |"
    )
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        r = one_case(size, args, models)
        print(f"| {r['size']} | {r['iteration']:.1f} | {r['checks']} | {r['iteration']:.1f} / "
              f"{r['iteration'] / 2:.1f} | {r['worst_gap']:.2f} | {r['measured']:.2f} | "
              f"{r['iteration'] / r['worst_gap']:.0f}x |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
