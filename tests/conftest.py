"""Shared fixtures: one model cache for the whole session (the tiny CLIP loads once), the jobs
service's client, an SMTP inbox, a webhook receiver, a bucket on a module's S3 server, and the
real Redis and PostgreSQL servers (servers.py). Plain helpers are in helpers.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster import cluster  # noqa: F401 (a fixture: the scale-out deployment)
from fastapi.testclient import TestClient
from helpers import Inbox, jobs_config, serving, smtp_server, webhook_server
from s3_server import new_bucket
from servers import postgres_cluster, postgres_db, redis_server  # noqa: F401 (fixtures)

from engine import ModelCache


@pytest.fixture(scope="session")
def models() -> ModelCache:
    return ModelCache()


@pytest.fixture
def client(tmp_path: Path, models: ModelCache) -> Iterator[TestClient]:
    """The jobs service on tiny models with its in-process worker, outputs in `tmp_path`
    (a module that tests another app defines its own `client`)."""
    with serving(jobs_config(tmp_path), models) as c:
        yield c


@pytest.fixture
def smtp_inbox() -> Iterator[tuple[Inbox, int]]:
    """An SMTP server on 127.0.0.1 that keeps every message: (its inbox, its port)."""
    inbox = Inbox()
    with smtp_server(inbox) as port:
        yield inbox, port


@pytest.fixture
def hooks() -> Iterator[Any]:
    """A webhook receiver on 127.0.0.1 (`helpers.Hooks`): what it got, and the statuses to
    answer first."""
    with webhook_server() as server:
        yield server


@pytest.fixture
def bucket(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new bucket on the module's S3 server (its `endpoint` fixture); this process gets the
    test server's credentials."""
    return new_bucket(endpoint, monkeypatch)
