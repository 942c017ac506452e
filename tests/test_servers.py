"""The real-server fixtures of tests/servers.py: Redis answers, loses everything on a restart
and comes back on the same URL after a crash; PostgreSQL gives a fresh database per test,
refuses connections while stopped and comes back on the same URL."""

from __future__ import annotations

import select
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import redis
import servers
import sqlalchemy
from helpers import wait_for
from redis.backoff import NoBackoff
from redis.retry import Retry
from servers import PostgresServer, RedisServer
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

SEEN_DATABASES: set[str] = set()


def redis_client(url: str) -> redis.Redis:
    """A client that fails at once (no retries) when nothing answers."""
    return redis.Redis.from_url(
        url, socket_connect_timeout=2, socket_timeout=2, retry=Retry(NoBackoff(), 0)
    )


def engine(url: str) -> Engine:
    """An engine that opens a new connection each time (no pool hides a dead server)."""
    return sqlalchemy.create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 2})


def scalar(url: str, query: str) -> object:
    """The single value of `query` on a new connection to `url`."""
    with engine(url).connect() as conn:
        return conn.execute(sqlalchemy.text(query)).scalar_one()


def test_redis_answers_ping(redis_server: RedisServer) -> None:
    assert redis_server.running
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert redis_client(redis_server.url).ping() is True


def test_redis_restart_loses_every_key(redis_server: RedisServer) -> None:
    url = redis_server.url
    redis_client(url).set("job", "queued")
    assert redis_client(url).get("job") == b"queued"

    redis_server.restart()

    assert redis_server.running and redis_server.url == url
    client = redis_client(url)
    assert client.get("job") is None
    assert client.dbsize() == 0


def test_redis_kill_then_start_on_the_same_url(redis_server: RedisServer) -> None:
    url = redis_server.url
    connected = redis_client(url)
    assert connected.ping() is True

    redis_server.kill()

    assert not redis_server.running
    with pytest.raises(redis.exceptions.ConnectionError):
        connected.ping()
    with pytest.raises(redis.exceptions.ConnectionError):
        redis_client(url).ping()

    redis_server.start()

    assert redis_server.url == url
    assert redis_client(url).ping() is True


CHILD = """
import sys, time
sys.path.insert(0, {tests!r})
from servers import RedisServer
server = RedisServer()
server.start()
print(server.port, server.directory, flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal: Linux")
def test_a_killed_test_process_leaves_no_server_behind() -> None:
    if shutil.which("redis-server") is None:
        servers.unavailable("redis-server is not installed")
    script = CHILD.format(tests=str(Path(__file__).parent))
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    port, directory = 0, ""
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], 15)
        assert ready, "the child did not start its redis-server within 15 s"
        port_text, directory = child.stdout.readline().split()
        port = int(port_text)
        assert servers.redis_answers(port)

        child.kill()  # no teardown runs: only the kernel can stop the server now
        child.wait(timeout=10)

        wait_for(lambda: not servers.redis_answers(port), 5, "the orphaned redis-server gone")
    finally:
        child.kill()
        child.wait(timeout=10)
        if port and servers.redis_answers(port):  # the test failed: do not leave it running
            redis.Redis("127.0.0.1", port, socket_timeout=2).shutdown(nosave=True)
        if directory:
            shutil.rmtree(directory, ignore_errors=True)


def test_postgres_db_works_with_sqlalchemy(postgres_db: str) -> None:
    assert postgres_db.startswith("postgresql+psycopg://postgres@127.0.0.1:")
    assert scalar(postgres_db, "select 1") == 1
    assert scalar(postgres_db, "show server_encoding") == "UTF8"


@pytest.mark.parametrize("run", [1, 2])
def test_postgres_db_is_fresh_each_time(postgres_db: str, run: int) -> None:
    name = str(scalar(postgres_db, "select current_database()"))
    assert postgres_db.endswith(f"/{name}")
    assert name not in SEEN_DATABASES
    SEEN_DATABASES.add(name)
    with engine(postgres_db).begin() as conn:  # empty: no table left by the other run
        query = sqlalchemy.text("select count(*) from pg_tables where tablename = 'marker'")
        assert conn.execute(query).scalar_one() == 0
        conn.execute(sqlalchemy.text("create table marker (run int)"))


def test_postgres_create_database_twice_gives_two(postgres_cluster: PostgresServer) -> None:
    first, second = postgres_cluster.create_database(), postgres_cluster.create_database()
    assert first != second
    with engine(first).begin() as conn:
        conn.execute(sqlalchemy.text("create table only_in_first (x int)"))
    query = "select count(*) from pg_tables where tablename = 'only_in_first'"
    assert scalar(first, query) == 1
    assert scalar(second, query) == 0


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_stop_then_start_on_the_same_url(
    postgres_cluster: PostgresServer, postgres_db: str, mode: str
) -> None:
    with engine(postgres_db).begin() as conn:
        if mode == "immediate":  # a crash: only commits that waited for their WAL survive it
            conn.execute(sqlalchemy.text("set local synchronous_commit = on"))
        conn.execute(sqlalchemy.text("create table kept (x int)"))
        conn.execute(sqlalchemy.text("insert into kept values (42)"))

    postgres_cluster.stop(mode)

    assert not postgres_cluster.running
    with pytest.raises(sqlalchemy.exc.OperationalError):
        engine(postgres_db).connect()

    postgres_cluster.start()

    assert postgres_cluster.running
    assert scalar(postgres_db, "select x from kept") == 42


def test_postgres_left_stopped_for_the_next_test(postgres_cluster: PostgresServer) -> None:
    """Leaves the cluster stopped: the `postgres_db` of the next test must start it again."""
    postgres_cluster.stop()
    assert not postgres_cluster.running


def test_postgres_db_starts_a_stopped_cluster(postgres_db: str) -> None:
    assert scalar(postgres_db, "select 1") == 1


def test_postgres_stop_rejects_an_unknown_mode(postgres_cluster: PostgresServer) -> None:
    with pytest.raises(ValueError, match="stop mode"):
        postgres_cluster.stop("abrupt")


def test_missing_server_skips_but_fails_on_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(servers.ServerMissing, match="redis-server"):
        RedisServer()

    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install redis-server postgresql"):
        servers.unavailable("redis-server is not installed")

    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="apt-get install redis-server postgresql"):
        servers.unavailable("redis-server is not installed")
