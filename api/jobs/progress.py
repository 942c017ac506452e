"""A running job's progress, previews and `save_every` pictures, written off the engine's thread.

The engine calls `Progress` (its `on_step`, and `frame_done` as its `on_frame`) on its own
thread between two iterations. Reading the loss and rendering a preview must happen there (they
read the device); the database write and the preview's upload do not: they go to a writer thread
of their own, coalesced (a write that finds several updates waiting sends only the newest values
and the newest preview), so neither the database's round trip nor a slow bucket ever slows the
loop. A write that finds the job deleted or taken over aborts the run (`RunStop.abort`). A write
that fails for an outage is skipped (the next one catches up); the final state is written by the
worker, not here.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol

from PIL import Image

from api.config import ServiceConfig
from api.jobs.outage import Outages
from api.jobs.store import JobStore
from api.runner import RunStop
from api.storage import ArtifactStore
from engine import Step


class Runner(Protocol):
    """What `Progress` reads of its job's runner (`api.jobs.worker.JobRunner`)."""

    config: ServiceConfig
    store: JobStore
    artifacts: ArtifactStore
    outages: Outages
    identity: Any  # str() is the worker id

    def note_resumed(self, job_id: str, iteration: int) -> None: ...


log = logging.getLogger(__name__)
FLUSH_SECONDS = 2.0  # at the end of a run, how long the last write may take before it is left


class Progress:
    """`on_step` / `on_frame` of one job's run; a context manager that runs the writer."""

    def __init__(self, runner: Runner, job_id: str, cancel: RunStop):
        self.runner, self.job_id, self.cancel = runner, job_id, cancel
        self._last = 0.0
        self._first = True
        self._new_frame = False
        self._values: dict[str, Any] = {}  # waiting for the writer (the newest wins)
        self._preview: Image.Image | None = None
        self._steps: list[tuple[int, Image.Image]] = []  # save_every's pictures, every one
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._write_loop, name=f"t2a-progress-{job_id[:8]}")
        self._thread.daemon = True

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._wake.set()
        self._thread.join(FLUSH_SECONDS)  # a hung write is left to finish on its own

    # -- on the engine's thread ------------------------------------------------------------
    def frame_done(self, index: int, picture: Image.Image) -> None:
        """`on_frame`: an animation's frame is finished; it becomes the preview."""
        self._new_frame = True
        self._offer({}, picture)

    def step_done(self, iteration: int, picture: Image.Image) -> None:
        """`on_save`: an intermediate picture (`save_every`), kept by the writer."""
        with self._lock:
            self._steps.append((iteration, picture))
        self._wake.set()

    def __call__(self, step: Step) -> None:
        config = self.runner.config
        values: dict[str, Any] = {}
        preview = None
        if self._first:  # the run really started: where from (a resume is counted once here)
            self._first = False
            values["resumed_from"] = step.iteration - 1
            self.runner.note_resumed(self.job_id, step.iteration - 1)
        if self._new_frame:
            self._new_frame = False
            values["preview_iteration"] = step.iteration
        elif (
            not step.frames
            and step.iteration % config.preview_every == 0 < step.total - step.iteration
        ):
            preview = step.image()
            values["preview_iteration"] = step.iteration
        now = time.monotonic()
        if not values and now - self._last < config.progress_interval:
            return
        self._last = now
        values.update(iteration=step.iteration, total=step.total, loss=step.loss)
        values["run_seconds"] = step.elapsed
        self._offer(values, preview)

    def _offer(self, values: dict[str, Any], preview: Image.Image | None) -> None:
        with self._lock:
            self._values.update(values)
            if preview is not None:
                self._preview = preview
        self._wake.set()

    # -- on the writer's thread ------------------------------------------------------------
    def _write_loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                values, self._values = self._values, {}
                preview, self._preview = self._preview, None
                steps, self._steps = self._steps, []
            for iteration, picture in steps:
                self._save_step(iteration, picture)
            if preview is not None:
                self._save_preview(preview)
            if values:
                self._write(values)
            if self._done.is_set():
                with self._lock:
                    if not self._values and self._preview is None and not self._steps:
                        return

    def _save_preview(self, picture: Image.Image) -> None:
        try:
            self.runner.artifacts.save_preview(self.job_id, picture)
        except Exception:  # a preview is a nicety: the run goes on without it
            log.warning("job %s: cannot save a preview", self.job_id, exc_info=True)

    def _save_step(self, iteration: int, picture: Image.Image) -> None:
        try:
            self.runner.artifacts.save_step(self.job_id, iteration, picture)
        except Exception:  # the run goes on; the job lists the pictures that were stored
            log.warning("job %s: cannot save its picture of iteration %d", self.job_id, iteration,
                        exc_info=True)  # fmt: skip

    def _write(self, values: dict[str, Any]) -> None:
        store, me = self.runner.store, str(self.runner.identity)
        try:
            owned = store.progress(self.job_id, me, **values)
        except Exception as exc:
            if self.runner.outages.note(exc) is None:
                log.exception("job %s: cannot record its progress", self.job_id)
            return  # skipped: the next write catches up
        if not owned:
            self.cancel.abort()  # deleted, or no longer ours: stop working for nobody
