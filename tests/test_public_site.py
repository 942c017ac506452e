"""Issue 30, points 4-11: what a second attack pass on a public server found, each on a real
server (the app's lifespan through TestClient, or uvicorn on a free port)."""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from helpers import (
    FORM,
    Inbox,
    error_of,
    jobs_config,
    running,
    serving,
    serving_in_thread,
    smtp_config,
    wait_for,
)
from PIL import Image
from servers import free_port

from api.addresses import client_address
from api.app import create_app
from api.config import ServiceConfig
from api.connections import HeaderDeadline, server_options
from api.jobs.notify import PermanentError, post_webhook, resolve_public, webhook_request
from api.serve import serve
from engine import ModelCache

FAST = {**FORM, "iterations": "1"}
EVIL = {"Host": "evil.example"}


# -- 4: a webhook's password ------------------------------------------------------------------
@pytest.mark.parametrize(
    "url", ["https://u:pw@example.org/", "https://u@example.org/", "http://:pw@example.org:81/"]
)
def test_a_webhook_url_with_a_user_or_password_is_422(
    tmp_path: Path, models: ModelCache, url: str
) -> None:
    with serving(jobs_config(tmp_path), models, paused=True) as client:
        answer = client.post("/jobs", data={**FORM, "webhook_url": url})
        field, message = error_of(answer)
        assert field == "webhook_url" and "user:pass@host" in message
        assert "pw" not in answer.text.replace("user:pass", "")
        assert client.app.state.jobs.store.count("queued") == 0  # type: ignore[attr-defined]


# -- 5: host header poisoning -------------------------------------------------------------------
def test_without_a_public_url_no_link_comes_from_the_host_header(
    tmp_path: Path, models: ModelCache
) -> None:
    with serving(jobs_config(tmp_path), models) as client:
        created = client.post("/jobs", data=FAST, headers=EVIL)
        assert created.status_code == 202
        job_id = created.json()["id"]
        assert created.headers["location"] == f"/jobs/{job_id}"
        assert created.json()["links"]["self"] == f"/jobs/{job_id}"
        made = client.post("/generate", data=FAST, headers=EVIL)
        assert made.headers["x-image-url"].startswith("/outputs/")
        info = client.get("/info", headers=EVIL).json()
        assert info["links"]["docs"] == "/docs"
        job = client.get(f"/jobs/{job_id}", headers=EVIL).text
        assert "evil.example" not in job + made.headers["link"] + str(info)


def test_a_public_url_is_the_base_of_every_link_whatever_the_host(
    tmp_path: Path, models: ModelCache
) -> None:
    config = jobs_config(tmp_path, public_url="https://art.example.org/")
    with serving(config, models) as client:
        created = client.post("/jobs", data=FAST, headers=EVIL)
        job_id = created.json()["id"]
        assert created.headers["location"] == f"https://art.example.org/jobs/{job_id}"
        made = client.post("/generate", data=FAST, headers=EVIL)
        assert made.headers["x-image-url"].startswith("https://art.example.org/outputs/")


