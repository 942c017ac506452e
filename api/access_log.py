"""The access log without secrets: a job's delete_token sent as `?delete_token=` is redacted.

`access_log_config()` is uvicorn's own logging configuration with `RedactSecrets` on the access
handler, so every line uvicorn writes for a request passes through it.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

SECRET_PARAMS = ("delete_token",)
_SECRET = re.compile(rf"((?:^|[?&;])(?:{'|'.join(SECRET_PARAMS)})=)[^&;#\s\"]*", re.I)
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """`/jobs/x?delete_token=abc&a=1` -> `/jobs/x?delete_token=[redacted]&a=1`."""
    return _SECRET.sub(rf"\g<1>{REDACTED}", text)


class RedactSecrets(logging.Filter):
    """Rewrites a record's message arguments (uvicorn passes the path with its query there)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def access_log_config() -> dict[str, Any]:
    """uvicorn's default logging configuration, with the access lines redacted."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_secrets"] = {"()": RedactSecrets}
    config["handlers"]["access"]["filters"] = ["redact_secrets"]
    return config
