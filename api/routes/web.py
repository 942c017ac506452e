"""The web page: `/` serves `static/index.html`, `/static/...` its scripts, styles and icons.

Everything the page needs ships with the package (no CDN, no build step). `create_app` calls
`mount_web(app)` once; nothing happens at import time.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

# Revalidate on every load (StaticFiles answers 304 from ETag/Last-Modified), so a new version
# of the page is never mixed with stale cached scripts.
_NO_CACHE = {"Cache-Control": "no-cache"}


class _RevalidatedFiles(StaticFiles):
    """`StaticFiles` whose responses ask browsers to revalidate before reuse."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(_NO_CACHE)
        return response


def index() -> FileResponse:
    """The web page: prompt in, art out, with live progress and the gallery."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=_NO_CACHE)


def mount_web(app: FastAPI) -> None:
    """Serve the page at `/` and its assets under `/static` (call once from `create_app`)."""
    app.mount("/static", _RevalidatedFiles(directory=STATIC_DIR), name="static")
    app.add_api_route("/", index, methods=["GET"], include_in_schema=False)
