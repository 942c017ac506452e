"""Notifications when a job ends: e-mail (smtplib, STARTTLS or SSL) and signed JSON webhooks.

Each function here sends once; the outbox sender (`api.jobs.outbox`) runs them in the background,
retries them with exponential backoff and records their states. A delivery never changes the
job's outcome: a job that succeeded stays succeeded when its e-mail bounces. Headers are
built with `email.message.EmailMessage`, which refuses CR/LF in header values; the prompt only
reaches the Subject with control characters removed.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import re
import smtplib
import socket
import ssl
import urllib.request
import uuid
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from email_validator import EmailNotValidError, validate_email

from api.config import JobsConfig
from engine.errors import SettingsError

SIGNATURE_HEADER = "X-Text2Art-Signature"
DELIVERY_HEADER = "X-Text2Art-Delivery"
MAX_URL_CHARS = 2000
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_MEDIA = {"png": ("image", "png"), "mp4": ("video", "mp4"), "svg": ("image", "svg+xml")}


class PermanentError(Exception):
    """A delivery that no retry can fix (bad address, webhook refused with 4xx)."""


@dataclass
class Notice:
    """What a notification says about a finished job."""

    job_id: str
    status: str  # succeeded | failed | cancelled
    prompt: str
    summary: str  # "pixel art, draft, seed 7, 32x32"
    links: dict[str, str]  # job, image, video, ...
    error: str | None = None
    files: dict[str, Path] = field(default_factory=dict)  # attachments by output key


# -- e-mail --------------------------------------------------------------------------------
def subject_text(text: str, limit: int = 60) -> str:
    """One header-safe line: control characters (CR, LF, ...) become spaces, then trimmed."""
    line = " ".join(_CONTROL.sub(" ", text).split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def email_text(notice: Notice, attached: list[str]) -> tuple[str, str]:
    """Subject and plain-text body of the e-mail for a finished job."""
    prompt = subject_text(notice.prompt)
    lines = [f"Prompt: {notice.prompt}", f"Settings: {notice.summary}"]
    lines += [f"{name.capitalize()}: {url}" for name, url in notice.links.items()]
    details = "\n".join(lines)
    if notice.status == "succeeded":
        names = ", ".join(attached) or "nothing (the files are linked above)"
        body = f"Your picture is ready.\n\n{details}\n\nAttached: {names}.\n"
        return f'text2art: "{prompt}" is ready', body
    reason = notice.error or f"the job ended as {notice.status}"
    body = f"Your picture could not be made: {reason}\n\n{details}\n\nYou may submit it again.\n"
    return f'text2art: "{prompt}" failed', body


def build_email(notice: Notice, sender: str, to: str, max_attachment: int) -> EmailMessage:
    """The message with the result attached (files over `max_attachment` bytes are left out).
    Its Message-ID, `<job id>.email@text2art`, is the same every time (a dedupe key)."""
    files = {e: p for e, p in notice.files.items() if p.is_file()}
    files = {e: p for e, p in files.items() if p.stat().st_size <= max_attachment}
    subject, body = email_text(notice, [p.name for p in files.values()])
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg["Message-ID"] = f"<{notice.job_id}.email@text2art>"
    msg.set_content(body)
    for key, path in files.items():  # 'png', 'mp4' or '2.png' (a picture of a batch)
        maintype, subtype = _MEDIA[key.rpartition(".")[2]]
        data = path.read_bytes()
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=path.name)
    return msg


def send_email(msg: EmailMessage, config: JobsConfig) -> None:
    """Send through the configured SMTP server (STARTTLS, SSL or plain), logging in if set."""
    assert config.smtp_host is not None
    host, port, timeout = config.smtp_host, config.smtp_port, config.smtp_timeout
    context = ssl.create_default_context()
    smtp: smtplib.SMTP
    if config.smtp_security == "ssl":
        smtp = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
    else:
        smtp = smtplib.SMTP(host, port, timeout=timeout)
    with smtp:
        if config.smtp_security == "starttls":
            smtp.starttls(context=context)
        if config.smtp_user:
            smtp.login(config.smtp_user, config.smtp_password or "")
        try:
            smtp.send_message(msg)  # SMTPUTF8 when an address needs it and the server offers it
        except smtplib.SMTPNotSupportedError as exc:
            raise PermanentError(f"the mail server cannot take this address ({exc})") from None
        except smtplib.SMTPRecipientsRefused as exc:
            if all(code >= 500 for code, _ in exc.recipients.values()):
                raise PermanentError(f"the server refused the address ({exc})") from None
            raise
        except smtplib.SMTPResponseException as exc:
            if exc.smtp_code >= 500:  # 5xx is permanent (RFC 5321 4.2.1); 4xx is retried
                raise PermanentError(f"the server refused the message ({exc})") from None
            raise


# -- webhooks ------------------------------------------------------------------------------
def sign(body: bytes, secret: str) -> str:
    """`sha256=<hex HMAC-SHA256 of the body>`, GitHub's webhook signature format."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_request(
    url: str, payload: dict[str, Any], secret: str | None, delivery: str | None = None
) -> urllib.request.Request:
    """The POST request: JSON body, event and delivery headers, signature when a secret is set.
    `delivery` (default: a fresh id) is the X-Text2Art-Delivery header, a receiver's dedupe key."""
    body = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "text2art-webhook",
        "X-Text2Art-Event": str(payload.get("event", "job.finished")),
        DELIVERY_HEADER: delivery or uuid.uuid4().hex,
    }
    if secret:
        headers[SIGNATURE_HEADER] = sign(body, secret)
    return urllib.request.Request(url, data=body, headers=headers, method="POST")


# NAT64 (RFC 6052 well-known and RFC 8215 local-use): a translator turns them into any IPv4
# address, internal ones included, so none is a public destination.
NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))


