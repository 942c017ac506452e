"""A running job's state, kept in the artifact store so that any worker can continue the job.

`Checkpoints` is the engine's `Checkpoint` for one run: every `checkpoint_seconds` the loop hands
it the run's state, which it encodes at once (a consistent snapshot, on the loop's thread) and
uploads from a thread of its own, so a slow store never slows the loop. Only the newest state
waits to be uploaded: one that a newer one overtakes is dropped. Leaving the `with` block waits
for the upload under way, so the worker's own last word (the state saved at a shutdown, or its
removal when the job ends) always comes after it.
"""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType

from api.storage import ArtifactStore
from engine import RunState, encode_state
from engine.errors import one_line

log = logging.getLogger(__name__)


def save_state(artifacts: ArtifactStore, job_id: str, state: RunState) -> bool:
    """Keep the job's run state in the store; False (logged) when that failed."""
    return _upload(artifacts, job_id, encode_state(state), state.iteration, state.total)


def _upload(artifacts: ArtifactStore, job_id: str, data: bytes, iteration: int, total: int) -> bool:
    started = time.monotonic()
    try:
        artifacts.save_state(job_id, data)
    except Exception as exc:  # the run goes on; the previous state (if any) stays
        log.warning("job %s: cannot save its run state: %s", job_id, one_line(exc))
        return False
    log.info("job %s: saved its state at iteration %d of %d (%.1f MiB) in %.2f s", job_id,
             iteration, total, len(data) / 2**20, time.monotonic() - started)  # fmt: skip
    return True


class Checkpoints:
    """`engine.Checkpoint` of one run: its state every `every` seconds, uploaded in the
    background (newest first, older ones dropped)."""

    def __init__(self, artifacts: ArtifactStore, job_id: str, every: float):
        self.artifacts, self.job_id, self.every = artifacts, job_id, every
        self._last = time.monotonic()
        self._lock = threading.Lock()
        self._pending: tuple[bytes, int, int] | None = None
        self._thread: threading.Thread | None = None
        self.uploaded = 0  # states stored (tests and logs)

    def due(self, iteration: int) -> bool:
        return time.monotonic() - self._last >= self.every

    def save(self, state: RunState) -> None:
        item = (encode_state(state), state.iteration, state.total)
        with self._lock:
            self._pending = item  # a state not yet uploaded is overtaken
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._upload_loop, name=f"t2a-state-{self.job_id[:8]}", daemon=True
                )
                self._thread.start()
        self._last = time.monotonic()

    def _upload_loop(self) -> None:
        while True:
            with self._lock:
                item, self._pending = self._pending, None
                if item is None:
                    self._thread = None
                    return
            if _upload(self.artifacts, self.job_id, *item):
                self.uploaded += 1

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Wait until the newest state is stored (or its upload failed)."""
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join()
