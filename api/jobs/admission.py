"""Admission of a new job: the queue's length and each client's rate limit."""

from __future__ import annotations

import math
import time

from api.config import JobsConfig
from api.jobs.errors import QueueFull, RateLimited
from api.jobs.store import QUEUED, JobStore


def admit(store: JobStore, config: JobsConfig, client_id: str) -> None:
    """Raise `QueueFull` or `RateLimited` when one more submission must be refused."""
    queued = store.count(QUEUED)
    if queued >= config.max_queued:
        raise QueueFull(queued, config.queue_retry_after)
    if not config.rate_limit:
        return
    now = time.time()
    times = store.submissions_since(client_id, now - config.rate_limit_window)
    if len(times) >= config.rate_limit:
        # Once this one leaves the window, the client is under the limit again.
        oldest = times[len(times) - config.rate_limit]
        retry = max(1, math.ceil(oldest + config.rate_limit_window - now))
        raise RateLimited(config.rate_limit, config.rate_limit_window, retry)
