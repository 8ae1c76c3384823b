"""Who may reach the web app under ``--auth``: logged-in users, on every route but the login page's own.

Gradio checks the login on the routes that serve data (the API, files, uploads, the queue) but answers
others (heartbeats, cancels, the run-history page, ids and tokens) to anyone. :class:`LoginRequired`
inverts that: every route refuses a request without a login (401, or a closed websocket) except the
few that the login page needs to load. A route a later Gradio adds is closed until it is listed here.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse

# The login page and what it loads before anyone has logged in; none of it holds collection data.
PUBLIC_PATHS = frozenset(
    {
        "/",
        "/login",
        "/login/",
        "/logout",
        "/config",  # answers 401 itself without a login, which tells the page to show the login form
        "/config/",
        "/favicon.ico",
        "/theme.css",
        "/robots.txt",
        "/gradio_api/theme.css",
        "/gradio_api/login_check",  # 401 without a login
        "/gradio_api/login_check/",
        "/gradio_api/startup-events",  # launch() polls it to know the server is up
    }
)
PUBLIC_PREFIXES = ("/static/", "/assets/", "/svelte/")  # the page's scripts, styles and fonts


def is_public(path: str) -> bool:
    """Whether ``path`` is part of the login page, open to a visitor who has not logged in."""
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def logged_in_user(scope: dict[str, Any]) -> str | None:
    """The user whose Gradio login cookie the request carries, or None."""
    app = scope["app"]  # Gradio's App (a FastAPI app): its login tokens live in app.tokens
    cookies = HTTPConnection(scope).cookies
    token = cookies.get(f"access-token-{app.cookie_id}") or cookies.get(
        f"access-token-unsecure-{app.cookie_id}"
    )
    return app.tokens.get(token) if token else None


class LoginRequired:
    """ASGI middleware: refuse every request without a login except those for the login page."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            path = scope["path"].removeprefix(scope.get("root_path", "")) or "/"
            if not is_public(path) and logged_in_user(scope) is None:
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                await JSONResponse({"detail": "Not authenticated: log in first"}, 401)(scope, receive, send)
                return
        await self.app(scope, receive, send)