def public_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether a webhook may go to `ip`: global unicast, not reserved, not NAT64, and so is any
    IPv4 address it embeds (mapped, IPv4-compatible `::a.b.c.d`, 6to4, Teredo)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if any(ip in net for net in NAT64):
            return False
        embedded = [ip.ipv4_mapped, ip.sixtofour, ip.teredo[1] if ip.teredo else None]
        if int(ip) >> 32 == 0:  # ::a.b.c.d, the deprecated IPv4-compatible form
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if any(v4 is not None and not public_ip(v4) for v4 in embedded):
            return False
    return ip.is_global and not (ip.is_multicast or ip.is_reserved)


def resolve_public(url: str, allow_private: bool = False) -> str:
    """The address a webhook to `url` connects to: its host resolved once, every address
    checked (PermanentError when one is loopback, private, reserved, multicast or NAT64,
    unless `allow_private`). The delivery connects to this address and no other, so a name
    that resolves differently a moment later (DNS rebinding) cannot send it elsewhere."""
    try:
        host = ascii_host(urlsplit(url).hostname or "")
    except ValueError as exc:
        raise PermanentError(f"not a valid URL ({exc})") from None
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise OSError(f"cannot resolve {host!r} ({exc})") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    for ip in addresses if not allow_private else []:
        if not public_ip(ip):
            raise PermanentError(f"{host} resolves to the non-public address {ip}")
    if not addresses:
        raise OSError(f"{host!r} resolves to no address")
    return str(addresses[0])


def check_public_host(url: str) -> None:
    """PermanentError when the URL's host resolves to a non-public address."""
    resolve_public(url)


def ascii_host(host: str) -> str:
    """The host as a resolver sees it: IDNA (so `１２７．０．０．１` and `127。0。0。1` are
    127.0.0.1, as getaddrinfo would read them); ValueError when it has no such form."""
    try:
        return host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise ValueError(f"{host!r} is not a valid host name") from None


# -- the addresses a client gives (checked when the job is submitted) --------------------------
def check_email(value: str | None) -> str | None:
    """The normalised address, None when empty; 422 naming `email` when invalid."""
    if value is None or not value.strip():
        return None
    try:
        checked = validate_email(value.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise SettingsError("email", f"not a valid e-mail address: {exc}") from None
    # An internationalised domain goes out in its ASCII form (any server takes it); only a
    # non-ASCII local part needs a server that offers SMTPUTF8.
    return checked.ascii_email or checked.normalized


def check_webhook_url(value: str | None, allow_private: bool = True) -> str | None:
    """An http(s) URL with a host, None when empty; 422 naming `webhook_url` otherwise."""
    if value is None or not value.strip():
        return None
    url = value.strip()
    try:
        parts = urlsplit(url)
        scheme, host, _ = parts.scheme, parts.hostname, parts.port  # ValueError when malformed
    except ValueError:
        scheme, host = "", None
    if len(url) > MAX_URL_CHARS or scheme not in ("http", "https") or not host:
        raise SettingsError(
            "webhook_url", f"expected an http:// or https:// URL of at most {MAX_URL_CHARS} chars"
        )
    if "@" in parts.netloc:  # a password would be kept in the job's record and its errors
        raise SettingsError(
            "webhook_url", "a user name or password in the URL (user:pass@host) is not "
            "allowed; sign webhooks with the server's T2A_WEBHOOK_SECRET instead",
        )  # fmt: skip
    if not allow_private and not public_host(host):
        raise SettingsError(
            "webhook_url", "webhooks to loopback, private, reserved, multicast, NAT64 or local "
            "addresses are not allowed",
        )  # fmt: skip
    return url


def public_host(host: str) -> bool:
    """False for every spelling of a non-public address (checked again when it is resolved),
    Unicode digits and dots included, and for a host with no IDNA form."""
    try:
        host = ascii_host(host).rstrip(".")
    except ValueError:
        return False
    try:
        return public_ip(ipaddress.ip_address(host))
    except ValueError:
        pass
    if host == "localhost" or host.endswith(".localhost") or "." not in host:
        return False  # a single label resolves only on a local network (or is a number)
    try:  # the legacy forms getaddrinfo also reads: 127.1, 0x7f.0.0.1, 0177.0.0.1
        return public_ip(ipaddress.IPv4Address(socket.inet_aton(host)))
    except OSError:
        return True  # a name: checked again when it is resolved at delivery


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to one checked address, whatever the name resolves to now."""

    def __init__(self, host: str, address: str, **kwargs: Any):
        super().__init__(host, **kwargs)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to one checked address; the certificate is checked against the URL's name."""

    def __init__(self, host: str, address: str, **kwargs: Any):
        super().__init__(host, context=ssl.create_default_context(), **kwargs)
        self.address = address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def post_webhook(req: urllib.request.Request, timeout: float, allow_private: bool) -> None:
    """POST once to the address `resolve_public` checked; 2xx is success, 3xx (never followed)
    and 4xx (but 408/429) are permanent, anything else is retried."""
    address = resolve_public(req.full_url, allow_private)
    parts = urlsplit(req.full_url)
    pinned = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
    conn = pinned(ascii_host(parts.hostname or ""), address, port=parts.port, timeout=timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    body = req.data if isinstance(req.data, bytes) else b""
    try:
        headers = {name.title(): value for name, value in req.header_items()}  # as urllib
        conn.request("POST", target, body=body, headers=headers)
        code = conn.getresponse().status
    finally:
        conn.close()
    if 400 <= code < 500 and code not in (408, 429) or 300 <= code < 400:
        raise PermanentError(f"the webhook answered HTTP {code}")
    if not 200 <= code < 300:
        raise OSError(f"the webhook answered HTTP {code}")
