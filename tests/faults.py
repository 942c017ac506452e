"""A TCP proxy on 127.0.0.1 that puts network faults between a client and a real server.

`FaultProxy(upstream_port)` forwards every connection until told otherwise:

- `refuse()`: new connections are refused (the listener is closed; ECONNREFUSED) and the open
  ones are cut, as when a server is down;
- `blackhole()`: nothing moves either way and new connections are accepted but never answered,
  as when a network path dies without telling anyone (the client waits for its own timeout);
- `delay(seconds)`: each chunk is held that long in each direction (a slow, far network);
- `drop_replies()`: the server's answers are thrown away while the connections stay open (a
  lost reply: the server did the work, the client never hears of it);
- `heal()`: back to forwarding (a refusing proxy listens again on the same port).

Every thread is a daemon and every wait is bounded; `close()` ends them all.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time

PASS, REFUSE, BLACKHOLE, DROP_REPLIES = "pass", "refuse", "blackhole", "drop_replies"


class FaultProxy:
    """127.0.0.1:`port` -> 127.0.0.1:`upstream_port`, with faults switched on and off."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.mode, self.lag = PASS, 0.0
        self.port = 0
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.connections = 0
        self._listen()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- faults ----------------------------------------------------------------------------
    def refuse(self) -> None:
        self.mode = REFUSE
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        self._cut_all()

    def blackhole(self) -> None:
        self.mode = BLACKHOLE

    def drop_replies(self) -> None:
        self.mode = DROP_REPLIES

    def delay(self, seconds: float) -> None:
        self.mode, self.lag = PASS, seconds

    def heal(self) -> None:
        self.mode, self.lag = PASS, 0.0
        if self._listener is None and not self._closed.is_set():
            self._listen()

    def close(self) -> None:
        self._closed.set()
        self.refuse()

    # -- plumbing --------------------------------------------------------------------------
    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = int(listener.getsockname()[1])
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # closed: refusing, or the proxy is closed
                return
            self.connections += 1
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, reply: bool) -> None:
        while not self._closed.is_set():
            try:  # waits at most 0.2 s, so that a change of mode is seen while nothing comes
                if not select.select([source], [], [], 0.2)[0]:
                    continue
                data = source.recv(65536)
            except (OSError, ValueError):  # closed meanwhile
                break
            if not data:
                break
            if not self._forward(data, target, reply):
                break
        self._cut(source, target)

    def _forward(self, data: bytes, target: socket.socket, reply: bool) -> bool:
        """Send `data` on as the mode says; False when the connection is to end."""
        while self.mode == BLACKHOLE and not self._closed.is_set():
            time.sleep(0.05)  # held, as on a dead path (released if the proxy heals)
        if self.mode == REFUSE or self._closed.is_set():
            return False
        if reply and self.mode == DROP_REPLIES:
            return True  # the server answered; nobody hears it
        if self.lag:
            time.sleep(self.lag)
        try:
            target.sendall(data)
        except OSError:
            return False
        return True

    def _cut(self, *socks: socket.socket) -> None:
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            with self._lock:
                self._open.discard(sock)

    def _cut_all(self) -> None:
        with self._lock:
            socks = list(self._open)
        self._cut(*socks)
