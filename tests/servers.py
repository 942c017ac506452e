"""Real Redis and PostgreSQL servers on free loopback ports (127.0.0.1 only), for tests.

`RedisServer` runs `redis-server` without any persistence (a restart loses every key: the worst
case for the job queue). `PostgresServer` runs one throwaway cluster (`initdb` once, tuned for
speed, not durability) in a temporary directory. Both keep their port across stop and start, so
a client's URL stays valid while a test takes the server down and brings it back.

The pytest fixtures `redis_server`, `postgres_cluster` and `postgres_db` live here too. A missing
binary skips the test with the Debian packages to install, except on CI (`CI=true`), where it
fails: CI must never silently skip these. Every wait is bounded, and every server is stopped
(and its directory removed) at teardown, even when the test failed.

Each server is a child process of the thread that started it, in its own session (a Ctrl-C
reaches pytest, whose teardown stops it). On Linux it also gets a parent-death signal, so a
pytest killed outright (`timeout`, SIGKILL) leaves no server behind, only its temporary
directory. This is why the postmaster runs directly, not daemonized by `pg_ctl start`.

PostgreSQL refuses to run as root: as root, `initdb` and `postgres` run as the `postgres` OS
user, and the temporary directory is handed to that user.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, TypeVar

import pytest

INSTALL_HINT = "apt-get install redis-server postgresql"
PORT_TAKEN = ("Address already in use", "could not bind")
DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

# pg_ctl's stop modes, as the signals it sends to the postmaster.
STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}

# Fast, not durable: these clusters live for one test run. With synchronous_commit off, a
# postgres crash (`stop("immediate")`) loses the last ~0.6 s of commits; a test that crashes
# the server on purpose runs `SET synchronous_commit = on` (or passes `settings=`).
POSTGRES_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}

T = TypeVar("T")
ServerT = TypeVar("ServerT", bound="_ServerProcess")


class ServerMissing(RuntimeError):
    """A server binary (or the OS user it must run as) is not on this machine."""


class ServerError(RuntimeError):
    """A server did not start or stop as asked; the message carries the end of its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unavailable(reason: str) -> NoReturn:
    """Skip the current test because a server is missing; fail it instead when CI=true."""
    message = f"{reason}; on Debian: `{INSTALL_HINT}`"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: these tests must not be skipped)", pytrace=False)
    pytest.skip(message)


def _tail(path: Path, since: int = 0, limit: int = 4000) -> str:
    """The end of a log file from byte `since` on (at most `limit` characters)."""
    try:
        with path.open("rb") as file:
            file.seek(since)
            text = file.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return text[-limit:]


