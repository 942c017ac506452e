#!/usr/bin/env python
"""Run the text2art service from a notebook (Colab) or a shell, shared through an ngrok tunnel.

    NGROK_AUTHTOKEN=... python scripts/run_colab.py [--port 8000]
    %run scripts/run_colab.py --authtoken TOKEN        # in a notebook cell

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

from api.config import ApiConfig
from api.serve import NgrokTunnel, TunnelFactory, serve


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options; the defaults come from the T2A_* environment."""
    parser = argparse.ArgumentParser(description="Serve text2art through an ngrok tunnel.")
    parser.add_argument(
        "--authtoken", default=None, help="ngrok auth token (default: $NGROK_AUTHTOKEN)"
    )
    parser.add_argument("--host", default=None, help="local address (default: $T2A_HOST)")
    parser.add_argument("--port", type=int, default=None, help="local port (default: $T2A_PORT)")
    # In a notebook, `%run` passes Jupyter's own arguments through sys.argv: ignore unknown ones.
    args, _ = parser.parse_known_args(argv)
    return args


def main(
    argv: list[str] | None = None,
    *,
    tunnel_factory: TunnelFactory = NgrokTunnel,
    config: ApiConfig | None = None,
    on_server: Callable[[Any], None] | None = None,
) -> int:
    """Open the tunnel, print its URLs, serve; returns the exit code (2 without a token)."""
    args = parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
