"""The API docs pages, `/docs` (Swagger UI) and `/redoc` (ReDoc), with no CDN.

FastAPI's own pages load their scripts from a CDN, so they are blank offline (a laptop, a
firewalled GPU box). The `fastapi-offline` package ships the Swagger UI and ReDoc bundles in its
wheel; they are served from `/static-docs/`. `create_app` passes `docs_url=None, redoc_url=None`
and calls `mount_docs(app)` once.

ReDoc's bundle still fetches its "API docs by Redocly" logo from Redocly's CDN: `/redoc` loads
the bundle from `REDOC_JS_URL`, the same file with that address replaced by an empty inline SVG
(the logo is dropped; nothing leaves the machine).
"""

from __future__ import annotations

import functools
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
from starlette.responses import HTMLResponse, JSONResponse, Response

ASSETS_URL = "/static-docs"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
OPENAPI_URL = "/openapi.json"
SERVER = "{server}"  # in the API's description: this server's address (`_server_address`)
REDOC_JS_URL = "/docs-assets/redoc.standalone.js"
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
EMPTY_SVG = "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'/%3E"


def assets_dir() -> Path:
    """The folder of `swagger-ui-bundle.js`, `swagger-ui.css`, `redoc.standalone.js`."""
    return Path(str(resources.files("fastapi_offline") / "static"))


@functools.cache
def redoc_bundle() -> bytes:
    """ReDoc's standalone bundle without its CDN logo (read on first use, then kept)."""
    text = (assets_dir() / "redoc.standalone.js").read_text(encoding="utf-8")
    return text.replace(REDOC_LOGO, EMPTY_SVG).encode()


def mount_docs(app: FastAPI) -> None:
    """Serve `/docs`, `/redoc` and their assets from the installed package, and
    `/openapi.json` with this server's address in the description's example."""
    app.mount(ASSETS_URL, StaticFiles(directory=assets_dir()), name="static-docs")

    def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{OPENAPI_URL}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT_URL}",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}/static/favicon.svg",
        )

    def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{OPENAPI_URL}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{REDOC_JS_URL}",
            redoc_favicon_url=f"{root}/static/favicon.svg",
            with_google_fonts=False,
        )

    def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    def openapi(request: Request) -> JSONResponse:
        schema = app.openapi()
        base = _server_address(request)
        info = {
            **schema["info"],
            "description": schema["info"]["description"].replace(SERVER, base),
        }
        return JSONResponse({**schema, "info": info})

    def redoc_js() -> Response:
        return Response(redoc_bundle(), media_type="text/javascript")

    for path, endpoint in (
        ("/docs", swagger_ui),
        ("/redoc", redoc),
        (OAUTH2_REDIRECT_URL, oauth2_redirect),
        (REDOC_JS_URL, redoc_js),
        (OPENAPI_URL, openapi),
    ):
        app.add_api_route(path, endpoint, methods=["GET"], include_in_schema=False)


def _server_address(request: Request) -> str:
    """Where this server is reached, for the description's examples: T2A_PUBLIC_URL, else the
    address and port it was configured to listen on. Never the request's Host header (a client
    would write its own host into the page others read)."""
    config = request.app.state.config
    public: str | None = getattr(config, "public_url", None)
    if public:
        return public.rstrip("/")
    host = "127.0.0.1" if config.host in ("0.0.0.0", "::", "") else config.host
    return f"http://{host}:{config.port}"
