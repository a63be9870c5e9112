"""The worker's web server, protected (issue 17): where it binds, TLS, a bearer token, and
pages that show event values escaped.

By default the server binds to 127.0.0.1: only this machine reaches it. Bound to any other
address it requires a bearer token (``SNOOPWATCH_WEB_TOKEN_FILE``) on every page except
``/metrics`` (Prometheus scrapes it; it holds counts, never event values) and ``/health``,
and refuses to start without one unless ``SNOOPWATCH_WEB_ALLOW_OPEN=1`` says that something
in front of it (an authenticating proxy) does the job. A token file given on loopback is
required there too. ``SNOOPWATCH_WEB_CERTFILE``/``KEYFILE`` serve HTTPS.

Every value that came from an event (actor, role, summary, customers) is HTML-escaped on
the pages that show it, so an actor named ``<script>`` is shown, not run.
"""

from __future__ import annotations

import hmac
import html
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from detectors.settings import PREFIX, Settings

# Pages anyone who reaches the server may read: counters for Prometheus, and liveness.
OPEN_PATHS = frozenset({"/metrics", "/health"})
RECENT_ALERTS = 100  # alerts the /alerts page shows (newest first)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) is reachable from this machine only.

    A name counts as loopback only if every address it resolves to is one.

    >>> [is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "10.1.2.3")]
    [True, True, True, False, False]
    >>> is_loopback("")
    False
    """
    if not host:
        return False  # aiohttp binds an empty host to every interface
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    addrs = {info[4][0] for info in infos}
    return bool(addrs) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback
                               for a in addrs)


def _env(name: str) -> str:
    return PREFIX + name.upper()


def load_token(settings: Settings) -> bytes | None:
    """The bearer token (first line of its file), or None; checks the bind rule.

    Raises a one-line ValueError: the file unreadable or empty, or a non-loopback bind
    without a token (unless allowed).
    """
    token: bytes | None = None
    if settings.web_token_file:
        try:
            with open(settings.web_token_file, "rb") as fh:
                lines = fh.read().splitlines()
        except OSError as err:
            raise ValueError(f"{_env('web_token_file')}={settings.web_token_file}: cannot read "
                             f"({err.strerror})") from None
        token = lines[0].strip() if lines else b""
        if len(token) < 16:
            raise ValueError(f"{_env('web_token_file')}={settings.web_token_file}: the token "
                             "must be at least 16 characters")
    elif not is_loopback(settings.web_host) and not settings.web_allow_open:
        raise ValueError(f"{_env('web_host')}={settings.web_host!r} is not a loopback address: "
                         f"set {_env('web_token_file')} (or {_env('web_allow_open')}=1 behind "
                         "an authenticating proxy)")
    return token


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """HTTPS for the web server from ``SNOOPWATCH_WEB_CERTFILE``/``KEYFILE``; None: HTTP."""
    if not settings.web_certfile and not settings.web_keyfile:
        return None
    if not settings.web_certfile:
        raise ValueError(f"{_env('web_keyfile')} is set without {_env('web_certfile')}")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(settings.web_certfile, settings.web_keyfile or None)
    except OSError as err:
        name = "web_keyfile" if settings.web_keyfile and err.filename == \
            settings.web_keyfile else "web_certfile"
        raise ValueError(f"{_env(name)}={getattr(settings, name)}: cannot read "
                         f"({err.strerror})") from None
    except ssl.SSLError as err:
        raise ValueError(f"{_env('web_certfile')}={settings.web_certfile}: not a certificate "
                         f"and its key ({err.reason or err})") from None
    return ctx


Handler = Callable[[Any], Awaitable[Any]]


def auth_middleware(token: bytes) -> Any:
    """aiohttp middleware: ``Authorization: Bearer <token>`` on every page but the open ones."""
    from aiohttp import web

    expected = b"Bearer " + token

    @web.middleware
    async def require_token(request: Any, handler: Handler) -> Any:
        if request.path.rstrip("/") in OPEN_PATHS or request.path in OPEN_PATHS:
            return await handler(request)
        given = request.headers.get("Authorization", "").encode("utf-8", "replace")
        if not hmac.compare_digest(given, expected):
            return web.Response(status=401, text="401: a bearer token is required\n",
                                headers={"WWW-Authenticate": 'Bearer realm="snoopwatch"'})
        return await handler(request)

    return require_token


# What a browser may do with our pages: nothing but show them (no script runs, even if an
# escape were ever missed), and not guess a type other than the one we send.
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
                "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


def alerts_page(alerts: Iterable[dict[str, Any]]) -> str:
    """The recent alerts as an HTML page; every event-derived value escaped.

    >>> page = alerts_page([{"actor": "<script>alert(1)</script>", "severity": "high",
    ...                      "score": 80.0, "time": "2026-11-02T10:00:00Z",
    ...                      "summary": "a & b", "customers": 3, "role": None}])
    >>> "<script>" in page, "&lt;script&gt;alert(1)&lt;/script&gt;" in page, "a &amp; b" in page
    (False, True, True)
    """
    def cell(value: Any) -> str:
        return "<td>" + html.escape("" if value is None else str(value), quote=True) + "</td>"

    rows = "".join(
        "<tr>" + "".join(cell(a.get(k)) for k in (
            "time", "severity", "score", "actor", "role", "customers", "summary")) + "</tr>\n"
        for a in alerts)
    return ("<!doctype html><html><head><meta charset=\"utf-8\"><title>snoopwatch: recent "
            "alerts</title></head><body><h1>Recent alerts (this worker)</h1>\n<table border=1>"
            "<tr><th>time</th><th>severity</th><th>score</th><th>actor</th><th>role</th>"
            "<th>customers</th><th>summary</th></tr>\n" + rows + "</table></body></html>\n")
