#!/usr/bin/env python
"""Run the text2art service from a notebook (Colab) or a shell, shared through an ngrok tunnel;
or, with `--worker`, join a hosted site as one of its GPU workers.

    NGROK_AUTHTOKEN=... python scripts/run_colab.py [--port 8000]
    %run scripts/run_colab.py --authtoken TOKEN        # in a notebook cell
    %run scripts/run_colab.py --worker                 # a worker of the site T2A_* points at

A worker needs T2A_QUEUE_URL, T2A_DATABASE_URL and T2A_STORAGE_URL (the site's queue, job
database and bucket; all connections go out, nothing listens). It runs `text2art worker` on
cuda:0 (T2A_DEVICE overrides) until stopped, handing its running job back when it is.

Prints `Public URL:` and `Doc URL:`, then serves until interrupted (Ctrl-C, or the notebook's
stop button), and closes the tunnel on the way out. Inside a notebook the event loop is already
running: nest_asyncio lets uvicorn run on it. The service reads the same `T2A_*` variables as
`text2art serve` (e.g. T2A_MAX_WAITING, T2A_API_KEYS).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    import api  # noqa: F401  (installed with `pip install -e .`)
except ImportError:  # run from a checkout without installing: use the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import click

from api.config import ServiceConfig
from api.serve import NgrokTunnel, TunnelFactory, serve


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options; the defaults come from the T2A_* environment."""
    parser = argparse.ArgumentParser(description="Serve text2art through an ngrok tunnel.")
    parser.add_argument(
        "--authtoken", default=None, help="ngrok auth token (default: $NGROK_AUTHTOKEN)"
    )
    parser.add_argument("--host", default=None, help="local address (default: $T2A_HOST)")
    parser.add_argument("--port", type=int, default=None, help="local port (default: $T2A_PORT)")
    parser.add_argument(
        "--worker",
        action="store_true",
        help="join the site in T2A_QUEUE_URL/T2A_DATABASE_URL/T2A_STORAGE_URL as a GPU worker",
    )
    # In a notebook, `%run` passes Jupyter's own arguments through sys.argv: ignore unknown ones.
    args, _ = parser.parse_known_args(argv)
    return args


def main(
    argv: list[str] | None = None,
    *,
    tunnel_factory: TunnelFactory = NgrokTunnel,
    config: ServiceConfig | None = None,
    on_server: Callable[[Any], None] | None = None,
) -> int:
    """Open the tunnel, print its URLs, serve; returns the exit code (2 without a token).

    With `--worker`: run a worker of the configured site instead (see `run_worker`)."""
    args = parse_args(argv)
    if args.worker:
        return run_worker()
    try:
        serve(
            args.host,
            args.port,
            share=True,
            config=config,
            authtoken=args.authtoken,
            tunnel_factory=tunnel_factory,
            on_server=on_server,
        )
    except click.UsageError as exc:
        print(f"error: {exc.format_message()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the notebook's stop button: the tunnel is already closed
        print("Stopped.")
    return 0


WORKER_NEEDS = {
    "T2A_QUEUE_URL": "the site's queue (rediss://... or postgresql://...?sslmode=require)",
    "T2A_DATABASE_URL": "the site's job database (postgresql+psycopg://...?sslmode=require)",
    "T2A_STORAGE_URL": "the site's bucket (s3://bucket/prefix)",
}


def run_worker() -> int:
    """Check the site's settings, then take its jobs until stopped; the exit code.

    2 when a setting is missing, 1 when a part cannot be reached (one line saying which),
    0 after a clean stop (the notebook's stop button or SIGTERM: the running job goes back).
    """
    import os

    from api.cli_worker import worker

    missing = [name for name in WORKER_NEEDS if not os.environ.get(name, "").strip()]
    if missing:
        what = "; ".join(f"{name}, {WORKER_NEEDS[name]}" for name in missing)
        print(f"error: a worker needs {what}: store them in Colab's Secrets", file=sys.stderr)
        return 2
    os.environ.setdefault("T2A_DEVICE", "cuda:0")
    try:
        worker()
    except SystemExit as exc:  # the worker's own refusals (one line already printed)
        return exc.code if isinstance(exc.code, int) else 1
    except KeyboardInterrupt:
        print("Stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
