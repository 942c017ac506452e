"""The size of a run's state, and the time to save and load it, per style and quality's size.

What a state holds depends on the drawer (its parameters and Adam's two moments), not on CLIP,
so the runs here use the tiny random CLIP at each quality's real default size (square aspect
unless --aspects says more) and, for the image style, a full-size imagenet_f16_16384 VQGAN with
random weights (the real architecture; nothing is downloaded). Each run does a few iterations,
is stopped, and its state is encoded, written, read back and restored:

  state MiB       the file without a video;
  save, load ms   median of encode + atomic write to a local file, of read + decode + restore;
  with video      the file at the end of a run with --video: it carries the frames captured
                  so far (PNG at the picture's size; the stopped run's frames repeated to the
                  full count stand for them), and the time to save it.

A kill -9 of a worker costs the work since the last save: with the default
T2A_CHECKPOINT_SECONDS=60, at most 60 s plus the iteration under way (about 30 s on average).

    python bench/resume.py                      # every style at draft and normal, square
    python bench/resume.py --qualities draft normal better best --aspects square widescreen
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import VQGAN_NAME, with_random_vqgan  # noqa: E402
from engine import (  # noqa: E402
    Cancelled,
    ModelCache,
    Settings,
    decode_state,
    encode_state,
    generate,
    resolve,
)
from engine.drawers import DrawerContext, create_drawer  # noqa: E402
from engine.runstate import read_state, restore, write_state  # noqa: E402
from engine.settings import picture_seed, solo  # noqa: E402
from engine.video import plan_video  # noqa: E402

STYLES = ("image", "painting", "pixel art")
STOP_AT = 3  # iterations before the stop


def settings_for(style: str, quality: str, aspect: str) -> Any:
    """The quality's default size for the style, run on the tiny CLIP."""
    asked = resolve(Settings.create(style=style, quality=quality, aspect=aspect, seed=0,
                                    vqgan_model=VQGAN_NAME, device="cpu"))  # fmt: skip
    return resolve(Settings.create(
        style=style, quality=quality, aspect=aspect, size=asked.size, seed=0, cutouts=8,
        clip_models=["tiny-random"], vqgan_model=VQGAN_NAME, device="cpu", make_video=True,
        iterations=asked.iterations, pixel_size=asked.pixel_size,
    ))  # fmt: skip


def stopped_state(s: Any, models: ModelCache, video: Path) -> Any:
    calls = [0]

    def stop() -> bool:
        calls[0] += 1
        return calls[0] > STOP_AT

    try:
        generate(s, models=models, should_stop=stop, video_path=video)
    except Cancelled as exc:
        assert exc.state is not None
        return exc.state()
    raise AssertionError("the run did not stop")


def median_ms(call: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def measure(style: str, quality: str, aspect: str, models: ModelCache, repeats: int) -> str:
    s = settings_for(style, quality, aspect)
    with tempfile.TemporaryDirectory() as tmp:
        state = stopped_state(s, models, Path(tmp) / "v.mp4")
        frames = list(state.frames)
        state.frames = []
        path = Path(tmp) / "s.resume.safetensors"
        bare = len(encode_state(state))
        save = median_ms(lambda: write_state(path, state), repeats)
        drawers = [
            create_drawer(s.style, DrawerContext(solo(s, picture_seed(s.seed, 1)),
                          torch.device("cpu"), torch.Generator().manual_seed(0), None, models))
        ]  # fmt: skip
        opt = torch.optim.Adam([g for d in drawers for g in d.parameters()])
        gens, history = [torch.Generator()], torch.empty((s.iterations, 1))

        def load() -> None:
            restore(read_state(path), drawers, opt, gens, history)

        load_ms = median_ms(load, repeats)
        assert decode_state(path.read_bytes()).iteration == STOP_AT
        # The end of a run with --video: every frame but the final image (the stopped run's
        # frames repeated to that count stand for them).
        video_frames = plan_video(s.iterations).n_frames - 1
        state.frames = (frames * video_frames)[:video_frames]
        with_video = len(encode_state(state))
        save_video = median_ms(lambda: write_state(path, state), repeats)
    w, h = s.size
    return (f"| {style} | {quality} | {w}x{h} | {bare / 2**20:.2f} | {save:.0f} | {load_ms:.0f} "
            f"| {with_video / 2**20:.1f} ({video_frames} frames) | {save_video:.0f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qualities", nargs="+", default=["draft", "normal"])
    parser.add_argument("--aspects", nargs="+", default=["square"])
    parser.add_argument("--styles", nargs="+", default=list(STYLES))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    models = with_random_vqgan(torch.device("cpu"))
    print(f"torch {torch.__version__}, CPU, {torch.get_num_threads()} threads; "
          f"state after {STOP_AT} iterations, median of {args.repeats}")  # fmt: skip
    print()
    print("| style | quality | size | state MiB | save ms | load ms | with video MiB | "
          "save ms |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for style in args.styles:
        for quality in args.qualities:
            for aspect in args.aspects:
                print(measure(style, quality, aspect, models, args.repeats), flush=True)


if __name__ == "__main__":
    main()
