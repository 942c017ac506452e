"""The one place the service runs the engine: under the process's GPU lock, errors classified.

`POST /generate`, the jobs worker and the start-up warm-up all call `run_engine`. What it raises:

- `engine.errors.Cancelled` (the cancel event was set, while waiting or running; it carries the
  run's state), `engine.errors.SettingsError` (bad input, a 422) and `engine.errors.StateError`
  (a saved state that does not fit the run: the worker starts afresh) pass through unchanged;
- everything else becomes `RunFailed` with a code: `out_of_memory` (GPU memory is freed so the
  next run has room), `weights_missing` (a 503: the server's state, its message says the fix),
  `checkpoint_invalid`, `storage_error` (a
  `StorageError` from a step's callback, with its message), else `engine_error`.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from PIL import Image

from api.errors import RunFailed, StorageError
from api.gpu import GpuLock
from engine import Checkpoint, Limits, ModelCache, Result, RunState, Settings, Step, generate
from engine.errors import (
    Cancelled,
    CheckpointError,
    SettingsError,
    StateError,
    WeightsError,
    one_line,
)

log = logging.getLogger(__name__)

EngineFn = Callable[..., Result]

# What the operator of a server without its weights does (the `weights_missing` message).
WEIGHTS_FIX = (
    "On the server: `text2art models download NAME` for each model (offline, on another machine, "
    "then copy the cache), or serve the bundled offline models: `text2art serve --clip-model "
    "shapes`"
)  # `engine.generate`'s signature; tests pass a fake


class Flag(Protocol):
    """Anything read like a `threading.Event` (`api.jobs.watch.Lease` also pauses the run)."""

    def is_set(self) -> bool: ...


class RunStop(threading.Event):
    """How one run is stopped. `set()`: at the next iteration, where its state can be saved (a
    shutdown hands the job back); `abort()`: at once, within one block of a model, without a
    state (a person's cancel, a deleted job, a client gone: nobody resumes those)."""

    def __init__(self) -> None:
        super().__init__()
        self.aborted = threading.Event()

    def abort(self) -> None:
        self.aborted.set()
        self.set()


def run_engine(
    settings: Settings,
    *,
    gpu: GpuLock,
    models: ModelCache,
    limits: Limits,
    cancel: threading.Event | None = None,
    abort: Flag | None = None,
    bounded: bool = True,
    on_step: Callable[[Step], None] | None = None,
    video_path: Path | None = None,
    resume: RunState | None = None,
    checkpoint: Checkpoint | None = None,
    on_frame: Callable[[int, Image.Image], None] | None = None,
    on_save: Callable[[int, Image.Image], Any] | None = None,
    engine: EngineFn | None = None,
) -> Result:
    """Run `engine` (default `engine.generate`) in `gpu.slot(cancel, bounded=...)`; blocking.

    Raises `GpuBusy` when a bounded caller finds the queue full, `Cancelled`, `SettingsError`,
    `StateError`, or `RunFailed` for any other failure of the run. `abort` (a prompt cancel:
    `generate`'s `should_abort`), `resume`, `checkpoint`, `on_frame` and `on_save` go to the
    engine only when given (a caller's engine need not know them).
    """
    cancel = cancel or threading.Event()
    run = engine or generate  # looked up per call, so a test may replace `generate`
    extra: dict[str, Any] = {"resume": resume} if resume is not None else {}
    if checkpoint is not None:
        extra["checkpoint"] = checkpoint
    if on_frame is not None:
        extra["on_frame"] = on_frame
    if abort is not None:
        extra["should_abort"] = abort.is_set
    if on_save is not None:
        extra["on_save"] = on_save
    with gpu.slot(cancel, bounded=bounded):
        try:
            return run(
                settings,
                on_step=on_step,
                should_stop=cancel.is_set,
                models=models,
                limits=limits,
                video_path=video_path,
                **extra,
            )
        except (Cancelled, SettingsError, StateError):
            raise
        except WeightsError as exc:  # the server's state, not a bug: one line, no traceback
            failed = classify(exc)
            log.warning("generation failed: %s", failed.detail)
            raise failed from exc
        except Exception as exc:
            log.exception("generation failed")
            raise classify(exc) from exc


def classify(exc: BaseException) -> RunFailed:
    """The `RunFailed` that tells a client why a run failed; frees GPU memory after an OOM."""
    if isinstance(exc, RunFailed):  # already classified
        return exc
    if isinstance(exc, StorageError):  # e.g. from on_save: the store's line says it all
        return (
            RunFailed("unavailable", exc.detail, 503)
            if exc.unavailable
            else RunFailed(exc.code, exc.detail)
        )
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        free_gpu_memory()
        return RunFailed(
            "out_of_memory",
            "the GPU ran out of memory; try a smaller size, a lower quality or fewer cutouts",
        )
    why = one_line(exc, typed=False)
    if isinstance(exc, WeightsError):  # the server's state: 503, with the fix
        detail = f"model weights are not available: {why.rstrip('.')}. {WEIGHTS_FIX}"
        return RunFailed("weights_missing", detail, status_code=503)
    if isinstance(exc, CheckpointError):
        return RunFailed("checkpoint_invalid", f"a model file cannot be used: {why}")
    return RunFailed("engine_error", f"generation failed: {why}")


def free_gpu_memory() -> None:
    """Drop what the failed run left on the GPU so the next one has room."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def failure_message(exc: BaseException) -> str:
    """One line for a person: why a run (or what followed it) failed."""
    if isinstance(exc, SettingsError):
        return f"{exc.field}: {exc.message}"
    if isinstance(exc, (RunFailed, StorageError)):
        return exc.detail
    return classify(exc).detail
