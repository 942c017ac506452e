"""`text2art worker`: a standalone job worker (one per GPU) for the queue `text2art serve` fills.

With `--health-port N` (T2A_HEALTH_PORT) it also serves `/healthz` (alive), `/readyz` (the job
database, the queue and its device answer) and `/metrics` (Prometheus) for orchestrators.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import TYPE_CHECKING, Annotated, Any

import typer

from api.cli_common import fail, load_config

if TYPE_CHECKING:  # imported when run: `text2art --help` stays fast
    from api.health_server import HealthServer
    from api.services import Services


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
    health_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="Serve /healthz, /readyz and /metrics on this port (default: T2A_HEALTH_PORT; "
            "none: off).",
        ),
    ] = None,
) -> None:
    """Run queued jobs until SIGINT/SIGTERM (reads the same T2A_* settings as `serve`)."""
    from api.services import build_services

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its plugin list is noise here
    overrides: dict[str, Any] = {"run_worker_in_process": True}
    if device is not None:
        overrides["device"] = device
    if threads is not None:
        overrides["worker_threads"] = threads
    if health_port is not None:
        overrides["health_port"] = health_port
    try:
        services = build_services(load_config(**overrides), "worker")  # no I/O yet
    except (ValueError, RuntimeError) as exc:  # e.g. a T2A_STORAGE_URL it cannot read
        fail(f"the worker cannot start: {exc}", 1)
    check_or_exit(services)
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        run_worker(services, stop)
    except Exception as exc:  # StorageMismatch, SchemaOutdated, StorageError: one line
        if type(exc).__name__ not in REFUSALS:
            raise
        fail(f"the worker cannot start: {exc}", 1)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def check_or_exit(services: Services) -> None:
    """Exit 1 with one line naming each part the worker cannot reach (queue, database,
    bucket, device), instead of a traceback later."""
    from api.jobs.preflight import preflight

    problems = preflight(services.jobs, device_error)
    if problems:
        fail(f"the worker cannot start: {'; '.join(p.line for p in problems)}", 1)


def taking_jobs(identity: str, queue_name: str) -> str:
    """The line a worker prints once it takes jobs (the README quotes it)."""
    return f"worker {identity} is taking jobs from {queue_name!r}"


def run_worker(services: Services, stop: threading.Event) -> None:
    """Take jobs until `stop` is set, then hand the running ones back to the queue."""
    services.start(run_worker=True)
    jobs = services.jobs
    typer.echo(taking_jobs(str(jobs.runner.identity), jobs.config.queue_name))
    health = start_health_server(services)
    try:
        while not stop.wait(1.0):  # a timeout keeps the main thread responsive to signals
            pass
    finally:
        typer.echo("stopping: running jobs go back to the queue")
        services.stop()  # /readyz says "stopping" meanwhile; /metrics counts the hand-backs
        if health is not None:
            health.final_scrape(services.config.final_scrape_seconds)
            health.stop()


def start_health_server(services: Services) -> HealthServer | None:
    """The worker's /healthz, /readyz and /metrics, when a health port is configured."""
    from api.health_server import HealthServer

    config, jobs = services.config, services.jobs
    if config.health_port is None:
        return None

    def ready() -> tuple[bool, dict[str, Any]]:
        if jobs.runner.stopping:  # its jobs go back to the queue: send it nothing
            return False, {"ready": False, "role": "worker", "state": "stopping"}
        health = jobs.probe.check()
        device = device_error(config.device)
        body: dict[str, Any] = {"role": "worker", "worker": str(jobs.runner.identity)}
        body.update(health.report(), device={"ok": device is None, "name": config.device})
        if device is not None:
            body["device"]["error"] = device
        body["running"] = jobs.runner.running()
        stalled = jobs.runner.stalled()  # a paused run: it claims nothing either
        body["jobs"] = {"ok": True} if stalled is None else {"ok": False, "error": stalled}
        ready = health.ok and device is None and stalled is None
        return ready, {"ready": ready, **body}

    server = HealthServer(config.health_host, config.health_port, ready, jobs.metrics)
    server.start()
    typer.echo(f"health: http://{config.health_host}:{server.port}/readyz (and /healthz, /metrics)")
    return server


def device_error(name: str | None) -> str | None:
    """Why the worker's torch device cannot be used, or None when it can."""
    import torch

    from engine import pick_device

    try:
        device = pick_device(name)
    except RuntimeError as exc:
        return str(exc)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "CUDA is not available"
        index = device.index or 0
        if index >= torch.cuda.device_count():
            return f"no CUDA device {index} ({torch.cuda.device_count()} present)"
    return None


def register(app: typer.Typer) -> None:
    """Add the `worker` command to the `text2art` typer app."""
    app.command("worker")(worker)
