"""Issue 20 on a real uvicorn at 127.0.0.1: requests refused before their body is read,
forwarded headers, the access log, and event streams (one poll per job, a cap per client)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from helpers import jobs_config, pause_jobs, running, serving_in_thread, wait_for
from servers import free_port

from api.access_log import RedactSecrets, access_log_config
from api.app import create_app
from api.config import ServiceConfig
from api.serve import serve
from api.services import build_services
from engine import ModelCache, Settings

LIMIT = 100_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models: ModelCache) -> Iterator[str]:
    out = tmp_path_factory.mktemp("guarded")
    config = jobs_config(
        out,
        api_keys=["k1"],
        max_request_bytes=LIMIT,
        max_listeners_per_client=2,
    )
    app = create_app(config, models=models)
    with running(app) as url:
        pause_jobs(app)  # jobs stay queued; /generate runs here
        yield url


def raw_request(url: str, head: str, body_chunks: tuple[bytes, ...] = ()) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    conn = socket.create_connection((host, int(port)), timeout=10)
    conn.sendall(head.encode())
    for chunk in body_chunks:
        try:
            conn.sendall(chunk)
        except OSError:  # the server answered and closed: the rest is never read
            break
    return conn


def read_response(conn: socket.socket) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of the answer (the connection is then closed)."""
    data = b""
    try:
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        conn.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def post_head(path: str, length: int | None, key: str | None = "k1") -> str:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines.append("Content-Type: multipart/form-data; boundary=zz")
    lines.append(
        f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    )
    if key:
        lines.append(f"Authorization: Bearer {key}")
    return "\r\n".join(lines) + "\r\n\r\n"


# -- 2. refused before the body is read -------------------------------------------------------
@pytest.mark.parametrize("path", ["/generate", "/jobs"])
def test_content_length_over_the_limit_is_413_before_any_body(server: str, path: str) -> None:
    conn = raw_request(server, post_head(path, 10 * 1024 * 1024))  # no body is sent at all
    status, body = read_response(conn)
    assert status == 413 and body["error"] == "too_large"
    assert "T2A_MAX_REQUEST_BYTES" in body["detail"]


def test_a_chunked_body_is_cut_off_at_the_limit(server: str) -> None:
    part = b'--zz\r\nContent-Disposition: form-data; name="init_image"; filename="a.png"\r\n\r\n'
    chunks = [part] + [b"x" * 16384] * (2 * LIMIT // 16384)  # a valid upload, twice the limit
    # ... and never the final 0-chunk: a server that read on would wait forever.
    framed = tuple(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks)
    conn = raw_request(server, post_head("/jobs", None), framed)
    status, body = read_response(conn)
    assert status == 413 and body["error"] == "too_large"


@pytest.mark.parametrize("key", [None, "wrong"])
def test_api_key_is_checked_before_the_body_is_read(server: str, key: str | None) -> None:
    conn = raw_request(server, post_head("/jobs", 50_000, key))  # under the limit, never sent
    status, body = read_response(conn)
    assert status == 401 and "API key" in body["detail"]


def test_small_requests_still_pass(server: str) -> None:
    fields = {"prompts": "a cat", "style": "pixel art", "size": "32x32", "iterations": "1"}
    r = httpx.post(f"{server}/jobs", data=fields, headers={"Authorization": "bearer k1"})
    assert r.status_code == 202, r.text


# -- 9. event streams: a cap per client -------------------------------------------------------
def open_stream(client: httpx.Client, url: str) -> tuple[Any, httpx.Response, Iterator[str]]:
    """An open event stream, once its first event arrived (the server counts it then).
    The line iterator is returned too: dropping it would close the stream."""
    cm = client.stream("GET", url)
    response = cm.__enter__()
    lines = response.iter_lines()
    while response.status_code == 200 and not next(lines).startswith("event: "):
        pass
    return cm, response, lines


def test_open_event_streams_are_capped_per_client(server: str) -> None:
    fields = {"prompts": "a cat", "style": "pixel art", "size": "32x32"}
    headers = {"Authorization": "Bearer k1"}
    job = httpx.post(f"{server}/jobs", data=fields, headers=headers).json()
    url = f"{server}/jobs/{job['id']}/events"
    with httpx.Client(timeout=10) as client:
        first, second = open_stream(client, url), open_stream(client, url)
        assert first[1].status_code == second[1].status_code == 200
        third = client.get(url)
        assert third.status_code == 429 and "event streams" in third.json()["detail"]
        assert third.headers["Retry-After"] == "5"
        first[0].__exit__(None, None, None)  # one closed: a new one is let in
        wait_for(lambda: open_stream(client, url)[1].status_code == 200, 10, "a stream let in")
        second[0].__exit__(None, None, None)


def test_listeners_of_one_job_share_one_poll(tmp_path: Path, models: ModelCache) -> None:
    """50 listeners, one read of the job: the poll is shared (it was 50, four times a second)."""
    config = jobs_config(tmp_path, run_worker_in_process=False, progress_interval=3600)
    jobs = build_services(config, models=models).jobs
    jobs.store.open()
    job, _ = jobs.submit("5" * 32, Settings.create(prompts="a cat"), {})
    reads = [0]
    get = jobs.store.get

    def counted(job_id: str) -> Any:
        reads[0] += 1
        return get(job_id)

    jobs.store.get = counted  # type: ignore[method-assign]

    async def listen() -> list[str]:
        stream = jobs.events(job.id, "http://x", None)
        first = [await anext(stream), await anext(stream)]  # retry, then the status
        await stream.aclose()
        return first

    async def main() -> list[list[str]]:
        return await asyncio.gather(*(listen() for _ in range(50)))

    try:
        firsts = asyncio.run(main())
    finally:
        jobs.stop()
    assert all(f[1].startswith("id: 1\nevent: status") for f in firsts)
    assert reads[0] == 1


# -- 3. forwarded headers ---------------------------------------------------------------------
def client_seen(options: dict[str, Any], peer: str) -> str:
    """The client address an app sees behind uvicorn with `options`, for a request from `peer`
    carrying X-Forwarded-For: 203.0.113.9."""
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["client"][0])

    config = uvicorn.Config(app, **options)
    config.load()
    headers = [(b"x-forwarded-for", b"203.0.113.9")]
    scope = {"type": "http", "client": (peer, 5000), "headers": headers, "scheme": "http"}
    asyncio.run(config.loaded_app(scope, None, None))
    return seen[0]


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    default = ServiceConfig().proxy_options()
    assert client_seen(default, "127.0.0.1") == "127.0.0.1"  # uvicorn alone trusts loopback
    trusted = ServiceConfig(trusted_proxies="10.0.0.2").proxy_options()  # type: ignore[arg-type]
    assert client_seen(trusted, "10.0.0.2") == "203.0.113.9"
    assert client_seen(trusted, "127.0.0.1") == "127.0.0.1"


