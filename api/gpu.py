"""The process-wide GPU lock: one run at a time, a bounded number of waiters, cancellable waits.

One `GpuLock` lives on `app.state.gpu`; every GPU job of the process (the synchronous
`POST /generate`, the jobs worker, the start-up warm-up) runs inside `with gpu.slot(cancel):`.

    with gpu.slot(cancel_event):            # waits; raises GpuBusy or engine.Cancelled
        result = engine.generate(...)

`bounded=False` (the jobs worker, which has its own queue) waits without counting against
`max_waiting`.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from engine import Cancelled


class GpuBusy(Exception):
    """Too many requests already wait for the GPU (the API answers 503 with Retry-After)."""

    def __init__(self, waiting: int, max_waiting: int):
        super().__init__(f"the GPU is busy and {waiting} requests are waiting (max {max_waiting})")
        self.waiting = waiting
        self.max_waiting = max_waiting


class GpuLock:
    """Serialises GPU work in one process and bounds how many callers may queue for it."""

    def __init__(self, max_waiting: int = 8, poll_seconds: float = 0.05):
        self.max_waiting = max_waiting
        self._poll = poll_seconds  # how often a waiter looks at its cancel event
        self._cond = threading.Condition()
        self._busy = False
        self._queue: deque[object] = deque()  # one ticket per waiter: first come, first served

    @property
    def busy(self) -> bool:
        """Whether a run holds the GPU now."""
        return self._busy

    @property
    def waiting(self) -> int:
        """How many callers wait for the GPU now."""
        return len(self._queue)

    def position(self, waiter: object) -> int | None:
        """Runs ahead of `waiter` (the cancel event it waits with): the one holding the GPU and
        those waiting before it (0: next); None when it does not wait."""
        with self._cond:
            for index, ticket in enumerate(self._queue):
                if ticket is waiter:
                    return index + (1 if self._busy else 0)
        return None

    def full(self) -> bool:
        """Whether one more bounded caller would be refused."""
        with self._cond:
            return self._refuses()

    def _refuses(self) -> bool:
        return (self._busy or bool(self._queue)) and len(self._queue) >= self.max_waiting

    @contextmanager
    def slot(
        self, cancel: threading.Event | None = None, *, bounded: bool = True
    ) -> Iterator[None]:
        """Hold the GPU for the block; raises `GpuBusy` when full, `Cancelled` on `cancel`."""
        self._acquire(cancel, bounded)
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def _acquire(self, cancel: threading.Event | None, bounded: bool) -> None:
        with self._cond:
            if bounded and self._refuses():
                raise GpuBusy(len(self._queue), self.max_waiting)
            ticket = cancel if cancel is not None else object()  # `position` finds it by it
            self._queue.append(ticket)
            try:
                while self._busy or self._queue[0] is not ticket:
                    _check(cancel)
                    self._cond.wait(self._poll)
                _check(cancel)
                self._busy = True
            finally:
                self._queue.remove(ticket)  # by identity: events compare as objects
                self._cond.notify_all()  # the next ticket may now be first in line


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("cancelled while waiting for the GPU")
