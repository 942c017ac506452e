"""Seconds per animation frame, per style: the camera move plus `frame_iterations` iterations.

Each style runs a short animation (3 frames) at its default size for the CLIP model given
(default: the bundled `shapes` world, 64x64, offline; `ViT-B/32:random` costs what the real
ViT-B/32 does, and the image style then decodes with a full-size imagenet_f16_16384 VQGAN with
random weights: nothing is downloaded) and times frames 2 and 3 from the moment each finished
frame is handed out (`on_frame`): the first frame's `iterations` and the loading are not counted.
Prints a markdown table; medians of --repeats runs.

    python bench/animation.py                                   # shapes, CPU
    python bench/animation.py --clip-model ViT-B/32:random --frame-iterations 20 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import with_random_vqgan  # noqa: E402
from engine import ModelCache, Settings, generate, resolve  # noqa: E402

STYLES = ("image", "painting", "pixel art")


def seconds_per_frame(
    style: str, args: argparse.Namespace, models: ModelCache
) -> tuple[tuple[int, int], float]:
    s = resolve(Settings.create(
        prompts="a red circle on a blue background", style=style, clip_models=[args.clip_model],
        seed=0, iterations=2, frames=3, frame_iterations=args.frame_iterations, zoom="1.04",
        angle="1", device=args.device,
    ))  # fmt: skip
    runs = []
    for _ in range(args.repeats):
        stamps: list[float] = []

        def stamp(index: int, picture: object, stamps: list[float] = stamps) -> None:
            stamps.append(time.perf_counter())

        generate(s, models=models, on_frame=stamp)
        runs.append((stamps[-1] - stamps[0]) / (len(stamps) - 1))
    return s.size, statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip-model", default="shapes")
    parser.add_argument("--frame-iterations", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--styles", nargs="+", default=list(STYLES))
    args = parser.parse_args()
    # The image style's VQGAN with random weights under the real name (nothing downloaded; a
    # model world such as shapes brings its own).
    models = with_random_vqgan(torch.device(args.device))
    print(f"torch {torch.__version__}, {args.device}, CLIP {args.clip_model}, "
          f"{args.frame_iterations} iterations per frame, median of {args.repeats}")  # fmt: skip
    print()
    print("| style | size | s per frame | s per iteration |")
    print("|---|---|---|---|")
    for style in args.styles:
        (w, h), per_frame = seconds_per_frame(style, args, models)
        per_it = per_frame / args.frame_iterations
        print(f"| {style} | {w}x{h} | {per_frame:.2f} | {per_it:.3f} |", flush=True)


if __name__ == "__main__":
    main()
