"""A tiny HTTP server for a jobs worker, which has no FastAPI app: health, readiness, metrics.

    GET /healthz   200 {"status": "ok"} while the process serves at all (liveness)
    GET /readyz    200 with ready()'s dict when ready, else 503 (readiness)
    GET /metrics   the Prometheus exposition of `metrics` (404 when there are none)

HEAD answers like GET without a body; other methods get 405. It runs the stdlib
`ThreadingHTTPServer` in a daemon thread, so a stuck scrape never keeps the worker from exiting,
and logs requests through `logging` at debug level instead of writing them to stderr.

    server = HealthServer("0.0.0.0", 9101, ready=worker.readiness, metrics=metrics)
    server.start()
    ...
    server.final_scrape(60)  # a stopping worker: its last counts reach the scraper
    server.stop()
"""

from __future__ import annotations

import json
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from api.metrics import Metrics

log = logging.getLogger(__name__)

JSON = "application/json"
Readiness = Callable[[], tuple[bool, dict[str, Any]]]
Response = tuple[int, bytes, str]  # status, body, Content-Type


def _json(status: int, payload: dict[str, Any]) -> Response:
    """A JSON response; values JSON cannot encode are written as their str()."""
    return status, json.dumps(payload, default=str).encode(), JSON


class HealthServer:
    """Serves /healthz, /readyz and /metrics of one process from a background thread."""

    def __init__(
        self, host: str, port: int, ready: Readiness, metrics: Metrics | None = None
    ) -> None:
        self.host = host
        self._port = port
        self._ready = ready
        self._metrics = metrics
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._scrapes: list[float] = []  # when /metrics was served, the newest two
        self._scraped = threading.Condition()

    @property
    def port(self) -> int:
        """The bound port once started (the real one when asked for port 0), else the asked one."""
        return self._port

    def start(self) -> None:
        """Bind and serve in a daemon thread; OSError when the address is taken."""
        if self._server is not None:
            raise RuntimeError("the health server is already running")
        self._server = _Server((self.host, self._port), self)
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},  # how soon stop() is noticed
            name=f"health-server-{self._port}",
            daemon=True,
        )
        self._thread.start()
        log.info("health server listening on %s:%d", self.host, self._port)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, close the socket and join the thread (at most `timeout` seconds)."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._server = self._thread = None
        server.shutdown()  # returns once serve_forever notices, within its poll interval
        server.server_close()
        thread.join(timeout)

    def final_scrape(self, limit: float) -> bool:
        """Wait for one more scrape of /metrics (a stopping worker's last counts), at most
        `limit` seconds and at most 1.5 intervals between the last two scrapes; no wait when
        nobody has scraped it. Returns whether a scrape came."""
        with self._scraped:
            if not self._scrapes or limit <= 0:
                return False
            seen = self._scrapes[-1]
            if len(self._scrapes) == 2:
                limit = min(limit, 1.5 * (self._scrapes[1] - self._scrapes[0]) + 1.0)
            return self._scraped.wait_for(lambda: self._scrapes[-1] > seen, timeout=limit)

    def __enter__(self) -> HealthServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def respond(self, path: str) -> Response:
        """The response to `GET path` (the query string is ignored)."""
        route = urlsplit(path).path
        if route == "/healthz":
            return _json(200, {"status": "ok"})
        if route == "/readyz":
            return self._readiness()
        if route == "/metrics" and self._metrics is not None:
            body, content_type = self._metrics.render()
            with self._scraped:
                self._scrapes = [*self._scrapes[-1:], time.monotonic()]
                self._scraped.notify_all()
            return 200, body, content_type
        return _json(404, {"detail": "not found"})

    def _readiness(self) -> Response:
        """200 with ready()'s details when ready, 503 when not or when ready() raised."""
        try:
            ok, details = self._ready()
        except Exception as exc:
            log.debug("readiness check raised", exc_info=True)
            return _json(503, {"ready": False, "error": f"{type(exc).__name__}: {exc}"})
        return _json(200 if ok else 503, details)


class _Server(ThreadingHTTPServer):
    """The stdlib threaded server, bound to one `HealthServer`, without the reverse DNS lookup."""

    daemon_threads = True
    allow_reuse_address = True  # rebind at once after a restart (TIME_WAIT)
    allow_reuse_port = False  # never share the port with a second process

    def __init__(self, address: tuple[str, int], app: HealthServer):
        self.app = app
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        """Bind; HTTPServer's socket.getfqdn() may stall for seconds without DNS, so skip it."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A broken connection is the client's business: log it, never print a traceback."""
        log.debug("health server: error serving %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    """Routes GET and HEAD to the `HealthServer`; every other method is 405."""

    server: _Server
    server_version = "text2art-health"
    sys_version = ""
    timeout = 10  # seconds a client may take to send its request

    def do_GET(self) -> None:
        """Answer GET with the route's status, headers and body."""
        self._answer(body=True)

    def do_HEAD(self) -> None:
        """Answer HEAD like GET, without the body."""
        self._answer(body=False)

    def _not_allowed(self) -> None:
        status, body, content_type = _json(405, {"detail": "method not allowed"})
        self._send(status, body, content_type, {"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed

    def _answer(self, body: bool) -> None:
        try:
            status, payload, content_type = self.server.app.respond(self.path)
        except Exception:
            log.exception("health server: %s %s failed", self.command, self.path)
            status, payload, content_type = _json(500, {"detail": "internal error"})
        self._send(status, payload if body else b"", content_type, {}, len(payload))

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict[str, str],
        length: int | None = None,
    ) -> None:
        """Write the status line, headers and body (HEAD passes an empty body, GET's length)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.send_header("Cache-Control", "no-store")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Request lines go to `logging` at debug level, not to stderr."""
        log.debug("health server %s: " + format, self.address_string(), *args)
