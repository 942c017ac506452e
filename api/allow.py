"""`Allow` names every method of a path (RFC 9110 10.2.1), and OPTIONS answers with it.

Starlette answers a method a path does not take with 405 and the `Allow` of the first route
whose path matched: `GET /jobs/{id}` and `DELETE /jobs/{id}` are two routes, so `Allow: GET`
hid DELETE. `AllowHeader` rewrites `Allow` of every 405 with the methods of all routes of the
path, and answers a plain `OPTIONS` (not a CORS preflight, which `CORSMiddleware` answers
first) with 204 and that header.
"""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(scope: Scope) -> list[str]:
    """The methods some route of the app takes at this request's path, sorted, with OPTIONS;
    empty when no route has the path. Each method is asked of the routes (`matches`, their
    public interface; included routers answer for theirs); a mount (static files) is left
    out: it matches every method and answers for itself."""
    router = getattr(scope.get("app"), "router", None)
    routes = [r for r in getattr(router, "routes", []) if not isinstance(r, Mount)]
    methods = {
        method
        for method in METHODS
        if any(r.matches({**scope, "method": method})[0] == Match.FULL for r in routes)
    }
    return sorted(methods | {"OPTIONS"}) if methods else []


class AllowHeader:
    """ASGI middleware: a right `Allow` on 405, and OPTIONS answered with it."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["method"] == "OPTIONS" and (methods := allowed_methods(scope)):
            allow = {"Allow": ", ".join(methods)}
            return await Response(status_code=204, headers=allow)(scope, receive, send)

        async def send_allow(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                allow = ", ".join(allowed_methods(scope)).encode()
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
                message = {**message, "headers": [*headers, (b"allow", allow)]}
            await send(message)

        await self.app(scope, receive, send_allow)
