"""Seconds per iteration and peak memory of the whole loop, per quality preset.

Full-size CLIP architectures with random weights ('ViT-B/32:random'): the cost is the same as with
the real weights, and nothing is downloaded. Prints a markdown table.

    python bench/iteration.py                      # CPU: draft and normal, 4 iterations each
    python bench/iteration.py --device cuda --iterations 30 --qualities draft normal better best
    python bench/iteration.py --variations 4       # also 4 pictures in one batch, per picture

`end-to-end` is the wall time of the timed run, from the `generate()` call to the PNG's bytes,
models already loaded (the service's case). With `--variations N` each quality gets a second
row: the batch's time per iteration, and the ratio to N solo runs (below 1: the batch is
cheaper per picture).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import ModelCache, Settings, generate, resolve  # noqa: E402
from engine.presets import QUALITY  # noqa: E402


def reset_peak(device: torch.device) -> None:
    """Start a new peak-memory window (CUDA allocator, or the process's peak RSS on Linux)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")


def peak_mib(device: torch.device) -> float:
    """Peak memory since `reset_peak`: CUDA allocated bytes, or peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(
    settings: Settings, models: ModelCache, device: torch.device
) -> tuple[float, float, float]:
    """Median seconds per iteration (first two skipped as warm-up), peak MiB, and the timed
    run's end-to-end seconds (generate() to PNG bytes)."""
    stamps: list[float] = []

    def on_step(_: object) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    generate(settings, models=models)  # warm-up run: model load, allocator, kernels
    reset_peak(device)
    began = time.perf_counter()
    result = generate(settings, models=models, on_step=on_step)
    result.image.save(io.BytesIO(), format="PNG")
    end_to_end = time.perf_counter() - began
    per_it = [b - a for a, b in zip(stamps[1:], stamps[2:], strict=False)] or [float("nan")]
    return statistics.median(per_it), peak_mib(device), end_to_end


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--style", default="pixel art")
    ap.add_argument("--clip-model", default="ViT-B/32:random")
    ap.add_argument("--aspect", default="square")
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--clip-precision", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--qualities", nargs="+", default=None, choices=list(QUALITY))
    ap.add_argument("--variations", type=int, default=1, help="also time N pictures in a batch")
    args = ap.parse_args()
    device = torch.device(args.device)
    cpu = device.type == "cpu"
    iterations = args.iterations or (4 if cpu else 30)
    qualities = args.qualities or (["draft", "normal"] if cpu else list(QUALITY))
    models = ModelCache()
    clip = models.clip(args.clip_model, device)
    clip.precision = args.clip_precision
    cpu_name = f"CPU x{torch.get_num_threads()}"
    name = torch.cuda.get_device_name() if device.type == "cuda" else cpu_name
    print(
        f"device: {name}, style: {args.style}, CLIP: {args.clip_model} "
        f"({args.clip_precision}), {iterations} iterations\n"
    )
    print(
        "| quality | pictures | size | cutouts | s/iteration (median) | it/s "
        "| vs solo, per picture | end-to-end (s) | peak memory (MiB) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for q in qualities:
        s = resolve(Settings.create(
            prompts="underwater city", style=args.style, quality=q, aspect=args.aspect,
            clip_models=[args.clip_model], iterations=iterations, seed=0, device=str(device),
        ))  # fmt: skip
        solo = 0.0
        for n in sorted({1, args.variations}):
            sec, mib, e2e = measure(s.model_copy(update={"variations": n}), models, device)
            solo = solo or sec
            ratio = f"{sec / (n * solo):.2f}" if n > 1 else "1"
            w, h = s.size
            print(f"| {q} | {n} | {w}x{h} | {s.cutouts} | {sec:.4f} | {1 / sec:.1f} | {ratio} "
                  f"| {e2e:.2f} | {mib:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