def test_e_mail_is_refused_without_a_public_url_and_the_start_says_so(
    tmp_path: Path,
    models: ModelCache,
    smtp_inbox: tuple[Inbox, int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, port = smtp_inbox
    config = smtp_config(tmp_path, port, public_url=None)
    with caplog.at_level(logging.WARNING), serving(config, models, paused=True) as client:
        field, message = error_of(
            client.post("/jobs", data={**FORM, "email": "ada@example.org"}, headers=EVIL)
        )
        assert field == "email" and "T2A_PUBLIC_URL" in message
        assert client.get("/info").json()["email_enabled"] is False
    assert any("e-mail is off" in r.message and "T2A_PUBLIC_URL" in r.message
               for r in caplog.records)  # fmt: skip


def test_the_e_mail_links_come_from_the_public_url_not_the_host(
    tmp_path: Path, models: ModelCache, smtp_inbox: tuple[Inbox, int]
) -> None:
    inbox, port = smtp_inbox
    with serving(smtp_config(tmp_path, port), models) as client:
        data = {**FAST, "email": "ada@example.org"}
        assert client.post("/jobs", data=data, headers=EVIL).status_code == 202
        wait_for(lambda: inbox.envelopes, what="the e-mail")
        body = inbox.message().get_body(("plain",))
        assert body is not None
        text = body.get_content()
        assert "https://art.example.org/jobs/" in text and "evil.example" not in text


# -- 6: connections: closed after a refusal, read deadlines, a cap ---------------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, models: ModelCache) -> Iterator[str]:
    """`text2art serve`'s own uvicorn (its options) with a key, a small body limit, a 1 s read
    timeout and at most 4 connections."""
    config = jobs_config(tmp_path_factory.mktemp("served"), host="127.0.0.1", port=free_port(),
                         api_keys=["k1"], max_request_bytes=100_000, read_timeout=1.0,
                         max_connections=4, run_worker_in_process=False)  # fmt: skip
    with serving_in_thread(serve, config=config):
        yield f"127.0.0.1:{config.port}"


def chunked_head(key: str | None) -> bytes:
    lines = ["POST /jobs HTTP/1.1", "Host: 127.0.0.1", "Transfer-Encoding: chunked",
             "Content-Type: multipart/form-data; boundary=zz"]  # fmt: skip
    lines += [f"Authorization: Bearer {key}"] if key else []
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def feed_until_closed(conn: socket.socket, chunk: bytes, most: int) -> tuple[bytes, int]:
    """Send `chunk` (framed) up to `most` times, reading what comes back; (answer, bytes sent)
    once the server closed the connection. Fails if it is still open after `most` chunks."""
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    answer, sent = b"", 0
    conn.setblocking(False)
    for _ in range(most):
        try:
            conn.sendall(framed)
            sent += len(framed)
        except BlockingIOError:
            pass  # the server reads no more: its window is full
        except OSError:  # reset: closed
            return answer, sent
        try:
            data = conn.recv(65536)
        except BlockingIOError:
            continue
        except OSError:
            return answer, sent
        if not data:  # EOF: closed
            return answer, sent
        answer += data
    raise AssertionError(f"still open after {sent} bytes; answered {answer[:200]!r}")


@pytest.mark.parametrize(("key", "status"), [(None, b" 401 "), ("k1", b" 413 ")])
def test_a_refused_chunked_body_closes_the_connection(
    served: str, key: str | None, status: bytes
) -> None:
    host, port = served.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        part = (
            b'--zz\r\nContent-Disposition: form-data; name="init_image"; filename="a.png"\r\n\r\n'
        )
        first = part + b"x" * 120_000  # over the limit of 100000 bytes (413 with the key)
        conn.sendall(chunked_head(key) + f"{len(first):x}\r\n".encode() + first + b"\r\n")
        answer = conn.recv(65536)  # the refusal, while the client still has body to send
        _, sent = feed_until_closed(conn, b"x" * 16384, most=100_000)  # up to 1.6 GB more
    assert status in answer.split(b"\r\n")[0] + b" " and b"connection: close" in answer.lower()
    assert sent < 50_000_000  # the server stopped reading long before


def closed_by_server(conn: socket.socket) -> bool:
    """Whether the server closes the connection (EOF) before the socket's own timeout."""
    try:
        return conn.recv(65536) == b"" or conn.recv(65536) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_slow_headers_are_cut_off(served: str) -> None:
    host, port = served.split(":")
    with socket.create_connection((host, int(port)), timeout=20) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never the blank line
        assert closed_by_server(conn)


def test_a_stalled_body_is_408_and_closed(served: str) -> None:
    host, port = served.split(":")
    head = (
        "POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer k1\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=20) as conn:
        conn.sendall(head.encode() + b"prompts=a")  # 9 of 100 bytes, then nothing
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 408 ") and b"T2A_READ_TIMEOUT" in data


def test_connections_over_the_cap_get_503(served: str) -> None:
    host, port = served.split(":")
    held = [socket.create_connection((host, int(port)), timeout=20) for _ in range(4)]
    try:
        for conn in held:
            conn.sendall(b"GET /healthz HTTP/1.1\r\n")  # open, headers unfinished
        answer = httpx.get(f"http://{served}/healthz")
        assert answer.status_code == 503
    finally:
        for conn in held:
            conn.close()
    wait_for(lambda: httpx.get(f"http://{served}/healthz").status_code == 200, what="room again")


def test_serve_sets_the_timeouts_and_the_cap(tmp_path: Path) -> None:
    config = ServiceConfig(output_dir=tmp_path, preload=False, read_timeout=7,
                           keep_alive_timeout=3, max_connections=50)  # fmt: skip
    options = server_options(config)
    assert options["timeout_keep_alive"] == 3 and options["limit_concurrency"] == 50
    assert issubclass(options["http"], HeaderDeadline) and options["http"].header_timeout == 7


# -- 7: client ids from X-Forwarded-For ---------------------------------------------------------
@pytest.mark.parametrize(
    "spellings",
    [
        ["203.0.113.7", "::ffff:203.0.113.7", "0xcb.0.113.7", "203.0.113.007", "3405803783"],
        ["2001:db8:1:2::5", "2001:DB8:1:2:0:0:0:5", "2001:0db8:0001:0002::5", "2001:db8:1:2::9"],
        ["garbage", "more-garbage", "1.2.3.4.5"],
    ],
    ids=["ipv4", "ipv6-by-64", "garbage"],
)
def test_every_spelling_of_one_forwarded_address_is_one_client(
    tmp_path: Path, models: ModelCache, spellings: list[str]
) -> None:
    config = jobs_config(tmp_path, host="127.0.0.1", port=free_port(), rate_limit=1,
                         trusted_proxies=["127.0.0.1"], run_worker_in_process=False)  # fmt: skip
    with serving_in_thread(serve, config=config), httpx.Client() as http:
        url = f"http://127.0.0.1:{config.port}/jobs"
        statuses = [
            http.post(url, data=FORM, headers={"X-Forwarded-For": spelling}).status_code
            for spelling in spellings
        ]
        other = http.post(url, data=FORM, headers={"X-Forwarded-For": "2001:db8:1:3::5"})
    assert statuses == [202] + [429] * (len(spellings) - 1)
    assert other.status_code == 202  # another /64 is another client


def test_client_addresses_are_canonical() -> None:
    assert client_address("::ffff:203.0.113.7") == client_address("203.0.113.007")
    assert client_address("2001:db8:1:2::5") == "2001:db8:1:2::/64"
    assert client_address("[fe80::1%eth0]") == "fe80::/64"
    assert client_address("garbage") == client_address(None) == "unknown"


# -- 8: SSRF: NAT64, multicast, reserved, IDN digits; no rebinding window ---------------------
@pytest.mark.parametrize(
    "url",
    [
        "http://[64:ff9b::7f00:1]/",  # NAT64 of 127.0.0.1
        "http://[64:ff9b::808:808]/",  # NAT64 of a public address: still a translator's choice
        "http://[64:ff9b:1::a00:1]/",  # local-use NAT64
        "http://224.0.0.1/",  # multicast
        "http://[ff02::1]/",
        "http://240.0.0.1/",  # reserved
        "http://255.255.255.255/",
        "http://１２７.０.０.１/",  # fullwidth digits: IDNA makes them 127.0.0.1
        "http://127。0。0。1/",  # ideographic full stops
        "http://１０.0.0.1:8080/hook",
    ],
)
def test_more_non_public_webhook_urls_are_422(tmp_path: Path, models: ModelCache, url: str) -> None:
    with serving(jobs_config(tmp_path), models, paused=True) as client:
        field, message = error_of(client.post("/jobs", data={**FORM, "webhook_url": url}))
    assert field == "webhook_url" and "NAT64" in message


@pytest.mark.parametrize(
    "address", ["64:ff9b::7f00:1", "224.0.0.1", "ff02::1", "240.0.0.1", "::ffff:224.0.0.1"]
)
def test_delivery_refuses_a_name_resolving_to_them(
    address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    answer = [(family, socket.SOCK_STREAM, 6, "", (address, 0))]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: answer)
    with pytest.raises(PermanentError, match="non-public address"):
        resolve_public("https://hooks.example.org/x")


class Receiver(BaseHTTPRequestHandler):
    """Counts POSTs (a service on the operator's loopback that a webhook must never reach)."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.posts += 1  # type: ignore[attr-defined]
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_delivery_connects_to_the_address_it_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name that resolves to a public address for the check and to 127.0.0.1 a moment later
    (DNS rebinding): the POST goes to the checked address, never to the loopback service."""
    inside = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    inside.posts = 0  # type: ignore[attr-defined]
    threading.Thread(target=inside.serve_forever, daemon=True).start()
    real, looked_up, connected = socket.getaddrinfo, [], []
    answers = iter(["93.184.216.34", "127.0.0.1", "127.0.0.1"])  # the check, then a rebind

    def rebinding(host: str, *args: Any, **kwargs: Any) -> Any:
        if host != "rebind.example":
            return real(host, *args, **kwargs)
        looked_up.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), 0))]

    def connect(address: tuple[str, int], *args: Any, **kwargs: Any) -> Any:
        connected.append(address)
        raise ConnectionRefusedError("no route in the test")

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    monkeypatch.setattr(socket, "create_connection", connect)
    url = f"http://rebind.example:{inside.server_address[1]}/hook"
    try:
        with pytest.raises(OSError):
            post_webhook(webhook_request(url, {"event": "job.finished"}, None), 2, False)
    finally:
        inside.shutdown()
    assert looked_up == ["rebind.example"]  # resolved once
    assert connected == [("93.184.216.34", inside.server_address[1])]
    assert inside.posts == 0  # type: ignore[attr-defined]


