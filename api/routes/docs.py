"""The API docs pages, `/docs` (Swagger UI) and `/redoc` (ReDoc), with no CDN.

FastAPI's own pages load their scripts from a CDN, so they are blank offline (a laptop, a
firewalled GPU box). The `fastapi-offline` package ships the Swagger UI and ReDoc bundles in its
wheel; they are served from `/static-docs/`. `create_app` passes `docs_url=None, redoc_url=None`
and calls `mount_docs(app)` once.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import HTMLResponse

ASSETS_URL = "/static-docs"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"


def assets_dir() -> Path:
    """The folder of `swagger-ui-bundle.js`, `swagger-ui.css`, `redoc.standalone.js`."""
    return Path(str(resources.files("fastapi_offline") / "static"))


def mount_docs(app: FastAPI) -> None:
    """Serve `/docs`, `/redoc` and their assets from the installed package."""
    app.mount(ASSETS_URL, StaticFiles(directory=assets_dir()), name="static-docs")

    def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT_URL}",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}/static/favicon.svg",
        )

    def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}/static/favicon.svg",
            with_google_fonts=False,
        )

    def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    for path, endpoint in (
        ("/docs", swagger_ui),
        ("/redoc", redoc),
        (OAUTH2_REDIRECT_URL, oauth2_redirect),
    ):
        app.add_api_route(path, endpoint, methods=["GET"], include_in_schema=False)
