"""Prometheus metrics of one text2art process: an API node or a jobs worker.

Each `Metrics` owns its own `CollectorRegistry` (never the global default one), so several
services can live in one process, as they do in the tests. Events are counted as they happen
(`submitted()`, `started()`, `finished()`, ...); levels that live elsewhere (jobs queued in the
database, live workers, GPU memory) are read through `Probes` at scrape time, so a scrape always
shows the current value and nothing polls in the background. A probe that raises (the database
is down) leaves its gauge out of that scrape and counts in `text2art_probe_errors_total`; the
scrape itself still succeeds.

    metrics = Metrics("worker", Probes(queue_depth=store.count_queued))
    metrics.started(wait_seconds=3.2)
    metrics.finished("succeeded", run_seconds=41.0)
    body, content_type = metrics.render()
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

ROLES = ("api", "worker")
FINISHED = ("succeeded", "failed", "cancelled")
JOB_STATUSES = ("submitted", *FINISHED)
REQUEUE_REASONS = ("dead_worker", "shutdown", "outage", "reconcile")
INFRA_SERVICES = ("database", "queue", "storage")

# A run takes seconds (draft pixel art) to half an hour (a long video); the wait is the same
# scale plus sub-second pickups when a worker is idle.
RUN_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1800.0)
WAIT_BUCKETS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

# Probe field -> (gauge name, help text).
_GAUGES = {
    "queue_depth": ("text2art_queue_depth", "Jobs queued in the database, waiting for a worker."),
    "running": ("text2art_jobs_running", "Jobs running now."),
    "live_workers": ("text2art_workers_live", "Workers whose heartbeat is fresh."),
    "gpu_memory_bytes": ("text2art_gpu_memory_bytes", "GPU memory allocated by this process."),
}


@dataclass(frozen=True)
class Probes:
    """Zero-argument callables read at each scrape; None (or a probe returning None) omits it."""

    queue_depth: Callable[[], int] | None = None
    running: Callable[[], int] | None = None
    live_workers: Callable[[], int] | None = None
    gpu_memory_bytes: Callable[[], float | None] | None = None


def _check(value: str, allowed: tuple[str, ...], what: str) -> str:
    """`value` when it is one of `allowed`, else ValueError naming the choices."""
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of: {', '.join(allowed)}")
    return value


class _ProbeCollector(Collector):
    """Reads the probes at scrape time; a raising probe is counted and left out."""

    def __init__(self, probes: Probes):
        self._probes = probes
        self._lock = threading.Lock()  # scrapes may run in parallel (threaded HTTP servers)
        self._errors = {f.name: 0 for f in fields(Probes)}

    def describe(self) -> Iterator[Metric]:
        """The families this collector owns, so the registry can refuse a clashing name."""
        for name, help_text in _GAUGES.values():
            yield GaugeMetricFamily(name, help_text)
        yield CounterMetricFamily("text2art_probe_errors", "Scrape-time probes that raised.")

    def collect(self) -> Iterator[Metric]:
        """One gauge per probe that answered, then the probe error counts."""
        for probe, (name, help_text) in _GAUGES.items():
            value = self._read(probe)
            if value is not None:
                yield GaugeMetricFamily(name, help_text, value=value)
        errors = CounterMetricFamily(
            "text2art_probe_errors", "Scrape-time probes that raised.", labels=["probe"]
        )
        with self._lock:
            for probe, count in self._errors.items():
                errors.add_metric([probe], count)
        yield errors

    def _read(self, probe: str) -> float | None:
        """The probe's value, or None when it is not set, has no value or raised."""
        read: Callable[[], float | None] | None = getattr(self._probes, probe)
        if read is None:
            return None
        try:
            value = read()
            return None if value is None else float(value)
        except Exception as exc:
            log.debug("metrics probe %s failed: %s: %s", probe, type(exc).__name__, exc)
            with self._lock:
                self._errors[probe] += 1
            return None


class Metrics:
    """The metrics of one process (role "api" or "worker") on a registry of its own."""

    def __init__(self, role: str, probes: Probes | None = None):
        self.role = _check(role, ROLES, "role")
        self.registry = CollectorRegistry()
        reg = self.registry
        info = Info("text2art_process", "The role of this process.", registry=reg)
        info.info({"role": role})
        self._jobs = Counter("text2art_jobs", "Jobs by outcome.", ["status"], registry=reg)
        self._requeued = Counter(
            "text2art_jobs_requeued", "Jobs put back on the queue.", ["reason"], registry=reg
        )
        self._infra = Counter(
            "text2art_infra_errors", "Failed calls to a service.", ["service"], registry=reg
        )
        self._resumed = Counter(
            "text2art_jobs_resumed", "Jobs continued from a saved run state.", registry=reg
        )
        self._saved = Counter(
            "text2art_resume_iterations_saved",
            "Iterations that resumed jobs did not run again.",
            registry=reg,
        )
        self._run = Histogram(
            "text2art_job_run_seconds", "Run time of a job.", buckets=RUN_BUCKETS, registry=reg
        )
        self._wait = Histogram(
            "text2art_job_wait_seconds",
            "Time from submission to a worker taking the job.",
            buckets=WAIT_BUCKETS,
            registry=reg,
        )
        for counter, values in (
            (self._jobs, JOB_STATUSES),
            (self._requeued, REQUEUE_REASONS),
            (self._infra, INFRA_SERVICES),
        ):
            for value in values:
                counter.labels(value)  # every known series exists at 0, so rate() sees the first
        reg.register(_ProbeCollector(probes or Probes()))

    def submitted(self) -> None:
        """A job was accepted and queued."""
        self._jobs.labels("submitted").inc()

    def started(self, wait_seconds: float) -> None:
        """A worker took a job `wait_seconds` after its submission (clock skew clamps to 0)."""
        self._wait.observe(max(0.0, wait_seconds))

    def finished(self, status: str, run_seconds: float | None = None) -> None:
        """A job ended as succeeded, failed or cancelled, after running `run_seconds` if known."""
        self._jobs.labels(_check(status, FINISHED, "status")).inc()
        if run_seconds is not None:
            self._run.observe(max(0.0, run_seconds))

    def requeued(self, reason: str) -> None:
        """A job went back on the queue: "dead_worker", "shutdown" or "reconcile"."""
        self._requeued.labels(_check(reason, REQUEUE_REASONS, "reason")).inc()

    def resumed(self, iteration: int) -> None:
        """A job continued from its saved state at `iteration` (that many were not re-run)."""
        self._resumed.inc()
        self._saved.inc(iteration)

    def infra_error(self, service: str) -> None:
        """A call to the "database", the "queue" or the "storage" failed."""
        self._infra.labels(_check(service, INFRA_SERVICES, "service")).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition body of a scrape and its Content-Type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def gpu_memory_in_use() -> float | None:
    """Bytes allocated by torch on the current CUDA device; None without an initialised GPU.

    Never imports torch itself: a process that has not loaded it has no GPU memory to report.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
            return None
        return float(torch.cuda.memory_allocated())
    except Exception:  # a half-imported torch or a lost device: nothing to report
        return None
