"""A deadline on every PostgreSQL call: no lost reply can hang a worker.

When the answer to a statement or a COMMIT is lost while the connection stays open (a proxy or
a NAT that drops it), the client waits for ever: TCP keepalives are answered, the server's
statement timeout has nothing left to time. `Watchdog` notes each statement and each COMMIT
when it is sent (SQLAlchemy's engine events) and forgets it when it returns; a thread of its own
shuts down the socket of any call still waiting after `seconds`. The waiting thread then gets
an `OperationalError` (a lost connection: an outage, retried with backoff by its caller) and the
pool drops the connection. A COMMIT whose reply was lost may have committed: the callers' writes
are conditional, and the worker recognises its own finished job (`JobRunner._finish`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)


class Watchdog:
    """Cuts the connection of any call of `engine` that waits longer than `seconds`."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.cuts = 0
        self._calls: dict[int, tuple[float, Any]] = {}  # id(DBAPI connection) -> (deadline, it)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def attach(self, engine: Engine) -> None:
        """Watch every statement and COMMIT of `engine`'s connections."""
        event.listen(engine, "before_cursor_execute", self._sent_statement)
        event.listen(engine, "after_cursor_execute", self._returned)
        event.listen(engine, "commit", self._sent)
        event.listen(engine, "checkin", self._forget)  # back in the pool: nothing is waiting

    def _sent_statement(self, conn: Connection, *args: Any) -> None:
        self._sent(conn)

    def _sent(self, conn: Connection) -> None:
        dbapi = conn.connection.dbapi_connection
        with self._lock:
            self._calls[id(dbapi)] = (time.monotonic() + self.seconds, dbapi)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="t2a-db-watchdog")
                self._thread.daemon = True
                self._thread.start()

    def _returned(self, conn: Connection, *args: Any) -> None:
        self._forget(conn.connection.dbapi_connection)

    def _forget(self, dbapi: Any, *args: Any) -> None:
        with self._lock:
            self._calls.pop(id(dbapi), None)

    def _loop(self) -> None:
        tick, pause = min(1.0, self.seconds / 4), threading.Event()  # never set: a timer
        while True:  # a daemon: it ends with the process
            pause.wait(tick)
            now = time.monotonic()
            with self._lock:
                late = [key for key, (deadline, _) in self._calls.items() if deadline <= now]
                cut = [self._calls.pop(key)[1] for key in late]
            for dbapi in cut:
                try:
                    self._cut(dbapi)
                except Exception:  # the watchdog must outlive any one connection
                    log.exception("the database watchdog could not cut a connection")

    def _cut(self, dbapi: Any) -> None:
        """Shut the connection's socket down: its waiting thread wakes with an error."""
        try:
            fd = getattr(getattr(dbapi, "pgconn", None), "socket", None)
        except Exception:  # psycopg: "the connection is lost": nothing is left to cut
            return
        if not isinstance(fd, int) or fd < 0:
            return
        self.cuts += 1
        log.warning("a database call waited over %.0f s for its reply; its connection is cut "
                    "(T2A_DB_DEADLINE_SECONDS)", self.seconds)  # fmt: skip
        with contextlib.suppress(OSError):
            sock = socket.socket(fileno=os.dup(fd))
            sock.shutdown(socket.SHUT_RDWR)  # the socket, not only this copy of its descriptor
            sock.close()
