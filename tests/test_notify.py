"""E-mail through a real SMTP server on 127.0.0.1 (aiosmtpd), signed webhooks to a local HTTP
server, retries with backoff, and header injection."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import time
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    Inbox,
    add_job,
    jobs_config,
    serving,
    smtp_config,
    smtp_server,
    submit,
    wait_for,
)
from PIL import Image

import api.jobs.notify as notify
import api.jobs.outbox as outbox
from api.jobs.notify import (
    SIGNATURE_HEADER,
    Notice,
    PermanentError,
    build_email,
    check_public_host,
    post_webhook,
    send_email,
    webhook_request,
)
from api.jobs.outage import Outages
from api.jobs.outbox import OutboxSender
from api.jobs.store import FAILED, JobStore
from api.services import build_services
from engine import ModelCache, Settings, resolve


@pytest.fixture
def smtp(smtp_inbox: tuple[Inbox, int]) -> tuple[Inbox, int]:
    """The SMTP inbox, busy (451) for the first message."""
    smtp_inbox[0].busy = 1
    return smtp_inbox


def test_result_email_with_png_and_mp4_over_real_smtp(
    smtp: tuple[Inbox, int], tmp_path: Path, models: ModelCache
) -> None:
    inbox, port = smtp
    with serving(smtp_config(tmp_path, port), models) as client:
        job = submit(client, iterations=10, make_video="true", email="Ada@Example.org")
        done = wait_for(lambda: (j := client.get(f"/jobs/{job['id']}").json())["notifications"]
                        ["email"] not in (None, "pending") and j)  # fmt: skip
    assert done["status"] == "succeeded" and done["notifications"]["email"] == "sent"
    assert len(inbox.envelopes) == 1  # the first try got 451 and was retried
    assert inbox.envelopes[0].rcpt_tos == ["Ada@example.org"]  # normalised domain
    msg = inbox.message()
    assert msg["To"] == "Ada@example.org" and msg["From"] == "text2art <art@example.org>"
    assert msg["Subject"] == 'text2art: "a castle" is ready'
    body = msg.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "Prompt: a castle" in text and "pixel art, draft, square" in text
    assert f"Attached: {job['id']}.png, {job['id']}.mp4." in text
    assert f"Job: https://art.example.org/jobs/{job['id']}" in text
    files = {part.get_filename(): part for part in msg.iter_attachments()}
    assert set(files) == {f"{job['id']}.png", f"{job['id']}.mp4"}
    png = files[f"{job['id']}.png"]
    assert png.get_content_type() == "image/png"
    assert Image.open(io.BytesIO(png.get_content())).size == (32, 32)
    mp4 = files[f"{job['id']}.mp4"]
    assert mp4.get_content_type() == "video/mp4"
    assert mp4.get_content() == (tmp_path / f"{job['id']}.mp4").read_bytes()


def test_failure_email_says_why(smtp: tuple[Inbox, int], tmp_path: Path) -> None:
    inbox, port = smtp
    inbox.busy = 0
    service = build_services(smtp_config(tmp_path, port)).jobs
    service.start(run_worker=False)  # the database and queue, no worker
    try:
        settings = resolve(Settings.create(prompts="a castle", style="pixel art", size=(32, 32)))
        job, _ = service.submit("1" * 32, settings, {}, email="ada@example.org")
        assert service.store.claim(job.id, "me") is not None
        service.store.finish(job.id, "me", FAILED, error="the GPU ran out of memory; try less")
        service.notify(job.id)
        wait_for(lambda: inbox.envelopes)
    finally:
        service.stop()
    msg = inbox.message()
    assert msg["Subject"] == 'text2art: "a castle" failed'
    assert not list(msg.iter_attachments())
    body = msg.get_body(("plain",))
    assert body is not None
    assert "could not be made: the GPU ran out of memory; try less" in body.get_content()


def test_prompt_cannot_inject_headers(smtp: tuple[Inbox, int], tmp_path: Path) -> None:
    inbox, port = smtp
    inbox.busy = 0
    prompt = "a castle\r\nBcc: victim@example.org\r\nX-Evil: 1\n\nhello"
    notice = Notice("2" * 32, "succeeded", prompt, "pixel art", {"job": "https://x/jobs/2"})
    msg = build_email(notice, "art@example.org", "ada@example.org", 1000)
    assert msg["Subject"] == 'text2art: "a castle Bcc: victim@example.org X-Evil: 1 hello" is ready'
    send_email(msg, smtp_config(tmp_path, port))
    received = inbox.message()
    assert inbox.envelopes[0].rcpt_tos == ["ada@example.org"]
    assert received["Bcc"] is None and received["X-Evil"] is None
    assert "\n" not in received["Subject"] and "\r" not in received["Subject"]
    with pytest.raises(ValueError):  # EmailMessage itself refuses a header with a line break
        EmailMessage()["Subject"] = prompt


def test_large_files_are_linked_not_attached(tmp_path: Path) -> None:
    (tmp_path / "j.png").write_bytes(b"\x89PNG small")
    (tmp_path / "j.mp4").write_bytes(b"\0" * 5000)
    files = {"png": tmp_path / "j.png", "mp4": tmp_path / "j.mp4"}
    links = {"job": "https://x/jobs/j", "video": "https://x/outputs/j.mp4"}
    notice = Notice("j", "succeeded", "a castle", "pixel art", links, files=files)
    msg = build_email(notice, "art@example.org", "ada@example.org", max_attachment=1000)
    assert [part.get_filename() for part in msg.iter_attachments()] == ["j.png"]
    body = msg.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "Attached: j.png." in text and "Video: https://x/outputs/j.mp4" in text


class FakeSMTP:
    """Records the calls `send_email` makes."""

    calls: list[str] = []

    def __init__(self, host: str, port: int, **kwargs: Any):
        self.calls.append(f"{type(self).__name__} {host}:{port}")

    def __enter__(self) -> FakeSMTP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.calls.append("quit")

    def starttls(self, **kwargs: Any) -> None:
        self.calls.append("starttls")

    def login(self, user: str, password: str) -> None:
        self.calls.append(f"login {user} {password}")

    def send_message(self, msg: EmailMessage) -> None:
        self.calls.append(f"send {msg['To']}")


class FakeSMTP_SSL(FakeSMTP):  # noqa: N801 (named after smtplib's class)
    pass


@pytest.mark.parametrize(
    ("security", "user", "expected"),
    [
        (
            "starttls",
            "me",
            ["FakeSMTP mail:587", "starttls", "login me pw", "send a@b.org", "quit"],
        ),
        ("ssl", "me", ["FakeSMTP_SSL mail:587", "login me pw", "send a@b.org", "quit"]),
        ("none", None, ["FakeSMTP mail:587", "send a@b.org", "quit"]),
    ],
)
def test_smtp_security_and_login(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, security: str, user: str | None,
    expected: list[str],
) -> None:  # fmt: skip
    monkeypatch.setattr(notify.smtplib, "SMTP", FakeSMTP)
    monkeypatch.setattr(notify.smtplib, "SMTP_SSL", FakeSMTP_SSL)
    monkeypatch.setattr(FakeSMTP, "calls", [])
    config = jobs_config(tmp_path, smtp_host="mail", smtp_security=security, smtp_user=user,
                         smtp_password="pw")  # fmt: skip
    msg = EmailMessage()
    msg["To"] = "a@b.org"
    send_email(msg, config)
    assert FakeSMTP.calls == expected


def run_notifier(send: Any, tmp_path: Path, attempts: int = 3) -> tuple[str, list[float]]:
    """Deliver one job's e-mail row through a running outbox sender whose delivery is `send`
    (called with the try's number); returns the job's final e-mail state and when each try
    began (the row counts the same tries)."""
    store = JobStore(f"sqlite:///{tmp_path / f'{uuid.uuid4().hex}.db'}").open()
    job_id = uuid.uuid4().hex
    add_job(store, job_id, email="ada@example.org")
    assert store.claim(job_id, "me") is not None and store.finish(job_id, "me", FAILED)
    began: list[float] = []

    def compose(job: Any, kind: str) -> Any:
        assert (job.id, kind) == (job_id, "email")
        return lambda: (began.append(time.monotonic()), send(len(began)))

    config = jobs_config(tmp_path, notify_attempts=attempts, notify_backoff=BACKOFF)
    sender = OutboxSender(store, config, compose, Outages(), "me", kinds=["email"], poll=5)
    sender.start()
    try:
        job = wait_for(lambda: (j := store.get(job_id)) and j.email_state != "pending" and j)
    finally:
        sender.stop()
        store.close()
    return job.email_state, began


BACKOFF = 0.05


def test_outbox_retries_with_backoff_and_never_raises(tmp_path: Path) -> None:
    def flaky(n: int) -> None:
        if n < 3:
            raise OSError("connection refused")

    def broken(n: int) -> None:
        raise OSError("connection refused")

    def refused(n: int) -> None:
        raise PermanentError("the server refused the address")

    state, began = run_notifier(flaky, tmp_path)
    assert (state, len(began)) == ("sent", 3)
    gaps = [b - a for a, b in zip(began, began[1:], strict=False)]
    assert gaps[0] >= BACKOFF and gaps[1] >= 2 * BACKOFF  # doubled after each failure
    assert gaps[1] < 5  # woken for the retry, not at the next poll
    state, began = run_notifier(broken, tmp_path)
    assert (state, len(began)) == ("failed after 3 tries: connection refused", 3)
    state, began = run_notifier(refused, tmp_path)
    assert (state, len(began)) == ("failed: the server refused the address", 1)


def test_webhook_is_signed_and_retried(hooks: Any, tmp_path: Path, models: ModelCache) -> None:
    hooks.statuses = [500]
    url = f"http://127.0.0.1:{hooks.server_address[1]}/hook"
    config = jobs_config(tmp_path, webhook_secret="s3cret", webhook_allow_private=True)
    with serving(config, models) as client:
        job = submit(client, iterations=3, webhook_url=url)
        done = wait_for(lambda: (j := client.get(f"/jobs/{job['id']}").json())["notifications"]
                        ["webhook"] not in (None, "pending") and j)  # fmt: skip
    assert done["notifications"]["webhook"] == "sent" and len(hooks.received) == 2
    (first, _), (headers, body) = hooks.received
    assert first["X-Text2Art-Delivery"] == headers["X-Text2Art-Delivery"]  # same delivery, again
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers[SIGNATURE_HEADER], expected)
    assert headers["Content-Type"] == "application/json"
    payload = json.loads(body)
    assert payload["event"] == "job.finished" and payload["job"]["id"] == job["id"]
    assert payload["job"]["status"] == "succeeded"
    assert payload["job"]["links"]["image"].endswith(f"/outputs/{job['id']}.png")
    assert "webhook_url" not in body.decode() and "delete_token" not in body.decode()


def test_webhook_without_secret_has_no_signature(hooks: Any) -> None:
    url = f"http://127.0.0.1:{hooks.server_address[1]}/hook"
    post_webhook(webhook_request(url, {"event": "job.finished"}, None), 5, allow_private=True)
    headers, body = hooks.received[0]
    assert SIGNATURE_HEADER not in headers and json.loads(body) == {"event": "job.finished"}


def test_webhook_refuses_private_hosts_redirects_and_4xx(hooks: Any) -> None:
    url = f"http://127.0.0.1:{hooks.server_address[1]}/hook"
    req = webhook_request(url, {"event": "job.finished"}, "s")
    with pytest.raises(PermanentError, match="non-public address 127.0.0.1"):
        post_webhook(req, 5, allow_private=False)
    with pytest.raises(PermanentError, match="non-public"):
        check_public_host("http://localhost/hook")
    assert hooks.received == []
    hooks.statuses = [302, 404, 503]
    with pytest.raises(PermanentError, match="HTTP 302"):  # never follows a redirect
        post_webhook(req, 5, allow_private=True)
    with pytest.raises(PermanentError, match="HTTP 404"):
        post_webhook(req, 5, allow_private=True)
    with pytest.raises(OSError, match="HTTP 503"):  # retried by the notifier
        post_webhook(req, 5, allow_private=True)
    assert len(hooks.received) == 3


# -- internationalised addresses and permanent SMTP errors ----------------------------------
class Rejecting(Inbox):
    """Answers every DATA with a permanent 550; counts the tries."""

    def __init__(self) -> None:
        super().__init__()
        self.tries = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.tries += 1
        return "550 5.7.1 message refused"


def plain_email(to: str) -> EmailMessage:
    notice = Notice("4" * 32, "succeeded", "a cat", "pixel art", {"job": "https://x.org/j"})
    return build_email(notice, "text2art <art@example.org>", to, 10_000)


def deliver(port: int, to: str, tmp_path: Path) -> tuple[str, int]:
    config = smtp_config(tmp_path, port)
    state, began = run_notifier(lambda n: send_email(plain_email(to), config), tmp_path)
    return state, len(began)


def test_international_address_is_sent_with_smtputf8(tmp_path: Path) -> None:
    inbox = Inbox()
    with smtp_server(inbox, smtputf8=True) as port:
        assert deliver(port, "用户@例子.广告", tmp_path) == ("sent", 1)
    assert inbox.envelopes[0].rcpt_tos == ["用户@例子.广告"]
    assert "SMTPUTF8" in [o.upper() for o in inbox.envelopes[0].mail_options]


def test_international_address_without_smtputf8_fails_once_not_retried(tmp_path: Path) -> None:
    inbox = Inbox()
    with smtp_server(inbox, smtputf8=False) as port:
        state, tries = deliver(port, "用户@例子.广告", tmp_path)
    assert tries == 1 and state.startswith("failed: the mail server cannot take this address")
    assert inbox.envelopes == []


def test_permanent_smtp_error_is_not_retried(tmp_path: Path) -> None:
    handler = Rejecting()
    with smtp_server(handler, smtputf8=False) as port:
        state, tries = deliver(port, "ada@example.org", tmp_path)
    assert (tries, handler.tries) == (1, 1)
    assert state.startswith("failed: the server refused the message") and "550" in state


def test_international_domain_is_stored_in_ascii(tmp_path: Path, models: ModelCache) -> None:
    """Any server takes a punycode domain; only a non-ASCII local part needs SMTPUTF8."""
    inbox = Inbox()
    with smtp_server(inbox, smtputf8=False) as port:
        config = smtp_config(tmp_path, port, run_worker_in_process=False)
        with serving(config, models) as client:
            r = client.post("/jobs", data={"prompts": "a cat", "email": "ada@bücher.example"})
            assert r.status_code == 202, r.text
            job = client.app.state.jobs.get(r.json()["id"])  # type: ignore[attr-defined]
    assert job.email == "ada@xn--bcher-kva.example"


def test_a_database_blip_right_after_the_end_sends_each_notice_once(
    hooks: Any, smtp: tuple[Inbox, int], tmp_path: Path, models: ModelCache,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from sqlalchemy.exc import OperationalError

    inbox, port = smtp
    inbox.busy = 0
    url = f"http://127.0.0.1:{hooks.server_address[1]}/hook"
    config = smtp_config(tmp_path, port, webhook_allow_private=True, clip_models=["tiny-random"],
                         cutouts=4, device="cpu", preload=False)  # fmt: skip
    service = build_services(config, models=models).jobs
    service.start(run_worker=False)
    store, blips = service.store, []
    settle = outbox.settle

    def blip_once(store: JobStore, lease: Any, *args: Any) -> bool:
        done = settle(store, lease, *args)
        if lease.kind == "webhook" and not blips:  # recorded, but the reply is lost in a blip
            blips.append(lease)
            raise OperationalError("UPDATE", {}, Exception("server closed the connection"))
        return done

    monkeypatch.setattr(outbox, "settle", blip_once)
    try:
        settings = resolve(Settings.create(prompts="a castle", style="pixel art", size=(32, 32)))
        run = settings.model_copy(update={"iterations": 2, "clip_models": ["tiny-random"]})
        job, _ = service.submit("2" * 32, run, {}, email="ada@example.org", webhook_url=url)
        service.runner.run(job.id)  # claims, runs, records the end, then sends its notices
        wait_for(lambda: inbox.envelopes and hooks.received, what="the e-mail and the webhook")
        final = wait_for(lambda: (j := store.get(job.id)) and j.webhook_state == j.email_state
                         == "sent" and j)  # fmt: skip
        service.notify(job.id)  # told again (the worker retries it through a blip): nothing new
        wait_for(lambda: service.outbox.drain() == 0, what="no row left to send")
    finally:
        service.stop()
    assert blips and final.status == "succeeded" and final.email_state == "sent"
    assert len(inbox.envelopes) == 1 and len(hooks.received) == 1  # each once, none lost
