"""Issue 30, points 4-11: what a second attack pass on a public server found, each on a real
server (the app's lifespan through TestClient, or uvicorn on a free port)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from helpers import FORM, Inbox, error_of, jobs_config, serving, smtp_config, wait_for

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
