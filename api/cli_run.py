"""`text2art generate`'s preparation and progress: every weights file of the run, then the
models, loaded before the progress bar starts (so a missing file or a slow load never sits under
a 0% bar); the bar's `on_step`, and the writer of an animation's frames (`--save-frames`)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from api.cli_common import fail

LOSS_SHOW_SECONDS = 0.5  # the bar reads the loss (a wait for the GPU) at most this often

OFFLINE_HINT = (
    "to try text2art offline, use the bundled models: "
    "text2art generate 'a red circle' --clip-model shapes"
)


def fetch_weights(settings: Any) -> None:
    """Download what the run needs and is missing; report every file that failed, at once."""
    from api.cli_models import DownloadBar
    from engine import ensure_file, missing_weights
    from engine.errors import WeightsError

    problems = []
    for label, spec, path in missing_weights(settings):
        if spec is None:
            problems.append(f"{label}: no file at {path}")
            continue
        bar = DownloadBar(path.name)
        try:
            ensure_file(spec, path, progress=bar, label=label)
        except WeightsError as exc:
            problems.append(str(exc))
        finally:
            bar.close()
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        files = "1 weights file" if len(problems) == 1 else f"{len(problems)} weights files"
        fail(f"{files} missing, the run cannot start:\n{listed}\n{OFFLINE_HINT}", code=1)


def load_models(settings: Any, device: Any) -> Any:
    """A `ModelCache` holding the run's models (its CLIP models, and the VQGAN of a style that
    decodes with one)."""
    from engine import load_models as load
    from engine.errors import EngineError, one_line

    try:
        return load(settings, device)
    except (EngineError, ValueError, OSError) as exc:
        fail(one_line(exc, typed=False), code=1)


def prepare(settings: Any) -> tuple[Any, Any]:
    """The device, and the run's models loaded (every missing file fetched first, at once)."""
    from engine import SettingsError, usable_device

    try:
        device = usable_device(settings.device)  # a GPU this machine lacks: one line, exit 2
    except SettingsError as exc:
        fail(str(exc))
    if device.type == "cpu":
        click.echo(
            "note: no CUDA GPU found, running on the CPU (slow for full-size models)", err=True
        )
    fetch_weights(settings)  # every missing file at once, before the bar
    return device, load_models(settings, device)


def frame_writer(directory: Path | None) -> Any:
    """`on_frame` that writes DIRECTORY/frame-0001.png, ... (None without a directory)."""
    if directory is None:
        return None
    from engine import atomic_write

    def write(index: int, picture: Any) -> None:
        path = directory / f"frame-{index + 1:04d}.png"
        atomic_write(path, lambda part: picture.save(part, format="PNG"))

    return write


def step_writer(out_path: Path, every: int) -> Any:
    """`on_save` that writes the picture every `every` iterations as OUT/step-0010.png, ... in
    a folder beside the output named after it (None when `every` is 0)."""
    if not every:
        return None
    from engine import atomic_write

    directory = out_path.parent / out_path.stem

    def write(iteration: int, picture: Any) -> None:
        path = directory / f"step-{iteration:04d}.png"
        atomic_write(path, lambda part: picture.save(part, format="PNG"))

    return write


def progress(bar: Any, device: Any) -> Any:
    """`on_step` for the bar: the loss twice a second at most, an estimate on the CPU."""
    stamps: list[float] = []
    shown = [0.0]

    def on_step(step: Any) -> None:
        now = time.perf_counter()
        if now - shown[0] >= LOSS_SHOW_SECONDS or step.iteration == step.total:
            shown[0] = now  # reading the loss waits for the GPU: twice a second at most
            bar.set_postfix(loss=f"{step.loss:.3f}", refresh=False)
        bar.update(1)
        stamps.append(time.perf_counter())
        # The first iterations pay for warm-up: estimate from this process's 2nd to 5th.
        if device.type == "cpu" and len(stamps) == 5 and step.iteration < step.total:
            left = (stamps[4] - stamps[1]) / 3 * (step.total - step.iteration)
            bar.write(f"estimated time left on CPU: about {left:.0f} s", file=sys.stderr)

    return on_step