# -- 9: uploads: PNG, JPEG, WebP and GIF's first frame, nothing else ---------------------------
def image_file(fmt: str, frames: int = 1) -> bytes:
    """A 16x16 RGB picture in `fmt` (skips the test when this Pillow cannot write it)."""
    pictures = [Image.new("RGB", (16, 16), (40 * i, 90, 200)) for i in range(frames)]
    data = io.BytesIO()
    try:
        extra = {"save_all": True, "append_images": pictures[1:]} if frames > 1 else {}
        pictures[0].save(data, format=fmt, **extra)
    except (KeyError, OSError, ValueError) as exc:
        pytest.skip(f"this Pillow cannot write {fmt}: {exc}")
    return data.getvalue()


REFUSED = ["TIFF", "BMP", "ICO", "PCX", "PPM", "TGA", "SGI", "IM", "DDS", "JPEG2000", "AVIF", "QOI"]


@pytest.fixture(scope="module")
def uploads(tmp_path_factory: pytest.TempPathFactory, models: ModelCache) -> Iterator[TestClient]:
    with serving(jobs_config(tmp_path_factory.mktemp("uploads")), models, paused=True) as c:
        yield c


@pytest.mark.parametrize("fmt", REFUSED)
@pytest.mark.parametrize("field", ["init_image", "image_prompts"])
def test_other_upload_formats_are_422(uploads: TestClient, fmt: str, field: str) -> None:
    files = {field: (f"a.{fmt.lower()}", image_file(fmt), "application/octet-stream")}
    name, message = error_of(uploads.post("/jobs", data=FORM, files=files))
    assert name == field and "PNG, JPEG, WebP or GIF" in message


