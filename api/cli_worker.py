"""`text2art worker`: a standalone job worker (one per GPU) for the queue `text2art serve` fills."""

from __future__ import annotations

import logging
import signal
import threading
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:  # imported when run: `text2art --help` stays fast
    from api.jobs.config import ServiceConfig
    from engine import ModelCache


# Start-up refusals that are the operator's to fix: said in one line, no traceback.
REFUSALS = {"StorageMismatch", "SchemaOutdated", "StorageError"}


def worker(
    device: Annotated[
        str | None, typer.Option(help="torch device, e.g. cuda:1 (default: T2A_DEVICE or auto).")
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(min=1, help="Jobs taken at once (default: T2A_WORKER_THREADS)."),
    ] = None,
) -> None:
    """Run queued jobs until SIGINT/SIGTERM (reads the same T2A_* settings as `serve`)."""
    from api.jobs.config import ServiceConfig

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    overrides: dict[str, Any] = {"run_worker_in_process": True}
    if device is not None:
        overrides["device"] = device
    if threads is not None:
        overrides["worker_threads"] = threads
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        run_worker(ServiceConfig(**overrides), stop)
    except Exception as exc:  # StorageMismatch, SchemaOutdated, StorageError: one line
        if type(exc).__name__ not in REFUSALS:
            raise
        typer.echo(f"error: the worker cannot start: {exc}", err=True)
        raise SystemExit(1) from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_worker(
    config: ServiceConfig, stop: threading.Event, models: ModelCache | None = None
) -> None:
    """Take jobs until `stop` is set, then hand the running ones back to the queue."""
    from api.jobs.service import JobService

    service = JobService(config, models=models)  # its own GPU lock: one process, one device
    service.start(run_worker=True)
    typer.echo(f"worker {service.runner.identity} is taking jobs from {config.queue_name!r}")
    try:
        while not stop.wait(1.0):  # a timeout keeps the main thread responsive to signals
            pass
    finally:
        typer.echo("stopping: running jobs go back to the queue")
        service.stop()


def register(app: typer.Typer) -> None:
    """Add the `worker` command to the `text2art` typer app."""
    app.command("worker")(worker)
