"""Why a job submission is refused; `api.routes.jobs` answers each with its status and
Retry-After."""

from __future__ import annotations


class QueueFull(Exception):
    """Too many jobs are queued (503 with Retry-After)."""

    def __init__(self, queued: int, retry_after: int):
        super().__init__(f"the queue is full ({queued} jobs wait); retry in {retry_after} s")
        self.retry_after = retry_after


class QueueUnavailable(Exception):
    """The queue (Redis, PostgreSQL) cannot be reached: nothing was recorded (503)."""

    retry_after = 10


class RateLimited(Exception):
    """The client submitted too many jobs lately (429 with Retry-After)."""

    def __init__(self, limit: int, window: int, retry_after: int):
        super().__init__(
            f"at most {limit} jobs per {window} s may be submitted; retry in {retry_after} s"
        )
        self.retry_after = retry_after


class TooManyListeners(Exception):
    """The client holds too many open event streams (429)."""

    retry_after = 5

    def __init__(self, limit: int):
        super().__init__(f"at most {limit} event streams may be open per client; close one first")
