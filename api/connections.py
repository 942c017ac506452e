"""How `text2art serve` holds connections: uvicorn's options, and an h11 protocol with a
deadline for a request's headers.

uvicorn times out an idle keep-alive connection (`timeout_keep_alive`) but not one that sends
its request slowly: a client sending a byte a minute held a connection (and a socket) forever,
and 1000 of them held 1000. `HeaderDeadline` closes a connection whose request line and headers
have not all arrived `T2A_READ_TIMEOUT` seconds after its first byte (or after it opened); the
body's own pace is timed by `api.guard` (408). `limit_concurrency` caps the connections and
running requests (`T2A_MAX_CONNECTIONS`; over it uvicorn answers 503).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from api.config import ApiConfig


class HeaderDeadline(H11Protocol):
    """uvicorn's h11 protocol that closes a connection whose headers come too slowly."""

    header_timeout: float = 30.0  # set per server by `header_deadline`

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._between_requests() and self._deadline is None:
            self._arm()  # the first byte of the next request on a kept-alive connection
        super().data_received(data)
        if not self._between_requests():
            self._disarm()  # the headers are in: the app reads the body (api.guard times it)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        self._disarm()  # an idle kept-alive connection is uvicorn's keep-alive timeout's
        super().on_response_complete()

    def _between_requests(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self._between_requests() and not self.transport.is_closing():
            self.transport.close()


def header_deadline(seconds: float) -> type[HeaderDeadline]:
    """`HeaderDeadline` with its timeout (uvicorn builds one protocol per connection)."""
    return type("HeaderDeadline", (HeaderDeadline,), {"header_timeout": seconds})


def server_options(config: ApiConfig, local_proxy: bool = False) -> dict[str, Any]:
    """uvicorn's options for the service: forwarded headers (`ApiConfig.proxy_options`), the
    header deadline, the keep-alive timeout and the connection cap."""
    return {
        **config.proxy_options(local_proxy=local_proxy),
        "http": header_deadline(config.read_timeout),
        "timeout_keep_alive": config.keep_alive_timeout,
        "limit_concurrency": config.max_connections,
    }
