"""Who may reach the web app under a login: logged-in users, on every route but the login page's own; and
how often a login may be tried.

Gradio checks the login on the routes that serve data (the API, files, uploads, the queue) but answers
others (heartbeats, cancels, the run-history page, ids and tokens) to anyone. :class:`LoginRequired`
inverts that: every route refuses a request without a login (401, or a closed websocket) except the
few that the login page needs to load. A route a later Gradio adds is closed until it is listed here.

Gradio tries every password it is sent. :class:`ThrottledLogin` stands before its ``POST /login``: after
a few failures from one address or for one user name, further logins (right or wrong) are answered 429
with a ``Retry-After`` for a time that doubles with each further failure (:class:`LoginThrottle`).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import HTTPConnection, Request
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
LOGIN_PATHS = ("/login", "/login/")  # where Gradio checks a password (a form: username, password)
MAX_LOGIN_BYTES = 16 * 1024  # a login form is a user name and a password; anything larger is refused
MAX_LOGIN_FIELDS = 16  # Gradio's form has 6 (OAuth2's username, password, grant_type, scope, client_*)
MAX_USER_KEY = 256  # characters of a user name remembered by the throttle


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
        stranger = scope["type"] in ("http", "websocket") and not is_public(_route(scope))
        if stranger and logged_in_user(scope) is None:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await JSONResponse({"detail": "Not authenticated: log in first"}, 401)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class LoginThrottle:
    """Failed logins counted per client address and per user name, each locked out after too many.

    After ``limit`` failures of an address or a name, its next login must wait ``base_delay`` seconds,
    a time that doubles with each further failure up to ``max_delay``. An address or name that has not
    failed for ``forget_after`` seconds starts again from nothing; a successful login clears both its
    address and its name. At most ``max_entries`` addresses and names are remembered (the one that
    failed longest ago is forgotten first), so that made-up names cannot fill memory. IPv6 addresses
    count by their /64 network, which one machine may fill. ``clock`` gives seconds (monotonic).
    """

    def __init__(
        self,
        limit: int = 5,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
        forget_after: float = 900.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not (limit >= 1 and 0 < base_delay <= max_delay <= forget_after and max_entries >= 2):
            raise ValueError(
                "a login throttle needs limit >= 1, 0 < base_delay <= max_delay <= forget_after and "
                f"max_entries >= 2, got {limit}, {base_delay}, {max_delay}, {forget_after}, {max_entries}"
            )
        self.limit, self.base_delay, self.max_delay = limit, base_delay, max_delay
        self.forget_after, self.max_entries, self.clock = forget_after, max_entries, clock
        # (kind, address or name) -> (failures, time of the last), the one that failed longest ago first
        self._failures: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()

    def wait(self, client: str, user: str | None) -> float:
        """Seconds before ``user`` may try to log in from ``client``; 0 when they may now."""
        now = self.clock()
        self._forget(now)
        return max(0.0, *(self._locked_until(key) - now for key in self._keys(client, user)))

    def attempt(self, client: str, user: str | None) -> float:
        """Let a login through and count it as failed until :meth:`succeeded` (so that logins sent at once
        count at once), returning 0; or, when ``client`` or ``user`` is locked out, the seconds to wait."""
        wait = self.wait(client, user)
        if wait > 0:
            return wait
        now = self.clock()
        for key in self._keys(client, user):
            failures, _ = self._failures.pop(key, (0, now))
            self._failures[key] = (failures + 1, now)
        while len(self._failures) > self.max_entries:
            self._failures.popitem(last=False)
        return 0.0

    def succeeded(self, client: str, user: str | None) -> None:
        """Forget the failures of ``client`` and ``user``: they logged in."""
        for key in self._keys(client, user):
            self._failures.pop(key, None)

    def _keys(self, client: str, user: str | None) -> list[tuple[str, str]]:
        keys = [("address", _address_key(client))]
        return [*keys, ("user", user[:MAX_USER_KEY])] if user else keys

    def _locked_until(self, key: tuple[str, str]) -> float:
        failures, last = self._failures.get(key, (0, 0.0))
        if failures < self.limit:
            return -math.inf
        doublings = min(failures - self.limit, 32)  # past max_delay long before; keeps the float finite
        return last + min(self.base_delay * 2**doublings, self.max_delay)

    def _forget(self, now: float) -> None:
        while self._failures:
            key, (_, last) = next(iter(self._failures.items()))
            if now - last < self.forget_after:
                return
            del self._failures[key]


class ThrottledLogin:
    """ASGI middleware: answer 429 with ``Retry-After`` to a login from a locked-out address or for a
    locked-out user name, whatever its password, and tell ``throttle`` which logins succeed.

    The address is the connection's, or the one a trusted reverse proxy puts in ``X-Forwarded-For``
    (uvicorn trusts 127.0.0.1 and ::1, or the addresses in ``FORWARDED_ALLOW_IPS``).
    """

    def __init__(self, app: Any, throttle: LoginThrottle):
        self.app = app
        self.throttle = throttle

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or _route(scope) not in LOGIN_PATHS:
            await self.app(scope, receive, send)
            return
        body = await _read_body(scope, receive)
        if body is None:
            message = f"a login form is at most {MAX_LOGIN_BYTES} bytes"
            await JSONResponse({"detail": message}, 413)(scope, receive, send)
            return
        user = await _login_name(scope, body)
        if user is None:  # Gradio would refuse it too; refused here, its name is never in doubt
            message = "a login is a form with a username and a password"
            await JSONResponse({"detail": message}, 422)(scope, receive, send)
            return
        client = scope["client"][0] if scope.get("client") else "unknown"
        wait = self.throttle.attempt(client, user)
        if wait > 0:
            seconds = math.ceil(wait)
            message = f"too many failed logins from this address or for this name: try again in {seconds} s"
            await JSONResponse({"detail": message}, 429, headers={"Retry-After": str(seconds)})(
                scope, receive, send
            )
            return
        status = 0

        async def watched(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, _replay(body, receive), watched)
        if status == 200:  # Gradio's answer to a right password (a wrong one is 400)
            self.throttle.succeeded(client, user)


def _route(scope: dict[str, Any]) -> str:
    """The request's path inside the app (without a root path an ASGI server strips)."""
    return scope["path"].removeprefix(scope.get("root_path", "")) or "/"


def _address_key(client: str) -> str:
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return client
    if address.version == 6 and address.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(getattr(address, "ipv4_mapped", None) or address)


async def _read_body(scope: dict[str, Any], receive: Any) -> bytes | None:
    """The whole request body, or None when it is longer than MAX_LOGIN_BYTES."""
    declared = HTTPConnection(scope).headers.get("content-length", "0")
    if not declared.isdigit() or int(declared) > MAX_LOGIN_BYTES:
        return None
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] != "http.request":  # the client went away: what it sent so far is all there is
            break
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > MAX_LOGIN_BYTES:
            return None
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _login_name(scope: dict[str, Any], body: bytes) -> str | None:
    """The user name of a login form (stripped, as Gradio does), or None if it has none."""
    request = Request(scope, _replay(body, _nothing_more))
    try:
        form = await request.form(max_files=0, max_fields=MAX_LOGIN_FIELDS)
    except (HTTPException, MultiPartException):
        return None
    user = form.get("username")
    await form.close()
    return (user.strip() or None) if isinstance(user, str) else None


def _replay(body: bytes, receive: Any) -> Callable[[], Any]:
    """A ``receive`` that gives ``body`` first, then what ``receive`` gives."""
    given = False

    async def replay() -> dict[str, Any]:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _nothing_more() -> dict[str, Any]:
    return {"type": "http.disconnect"}
