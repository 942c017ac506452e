"""A real S3-compatible server on loopback for the storage tests: moto's standalone server
(`moto[server]`) started as a subprocess on a free 127.0.0.1 port, and a TCP proxy in front of
it that cuts a connection after so many request bytes (a storage failure mid-upload)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import wait_for
from servers import free_port

# Credentials for the test server only; no AWS variable of the machine is read.
TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


def new_bucket(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new bucket on the test server; this process gets the server's credentials."""
    for name, value in TEST_ENV.items():
        monkeypatch.setenv(name, value)
    name = f"t2a-{uuid.uuid4().hex[:12]}"
    s3_client(endpoint).create_bucket(Bucket=name)
    return name


@contextlib.contextmanager
def moto_server(log_dir: Path, timeout: float = 30.0) -> Iterator[str]:
    """Run moto's server on 127.0.0.1; yields its endpoint URL, stops it after."""
    port = free_port()
    log = (log_dir / "moto.log").open("wb")
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(endpoint, process, timeout)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def _wait_until_up(endpoint: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
                return True
        except OSError:
            return False

    wait_for(up, timeout, "moto server up")


def s3_client(endpoint: str):  # type: ignore[no-untyped-def]
    """A plain boto3 client of the test server (to look at the bucket behind the store)."""
    from api.storage_s3 import make_client

    return make_client(endpoint, "us-east-1")


def keys(client, bucket: str) -> list[str]:  # type: ignore[no-untyped-def]
    """Every object key in the bucket."""
    listing = client.list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []))


class CuttingProxy:
    """127.0.0.1 TCP proxy to `upstream_port` that closes any connection whose request bytes
    pass `cut_after` (small requests go through, a large upload dies half-way)."""

    def __init__(self, upstream_port: int, cut_after: int):
        self.upstream_port, self.cut_after = upstream_port, cut_after
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.cuts = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.listener.close()
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._up, args=(client, upstream), daemon=True).start()
            threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()

    def _up(self, client: socket.socket, upstream: socket.socket) -> None:
        sent = 0
        while data := _recv(client):
            sent += len(data)
            if sent > self.cut_after:
                self.cuts += 1
                break
            upstream.sendall(data)
        for sock in (client, upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _pump(source: socket.socket, target: socket.socket) -> None:
    while data := _recv(source):
        try:
            target.sendall(data)
        except OSError:
            return