def _log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _die_with_parent(sig: signal.Signals) -> Callable[[], None] | None:
    """A `preexec_fn` that has the child get `sig` when the thread that started it dies
    (Linux's PR_SET_PDEATHSIG; it runs after the switch of user). None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, int(sig))

    return preexec


class _ServerProcess:
    """A server run as a child process on a fixed loopback port, logging to a file in its own
    temporary directory. Subclasses give the command, the readiness test and the signals."""

    name = "server"
    stop_signal = signal.SIGTERM
    death_signal = signal.SIGTERM  # sent by the kernel if the starting thread dies

    def __init__(self, port: int | None, start_timeout: float, prefix: str) -> None:
        self.port = port if port is not None else free_port()
        self.start_timeout = start_timeout
        self.directory = Path(tempfile.mkdtemp(prefix=prefix))
        self.log_path = self.directory / f"{self.name}.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._port_fixed = port is not None  # a free port may be swapped until the first start

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self, process: subprocess.Popen[bytes]) -> bool:
        raise NotImplementedError

    def _popen_options(self) -> dict[str, Any]:
        return {}

    def start(self) -> None:
        """Start the server (no-op when running); returns once it serves clients, or raises
        ServerError with its log after `start_timeout` seconds."""
        if self.running:
            return
        for _ in range(3):
            since = _log_size(self.log_path)
            try:
                self._launch(since)
            except ServerError:
                taken = any(text in _tail(self.log_path, since) for text in PORT_TAKEN)
                if self._port_fixed or not taken:
                    raise
                self.port = free_port()  # lost a race for the first free port: pick another
                continue
            self._port_fixed = True
            return
        raise ServerError(f"{self.name} found no free port; log:\n{_tail(self.log_path)}")

    def _launch(self, since: int) -> None:
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                start_new_session=True,
                preexec_fn=_die_with_parent(self.death_signal),
                **self._popen_options(),
            )
        self._process = process
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self._process = None
                raise ServerError(
                    f"{self.name} on port {self.port} exited with {process.returncode}; "
                    f"log:\n{_tail(self.log_path, since)}"
                )
            if self._ready(process):
                return
            time.sleep(0.05)
        self.kill()
        raise ServerError(
            f"{self.name} on port {self.port} not ready within {self.start_timeout} s; "
            f"log:\n{_tail(self.log_path, since)}"
        )

    def _end(self, sig: signal.Signals, timeout: float) -> None:
        """Send `sig` and reap the process; SIGKILL if it has not ended after `timeout` s."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def stop(self) -> None:
        """Stop the server cleanly and wait for it (SIGKILL after 30 s)."""
        self._end(self.stop_signal, 30)

    def kill(self) -> None:
        """Kill the server with SIGKILL (a crash) and reap it."""
        self._end(signal.SIGKILL, 10)

    def restart(self) -> None:
        """Stop, then start on the same port."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server (SIGKILL if it will not) and remove its directory."""
        try:
            self.stop()
        finally:
            self.kill()
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self: ServerT) -> ServerT:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def redis_answers(port: int) -> bool:
    """Whether something on 127.0.0.1:port answers a Redis PING with PONG."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer(_ServerProcess):
    """`redis-server` on 127.0.0.1 with no persistence (no RDB, no AOF): a restart loses
    every key. The port is chosen once and kept across `stop`/`kill` and `start`."""

    name = "redis-server"

    def __init__(self, port: int | None = None, start_timeout: float = 10.0) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServerMissing("redis-server is not installed")
        self.binary = binary
        super().__init__(port, start_timeout, "text2art-redis-")

    @property
    def url(self) -> str:
        """The client URL, `redis://127.0.0.1:PORT/0`."""
        return f"redis://127.0.0.1:{self.port}/0"

    def _command(self) -> list[str]:
        return [
            *(self.binary, "--port", str(self.port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--dir", str(self.directory)),
        ]

    def _ready(self, process: subprocess.Popen[bytes]) -> bool:
        return redis_answers(self.port) and process.poll() is None


def postgres_bin_dir() -> Path:
    """The directory of `initdb` and `postgres`: the one of `initdb` on PATH, else Debian's
    newest /usr/lib/postgresql/VERSION/bin. Raises ServerMissing when there is none."""
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    for directory in candidates:
        if all((directory / name).is_file() for name in ("initdb", "postgres")):
            return directory
    raise ServerMissing("PostgreSQL (initdb, postgres) is not installed")


def _postgres_user() -> dict[str, Any]:
    """Extra `subprocess` arguments to run PostgreSQL's programs: as the `postgres` OS user
    when running as root (PostgreSQL refuses root), else nothing."""
    if os.geteuid() != 0:
        return {}
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        raise ServerMissing("running as root, but there is no `postgres` OS user") from None
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _postgres_env() -> dict[str, str]:
    """This process's environment without libpq's PG* variables."""
    return {key: value for key, value in os.environ.items() if not key.startswith("PG")}


class PostgresServer(_ServerProcess):
    """A throwaway PostgreSQL cluster on 127.0.0.1 in a temporary directory: superuser
    `postgres`, trust authentication, UTF8, POSTGRES_SETTINGS (fsync and synchronous_commit
    off) updated by `settings`. `initdb` runs on the first `start`; the port is kept across
    `stop` and `start`. `close` stops it and removes the directory."""

    name = "postgres"
    stop_signal = signal.SIGINT  # fast shutdown
    death_signal = signal.SIGQUIT  # immediate shutdown

    def __init__(
        self,
        port: int | None = None,
        start_timeout: float = 30.0,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.bin_dir = postgres_bin_dir()
        self._as_user = _postgres_user()
        super().__init__(port, start_timeout, "text2art-pg-")
        self.data_dir = self.directory / "data"
        self.settings = {
            **POSTGRES_SETTINGS,
            "unix_socket_directories": f"'{self.directory}'",
            **(settings or {}),
        }
        if self._as_user:
            os.chown(self.directory, self._as_user["user"], self._as_user["group"])
        self._initialized = False

    def url(self, name: str = "postgres") -> str:
        """The SQLAlchemy URL of database `name`: `postgresql+psycopg://postgres@HOST:PORT/name`."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def _popen_options(self) -> dict[str, Any]:
        return {"env": _postgres_env(), **self._as_user}

    def _command(self) -> list[str]:
        return [str(self.bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port)]

    def _ready(self, process: subprocess.Popen[bytes]) -> bool:
        """Whether the postmaster says it accepts connections (as `pg_ctl start -w` reads it:
        its pid on line 1 and "ready" on line 8 of postmaster.pid)."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return len(lines) >= 8 and lines[0] == str(process.pid) and lines[7].strip() == "ready"

    def _initdb(self) -> None:
        result = subprocess.run(
            [
                *(str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", "postgres"),
                *("-E", "UTF8", "--locale=C", "--auth=trust", "--no-sync"),
            ],
            cwd=self.directory,  # a directory the postgres user can enter
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            **self._popen_options(),
        )
        if result.returncode != 0:
            raise ServerError(
                f"initdb failed in {self.directory} (the postgres user must be able to reach "
                f"it):\n{result.stdout}{result.stderr}"
            )
        lines = "".join(f"{key} = {value}\n" for key, value in self.settings.items())
        with (self.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(f"\n# text2art tests\n{lines}")
        self._initialized = True

    def start(self) -> None:
        """Start the cluster (no-op when running), `initdb` first if needed; returns once it
        accepts connections, or raises ServerError with its log after `start_timeout` s."""
        if not self._initialized:
            self._initdb()
        super().start()

    def stop(self, mode: str = "fast") -> None:
        """Stop the cluster like `pg_ctl stop -m MODE`: "smart" (waits for clients), "fast"
        (rolls back and disconnects them) or "immediate" (a crash: recovery on the next
        start; with synchronous_commit off the last commits may be lost)."""
        if mode not in STOP_SIGNALS:
            raise ValueError(f"stop mode must be one of {tuple(STOP_SIGNALS)}, not {mode!r}")
        self._end(STOP_SIGNALS[mode], 30)

    def create_database(self, name: str | None = None) -> str:
        """Create database `name` (default: a fresh unique name); returns its SQLAlchemy URL."""
        from psycopg import sql

        name = name if name is not None else unique_database_name()
        if not DATABASE_NAME.fullmatch(name):
            raise ValueError(f"database name must match {DATABASE_NAME.pattern}: {name!r}")
        with self._admin_connection() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database `name` if it exists, disconnecting its clients first."""
        from psycopg import sql

        with self._admin_connection() as conn:
            query = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            conn.execute(query.format(sql.Identifier(name)))

    def _admin_connection(self) -> Any:
        import psycopg

        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user="postgres",
            dbname="postgres",
            autocommit=True,
            connect_timeout=10,
        )


def unique_database_name() -> str:
    """A database name no other call returns: `test_` and 16 hex digits."""
    return f"test_{uuid.uuid4().hex[:16]}"


def _create_or_skip(factory: Callable[[], T]) -> T:
    try:
        return factory()
    except ServerMissing as exc:
        reason = str(exc)
    unavailable(reason)  # outside the `except`: no chained traceback in the report


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh, running Redis (no persistence) for one test; stopped and removed after it."""
    server = _create_or_skip(RedisServer)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresServer]:
    """One running PostgreSQL cluster for the whole run; stopped and removed at the end.
    A test may stop it: `postgres_db` starts it again for the next test."""
    server = _create_or_skip(PostgresServer)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def postgres_db(postgres_cluster: PostgresServer) -> Iterator[str]:
    """The SQLAlchemy URL of a fresh, uniquely named database on the (running) session
    cluster; the database is dropped after the test when the cluster still runs."""
    postgres_cluster.start()  # a previous test may have stopped it
    name = unique_database_name()
    url = postgres_cluster.create_database(name)
    yield url
    if postgres_cluster.running:
        with contextlib.suppress(Exception):  # a scratch database: never fail a test over it
            postgres_cluster.drop_database(name)