@pytest.mark.parametrize(("fmt", "frames"), [("PNG", 1), ("JPEG", 1), ("WEBP", 1), ("GIF", 3)])
def test_png_jpeg_webp_and_gif_are_accepted(uploads: TestClient, fmt: str, frames: int) -> None:
    files = {"init_image": (f"a.{fmt.lower()}", image_file(fmt, frames), "image/x")}
    answer = uploads.post("/jobs", data=FORM, files=files)
    assert answer.status_code == 202, answer.text


# -- 10: the published schema states the limits; Allow; a low T2A_MAX_ITERATIONS ----------------
def test_the_openapi_schema_states_this_servers_limits(tmp_path: Path, models: ModelCache) -> None:
    config = jobs_config(tmp_path, max_iterations=300, max_variations=3, max_scale=4.0,
                         max_pixels=128 * 128, max_upload_bytes=5000, max_frames=30)  # fmt: skip
    with serving(config, models, paused=True) as client:
        schema = client.get("/openapi.json").json()
    for path in ("/generate", "/jobs"):
        body = schema["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]
        name = body["schema"]["$ref"].rsplit("/", 1)[-1]
        form = schema["components"]["schemas"][name]["properties"]
        assert {"minimum": 1, "maximum": 300}.items() <= form["iterations"].items()
        assert form["variations"]["minimum"] == 1 and form["variations"]["maximum"] == 3
        assert form["scale"]["maximum"] == 4.0 and form["scale"]["exclusiveMinimum"] == 0
        assert "pattern" in form["size"] and "16384 pixels" in form["size"]["description"]
        assert form["seed"]["minimum"] == 0
        assert (form["frames"]["minimum"], form["frames"]["maximum"]) == (0, 30)
        assert (form["frame_iterations"]["minimum"], form["frame_iterations"]["maximum"]) == (
            1,
            300,
        )
        assert (form["fps"]["minimum"], form["fps"]["maximum"]) == (1, 60)  # engine.Settings'
        assert form["quality"]["enum"] == ["draft", "normal", "better", "best"]
        assert form["aspect"]["enum"] == ["widescreen", "portrait", "square"]
        assert {"image", "painting", "pixel art"} <= set(form["style"]["enum"])
        assert form["symmetry"]["enum"] == ["none", "horizontal", "vertical", "both"]
        assert {"adam", "rmsprop"} <= set(form["optimiser"]["enum"])
        assert "zoom" in form and "pattern" in form["zoom"]
        assert form["init_image"]["contentMediaType"] == "image/*"
        assert "5000 bytes" in form["image_prompts"]["description"]
        types = body["encoding"]["init_image"]["contentType"]
        assert types == "image/png, image/jpeg, image/webp, image/gif"
        # A form cannot send null: a field is left out instead, never published as nullable.
        assert not [f for f, v in form.items() if "null" in json.dumps(v.get("anyOf", []))]
    jobs_form = schema["components"]["schemas"][name]["properties"]
    assert jobs_form["webhook_url"]["format"] == "uri" and jobs_form["email"]["format"] == "email"


@pytest.mark.parametrize("keys", [[], ["k1"]])
def test_the_schema_asks_for_a_key_only_where_keys_are_on(
    tmp_path: Path, models: ModelCache, keys: list[str]
) -> None:
    with serving(jobs_config(tmp_path, api_keys=keys), models, paused=True) as client:
        schema = client.get("/openapi.json", headers={"Authorization": "Bearer k1"}).json()
    asked = schema["paths"]["/generate"]["post"].get("security")
    assert asked == ([{"HTTPBearer": []}] if keys else None)
    assert ("securitySchemes" in schema.get("components", {})) is bool(keys)


@pytest.mark.parametrize("field", ["zoom", "angle", "translate_x"])
def test_a_camera_moves_published_pattern_is_what_the_engine_reads(field: str) -> None:
    import re

    from engine import schedule_pattern
    from engine.camera import parse_schedule

    pattern = re.compile(schedule_pattern(field))
    for text in ["1", "1.04", " 0.5 ", "0:(1.0), 30:(1.04)", "0: (1.2),10:(.9)", "1.", "+1"]:
        assert pattern.match(text), text
        parse_schedule(text, field)  # the engine reads it too
    assert pattern.match("2e-1")  # a form the engine reads, though a zoom's bounds refuse it
    for text in ["", "x", "1,", "0:(1.0),", "0:1.0", "(1.0)", "1 2", "0:(1.0) 30:(1.1)"]:
        assert not pattern.match(text), text
        with pytest.raises(ValueError):
            parse_schedule(text, field)
    assert bool(pattern.match("-1")) is (field != "zoom")  # a zoom is never negative


def test_allow_names_every_method_of_a_job(client: TestClient) -> None:
    options = client.options(f"/jobs/{'7' * 32}")
    assert options.status_code == 204 and options.headers["allow"] == "DELETE, GET, OPTIONS"
    wrong = client.put(f"/jobs/{'7' * 32}")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "DELETE, GET, OPTIONS"
    assert client.get("/generate").headers["allow"] == "OPTIONS, POST"


def test_a_low_max_iterations_cuts_the_default_and_refuses_more(
    tmp_path: Path, models: ModelCache
) -> None:
    without = {k: v for k, v in FORM.items() if k != "iterations"}
    with serving(jobs_config(tmp_path, max_iterations=2), models, paused=True) as client:
        made = client.post("/generate", data=without)
        assert made.status_code == 200, made.text
        assert json.loads(made.headers["x-settings"])["iterations"] == 2  # the draft's 200, cut
        field, message = error_of(client.post("/generate", data={**without, "iterations": "3"}))
        assert field == "iterations" and "between 1 and 2" in message


def test_a_low_max_pixels_cuts_the_default_size_and_refuses_more(
    tmp_path: Path, models: ModelCache
) -> None:
    without = {k: v for k, v in FAST.items() if k != "size"}
    with serving(jobs_config(tmp_path, max_pixels=40 * 40), models, paused=True) as client:
        made = client.post("/generate", data={**without, "aspect": "widescreen"})
        assert made.status_code == 200, made.text
        w, h = json.loads(made.headers["x-settings"])["size"]
        assert w * h <= 40 * 40 and w > h  # the card's 2.5 x widescreen, shrunk, same shape
        field, message = error_of(client.post("/generate", data={**without, "scale": "2.5"}))
        assert field == "size" and "at most 1600" in message  # an asked-for scale is checked


# -- 11: a busy node stays ready; /metrics off the public port or behind the key ----------------
def test_a_node_whose_gpu_line_is_full_stays_ready(tmp_path: Path, models: ModelCache) -> None:
    app = create_app(jobs_config(tmp_path, max_waiting=0), models=models)
    with running(app) as url:
        with app.state.gpu.slot():  # a run holds the GPU and nobody may wait
            ready = httpx.get(f"{url}/readyz")
            refused = httpx.post(f"{url}/generate", data=FAST)
        assert ready.status_code == 200
        assert ready.json()["ready"] is True and ready.json()["busy"] is True
        assert ready.json()["full"] is True and refused.status_code == 503


def test_metrics_move_to_their_own_port(tmp_path: Path, models: ModelCache) -> None:
    config = jobs_config(tmp_path, metrics_port=free_port())
    with running(create_app(config, models=models)) as url:
        public = httpx.get(f"{url}/metrics")
        private = httpx.get(f"http://127.0.0.1:{config.metrics_port}/metrics")
        ready = httpx.get(f"http://127.0.0.1:{config.metrics_port}/readyz")
    assert public.status_code == 404 and "T2A_METRICS_PORT" in public.text
    assert private.status_code == 200 and "text2art_" in private.text
    assert ready.status_code == 200


def test_metrics_need_the_key_when_keys_are_on(tmp_path: Path, models: ModelCache) -> None:
    with running(create_app(jobs_config(tmp_path, api_keys=["k1"]), models=models)) as url:
        anonymous = httpx.get(f"{url}/metrics")
        keyed = httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer k1"})
    assert anonymous.status_code == 401
    assert keyed.status_code == 200 and "text2art_" in keyed.text
