"""`text2art serve`: run the service with uvicorn, optionally behind an ngrok tunnel (`--share`).

`serve()` also works inside a running event loop (a Jupyter/Colab notebook): it applies
nest_asyncio and runs uvicorn on that loop. The tunnel factory is a parameter, so tests replace
ngrok with a fake.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from typing import Protocol

import click
import uvicorn

from api.access_log import access_log_config
from api.app import create_app
from api.cli_common import fail, load_config
from api.config import ServiceConfig
from api.connections import server_options
from engine.errors import one_line

log = logging.getLogger(__name__)

TOKEN_HELP = (
    "an ngrok auth token is needed to share the service: set NGROK_AUTHTOKEN=... "
    "(get one at https://dashboard.ngrok.com/get-started/your-authtoken)"
)


class Tunnel(Protocol):
    """An open tunnel to the local port."""

    public_url: str

    def close(self) -> None: ...


TunnelFactory = Callable[[int, str], Tunnel]


class NgrokTunnel:
    """An ngrok HTTP tunnel to 127.0.0.1:port, opened with pyngrok."""

    def __init__(self, port: int, authtoken: str):
        from pyngrok import conf, ngrok

        self._config = conf.PyngrokConfig(auth_token=authtoken)
        tunnel = ngrok.connect(str(port), "http", pyngrok_config=self._config)
        assert tunnel.public_url is not None
        self.public_url: str = tunnel.public_url

    def close(self) -> None:
        """Close the tunnel and stop the ngrok agent."""
        from pyngrok import ngrok

        ngrok.disconnect(self.public_url, pyngrok_config=self._config)
        ngrok.kill(pyngrok_config=self._config)


def find_token(authtoken: str | None = None) -> str:
    """The ngrok token from the argument or NGROK_AUTHTOKEN; a clear UsageError without one."""
    token = authtoken or os.environ.get("NGROK_AUTHTOKEN", "").strip()
    if not token:
        raise click.UsageError(TOKEN_HELP)
    return token


def serve(
    host: str | None = None,
    port: int | None = None,
    share: bool = False,
    config: ServiceConfig | None = None,
    *,
    authtoken: str | None = None,
    tunnel_factory: TunnelFactory = NgrokTunnel,
    on_server: Callable[[uvicorn.Server], None] | None = None,
) -> None:
    """Serve until interrupted; with `share`, print the public and docs URLs of a tunnel."""
    config = config or load_config()
    host = host or config.host
    port = config.port if port is None else port
    token = find_token(authtoken) if share else ""
    check_models(config)
    # Open SSE streams must not hold the shutdown (and so the worker's stop) for long.
    server = AnnouncingServer(
        uvicorn.Config(
            create_app(config),
            host=host,
            port=port,
            timeout_graceful_shutdown=5,
            log_config=access_log_config(),  # delete tokens never reach the access log
            # X-Forwarded-For only from T2A_TRUSTED_PROXIES (or, with --share, the local
            # ngrok); read and keep-alive timeouts, the connection cap
            **server_options(config, local_proxy=share),
        )
    )
    if on_server is not None:
        on_server(server)
    tunnel = open_tunnel(tunnel_factory, port, token) if share else None
    try:
        if tunnel is not None:
            click.echo(f"Public URL: {tunnel.public_url}")
            click.echo(f"Doc URL: {tunnel.public_url.rstrip('/')}/docs")
        run_server(server)
    finally:
        if tunnel is not None:
            tunnel.close()
            click.echo("Tunnel closed.")


def open_tunnel(factory: TunnelFactory, port: int, token: str) -> Tunnel:
    """The tunnel, or one line and exit 1 when it cannot open (no network, a refused token):
    a failure outside the user's input."""
    try:
        return factory(port, token)
    except Exception as exc:  # pyngrok's errors, a failed agent download, a timeout
        fail(f"--share: cannot open the ngrok tunnel: {one_line(exc, 300)}", code=1)


def check_models(config: ServiceConfig) -> None:
    """Before listening: an unknown model (`--clip-model`, T2A_CLIP_MODELS, T2A_VQGAN_MODEL) is
    one line and exit 2; weights missing from the cache are said in one warning line, with the
    fix (the warm-up downloads them, which needs the network)."""
    from api.app import warm_up_settings
    from api.runner import WEIGHTS_FIX
    from engine import SettingsError, missing_weights, resolve

    try:
        settings = resolve(warm_up_settings(config), config.limits())
    except SettingsError as exc:
        fail(f"{exc} (from --clip-model, T2A_CLIP_MODELS or T2A_VQGAN_MODEL)")
    missing = [label for label, _, _ in missing_weights(settings)]
    if missing:
        click.echo(f"warning: not in the weights cache yet: {', '.join(missing)}. The warm-up "
                   f"downloads them (needs the network). {WEIGHTS_FIX}.", err=True)  # fmt: skip


class AnnouncingServer(uvicorn.Server):
    """uvicorn, printing where the web page and the API docs are once it listens."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            click.echo(ready_message(local_url(self)))


def local_url(server: uvicorn.Server) -> str:
    """http://HOST:PORT of a started server (the port it got, when asked for port 0)."""
    host = server.config.host
    port = server.config.port
    if server.servers and server.servers[0].sockets:
        port = server.servers[0].sockets[0].getsockname()[1]
    if host in ("0.0.0.0", "::", ""):  # every address: this machine's is one of them
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def ready_message(base: str) -> str:
    """The line `text2art serve` prints once it accepts requests."""
    return f"Web page: {base}/  API docs: {base}/docs"


def run_server(server: uvicorn.Server) -> None:
    """Run uvicorn to the end, on the notebook's running event loop if there is one."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        server.run()
        return
    import nest_asyncio

    nest_asyncio.apply(loop)  # a notebook's loop is already running: let it run ours too
    loop.run_until_complete(server.serve())