class _Captured(Exception):
    pass


def uvicorn_config_of_serve(config: ServiceConfig, share: bool = False) -> uvicorn.Config:
    servers: list[uvicorn.Server] = []

    def capture(server: uvicorn.Server) -> None:
        servers.append(server)
        raise _Captured

    with pytest.raises(_Captured):
        serve(config=config, on_server=capture, share=share, authtoken="t")
    return servers[0].config


def test_serve_passes_trusted_proxies_and_the_redacting_log(tmp_path: Path) -> None:
    base = {"output_dir": tmp_path, "preload": False}
    plain = uvicorn_config_of_serve(ServiceConfig(**base))
    assert plain.proxy_headers is False
    behind = uvicorn_config_of_serve(ServiceConfig(**base, trusted_proxies=["10.0.0.2"]))
    assert behind.proxy_headers is True and behind.forwarded_allow_ips == "10.0.0.2"
    assert plain.log_config == access_log_config()
    shared = uvicorn_config_of_serve(ServiceConfig(**base), share=True)  # ngrok runs on this host
    assert shared.proxy_headers is True and shared.forwarded_allow_ips == "127.0.0.1"


# -- 7. the access log ------------------------------------------------------------------------
def test_access_log_redacts_the_delete_token(
    tmp_path: Path, models: ModelCache, capfd: pytest.CaptureFixture[str]
) -> None:
    """Through `serve()`'s own uvicorn and logging configuration."""
    config = jobs_config(tmp_path, host="127.0.0.1", port=free_port())
    with serving_in_thread(serve, config=config):
        url = f"http://127.0.0.1:{config.port}/jobs/{'6' * 32}?delete_token=SECRET123&x=1"
        assert httpx.delete(url).status_code == 404
        assert httpx.get(url.replace("delete_token", "Delete_Token")).status_code == 404
    out = capfd.readouterr().out
    assert "SECRET123" not in out
    assert "delete_token=[redacted]&x=1" in out and "Delete_Token=[redacted]" in out


def test_redaction_leaves_other_lines_alone() -> None:
    import logging

    args = ("127.0.0.1:5", "GET", "/gallery?page=2", "1.1", 200)
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s "%s %s" %d', args, None)
    RedactSecrets().filter(record)
    assert record.args == args
