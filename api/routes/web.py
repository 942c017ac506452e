"""The web page: `/` serves `static/index.html`, `/static/...` its scripts, styles and icons.

Everything the page needs ships with the package (no CDN, no build step). Its style choices come
from the engine's drawer registry: `/` replaces the `<!-- style cards ... -->` line of index.html
with one card per registered style (on each request: a file read and a few strings), so adding a
style adds its card. `create_app` calls `mount_web(app)` once; nothing happens at import time.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

from api.forms import style_details
from engine import drawer_class

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
# The line of index.html that the style cards replace (its indentation is theirs).
CARDS_MARKER = re.compile(r"^([ \t]*)<!-- style cards\b.*?-->[ \t]*$", re.MULTILINE)
# One style's card: a radio input covering the card, the drawer's icon, title and summary.
_CARD = """<label class="choice">
  <input type="radio" name="style" value="{name}" data-pixelated="{pixelated}"{checked}>
  <span class="choice-body">
    <svg class="choice-icon" viewBox="0 0 24 24" aria-hidden="true">{icon}</svg>
    <span class="choice-title">{title}</span>
    <span class="choice-sub">{summary}</span>
  </span>
</label>"""

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


def style_cards(indent: str = "") -> str:
    """The page's style choices: one card per registered style, every text escaped."""
    cards = []
    for style in style_details():
        card = _CARD.format(
            name=html.escape(style["name"]),
            pixelated="true" if style["pixelated"] else "false",
            checked=" checked" if style["default"] else "",
            icon=drawer_class(style["name"]).icon,  # markup the drawer declares, not text
            title=html.escape(style["title"]),
            summary=html.escape(style["summary"]),
        )
        cards.append(card)
    return "\n".join(indent + line for card in cards for line in card.splitlines())


def render_page() -> str:
    """index.html with its style cards."""
    template = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    marker = CARDS_MARKER.search(template)
    assert marker, "index.html has lost its <!-- style cards --> line"
    return template[: marker.start()] + style_cards(marker.group(1)) + template[marker.end() :]


def index() -> HTMLResponse:
    """The web page: prompt in, art out, with live progress and the gallery."""
    return HTMLResponse(render_page(), headers=_NO_CACHE)


def mount_web(app: FastAPI) -> None:
    """Serve the page at `/` and its assets under `/static` (call once from `create_app`)."""
    app.mount("/static", _RevalidatedFiles(directory=STATIC_DIR), name="static")
    app.add_api_route("/", index, methods=["GET"], include_in_schema=False)
