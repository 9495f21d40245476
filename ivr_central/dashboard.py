"""The contact-center manager's dashboard (issue 14 item 4), served by the collector under ``/dashboard``.

A self-contained aiohttp sub-application: the collector mounts it with ``add_dashboard(app, pool_key=…,
viewer_tokens=…)`` and shares its asyncpg pool. The page is hand-written static HTML, CSS and JavaScript
(ivr_central/static/, no build step) drawing with Plotly's bundled ``plotly.min.js``, served from the
installed ``plotly`` package: nothing is fetched from the internet at run time, and the Content-Security-
Policy says so (``default-src 'self'``, no inline script or style).

Routes (all GET unless said):

- ``/dashboard/`` the page; ``/dashboard/login`` (GET, POST) and ``/dashboard/logout`` (POST);
- ``/dashboard/api/meta``: sites, groups, KPIs, targets (the filters' choices);
- ``/dashboard/api/<table>`` and ``/dashboard/api/<table>.csv`` for ``summary``, ``series``, ``heatmap``,
  ``exits``, ``sites``: the figures (ivr_central.dashboard_data) as JSON, and the same rows as CSV;
- ``/dashboard/static/<file>``: dashboard.js, dashboard.css, plotly.min.js (public: no figures in them).

Read-only viewers, three ways (docs/central-dashboard.md): a bearer token (``Authorization: Bearer …``),
the login form (the same token, once, for an HttpOnly SameSite=Strict session cookie signed with HMAC), or
the center's SSO proxy (``trusted_proxy_header``, believed only from ``trusted_proxies``). Tokens are
configured as their SHA-256, never in clear.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import gzip
import hashlib
import hmac
import html
import io
import ipaddress
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
from aiohttp import web

from ivr_central import dashboard_data as data

log = logging.getLogger("ivr_central.dashboard")

PREFIX = "/dashboard"
COOKIE = "ivr_dashboard"
STATIC = Path(__file__).with_name("static")
STATIC_FILES = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}

#: Only our own origin; no inline script or style (Plotly's own CSS rules are in dashboard.css, and the page
#: tells Plotly not to inject them: ``<meta id="plotly.js-style-global" class="no-inline-styles">``).
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def plotly_js() -> Path:
    """The installed plotly package's bundled plotly.min.js (the ``central`` extra installs plotly)."""
    try:
        p = Path(str(resources.files("plotly").joinpath("package_data", "plotly.min.js")))
    except ModuleNotFoundError:
        raise RuntimeError("the dashboard needs the plotly package (pip install 'edge-ivr[central]')") from None
    if not p.is_file():
        raise RuntimeError(f"plotly.min.js not found at {p}")
    return p


def token_hash(token: str) -> str:
    """The hex SHA-256 a viewer token is configured as (``ivr-central`` prints it for a new token)."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Viewer:
    name: str
    via: str  # token, session, proxy


@dataclass
class _Settings:
    pool_of: Callable[[web.Request], asyncpg.Pool | None]
    tokens: dict[str, str]  # sha256 hex -> viewer name
    proxy_header: str | None
    proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    secret: bytes
    session_s: int
    targets: data.Targets
    clock: Callable[[], datetime]
    plotly: Path
    prefix: str
    plotly_gz: bytes | None = None
    plotly_etag: str = ""


SETTINGS: web.AppKey[_Settings] = web.AppKey("dashboard_settings", _Settings)
VIEWER: web.RequestKey[Viewer] = web.RequestKey("dashboard_viewer", Viewer)


def _tokens(viewer_tokens: Mapping[str, str] | Iterable[str]) -> dict[str, str]:
    pairs = (list(viewer_tokens.items()) if isinstance(viewer_tokens, Mapping)
             else [(f"viewer-{i + 1}", h) for i, h in enumerate(viewer_tokens)])
    out = {}
    for name, h in pairs:
        h = h.strip().lower()
        if len(h) != 64 or any(c not in "0123456789abcdef" for c in h):
            raise ValueError(f"dashboard viewer token {name!r}: give its SHA-256 as 64 hex digits, not the token")
        out[h] = name
    return out


def add_dashboard(app: web.Application, *, viewer_tokens: Mapping[str, str] | Iterable[str], pool_key: Any = None,
                  get_pool: Callable[[web.Request], asyncpg.Pool | None] | None = None,
                  trusted_proxy_header: str | None = None, trusted_proxies: Iterable[str] = (),
                  session_secret: bytes | None = None, session_hours: float = 12.0,
                  targets: data.Targets | None = None, clock: Callable[[], datetime] | None = None,
                  prefix: str = PREFIX) -> web.Application:
    """Mount the dashboard on ``app`` under ``prefix``; returns the sub-application.

    The database: ``pool_key``, the key under which ``app`` holds its ``asyncpg.Pool`` (looked up per
    request, so the pool may be created in ``app``'s cleanup context), or ``get_pool(request)``: the pool, or
    None while there is none yet (the page then answers 503 with Retry-After). ``viewer_tokens``: the SHA-256
    hex of each read-only viewer's token, as ``{name: hash}`` or a list. ``trusted_proxy_header`` (e.g.
    ``X-Forwarded-User``): the viewer the SSO proxy authenticated, believed only from an address in
    ``trusted_proxies`` (addresses or CIDR networks). ``session_secret``: the HMAC key of login cookies
    (default: random per process, so a restart signs everyone out; give one when several collectors serve
    the dashboard). ``targets``: the target lines. ``clock``: "now" (tests)."""
    if (pool_key is None) == (get_pool is None):
        raise ValueError("give the dashboard's database as pool_key or get_pool (one of them)")
    if get_pool is None:
        def get_pool(request: web.Request) -> asyncpg.Pool | None:
            pool: asyncpg.Pool | None = request.config_dict.get(pool_key)
            return pool
    if trusted_proxy_header and not trusted_proxies:
        raise ValueError("trusted_proxy_header needs trusted_proxies: the addresses of the SSO proxy")
    settings = _Settings(
        pool_of=get_pool, tokens=_tokens(viewer_tokens), proxy_header=trusted_proxy_header or None,
        proxies=tuple(ipaddress.ip_network(p, strict=False) for p in trusted_proxies),
        secret=session_secret or secrets.token_bytes(32), session_s=int(session_hours * 3600),
        targets=targets or data.Targets(), clock=clock or (lambda: datetime.now(UTC)), plotly=plotly_js(),
        prefix=prefix.rstrip("/"))
    sub = web.Application(middlewares=[_guard])
    sub[SETTINGS] = settings
    sub.on_response_prepare.append(_security_headers)
    sub.router.add_get("/", _index)
    sub.router.add_get("/login", _login_page)
    sub.router.add_post("/login", _login)
    sub.router.add_post("/logout", _logout)
    sub.router.add_get("/static/plotly.min.js", _plotly)
    sub.router.add_get("/static/{name}", _static)
    sub.router.add_get("/api/meta", _meta)
    sub.router.add_get(r"/api/{table:[a-z]+}.csv", _api_csv)
    sub.router.add_get(r"/api/{table:[a-z]+}", _api_json)
    app.add_subapp(prefix, sub)
    return sub


# -- who is asking -------------------------------------------------------------------------------------------------

def _from_proxy(s: _Settings, request: web.Request) -> bool:
    if not request.remote:
        return False
    try:
        addr = ipaddress.ip_address(request.remote)
    except ValueError:
        return False
    return any(addr in net for net in s.proxies)


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _session_cookie(s: _Settings, name: str) -> str:
    body = _b64(json.dumps({"u": name, "exp": int(time.time()) + s.session_s}, separators=(",", ":")).encode())
    return body + "." + _b64(hmac.new(s.secret, body.encode(), hashlib.sha256).digest())


def _session_viewer(s: _Settings, cookie: str) -> str | None:
    body, _, sig = cookie.partition(".")
    try:
        good = hmac.compare_digest(_unb64(sig), hmac.new(s.secret, body.encode(), hashlib.sha256).digest())
        if not good:
            return None
        d = json.loads(_unb64(body))
    except (ValueError, TypeError):
        return None
    if not isinstance(d, dict) or not isinstance(d.get("exp"), int) or d["exp"] < time.time():
        return None
    name = d.get("u")
    return name if isinstance(name, str) else None


def _token_viewer(s: _Settings, token: str) -> str | None:
    h = token_hash(token)
    found = None
    for known, name in s.tokens.items():  # every hash compared, in constant time each
        if hmac.compare_digest(known, h):
            found = name
    return found


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _viewer(s: _Settings, request: web.Request) -> Viewer | None:
    """The viewer a request comes from; None: anonymous. ``_Refused``: credentials given and wrong."""
    if s.proxy_header and _from_proxy(s, request):
        user = request.headers.get(s.proxy_header, "").strip()
        if user and len(user) <= 256 and user.isprintable():
            return Viewer(user, "proxy")
    auth = request.headers.get("Authorization", "")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _Refused("Authorization: Bearer <token> expected")
        name = _token_viewer(s, token.strip())
        if name is None:
            raise _Refused("the token is not a viewer token")
        return Viewer(name, "token")
    cookie = request.cookies.get(COOKIE)
    if cookie:
        name = _session_viewer(s, cookie)
        if name is not None:
            return Viewer(name, "session")
    return None


_PUBLIC = ("/login", "/static/")


@web.middleware
async def _guard(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                 ) -> web.StreamResponse:
    s = request.app[SETTINGS]
    prefix = s.prefix
    rel = request.path[len(prefix):]
    if rel == "":
        raise web.HTTPFound(prefix + "/")
    if rel.startswith(_PUBLIC):
        return await handler(request)
    api = rel.startswith("/api/")
    try:
        viewer = _viewer(s, request)
    except _Refused as exc:
        log.info("dashboard: refused %s from %s: %s", request.path, request.remote, exc.reason)
        raise _unauthorized(exc.reason) from None
    if viewer is None:
        if api:
            raise _unauthorized("sign in: a viewer token (Authorization: Bearer) or the login page")
        raise web.HTTPFound(f"{prefix}/login?next={quote(request.path_qs, safe='')}")
    request[VIEWER] = viewer
    return await handler(request)


def _unauthorized(reason: str) -> web.HTTPUnauthorized:
    return web.HTTPUnauthorized(
        text=json.dumps({"error": reason}), content_type="application/json",
        headers={"WWW-Authenticate": 'Bearer realm="ivr-central dashboard"'})


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for k, v in SECURITY_HEADERS.items():
        response.headers.setdefault(k, v)
    if "Cache-Control" not in response.headers:
        response.headers["Cache-Control"] = "no-store"


# -- pages ------------------------------------------------------------------------------------------------------

async def _index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Content-Type": "text/html; charset=utf-8",
                                                             "Cache-Control": "no-store"})


def _safe_next(prefix: str, target: str | None) -> str:
    """Where to go after signing in: a path of the dashboard only (no open redirect)."""
    if target and target.startswith(prefix + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return prefix + "/"


_LOGIN = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · Contact center dashboard</title><link rel="icon" href="data:,">
<link rel="stylesheet" href="{prefix}/static/dashboard.css"></head>
<body class="login"><main class="login-box">
<h1>Contact center dashboard</h1>
<p>Read-only. Sign in with your viewer token.</p>
{error}
<form method="post" action="{prefix}/login">
<label for="token">Viewer token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<input type="hidden" name="next" value="{next}">
<button type="submit">Sign in</button>
</form></main></body></html>
"""


def _login_html(prefix: str, target: str, error: str = "") -> str:
    err = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    return _LOGIN.format(prefix=prefix, next=html.escape(target, quote=True), error=err)


async def _login_page(request: web.Request) -> web.Response:
    prefix = request.app[SETTINGS].prefix
    target = _safe_next(prefix, request.query.get("next"))
    return web.Response(text=_login_html(prefix, target), content_type="text/html")


async def _login(request: web.Request) -> web.Response:
    s = request.app[SETTINGS]
    prefix = request.app[SETTINGS].prefix
    form = await request.post()
    target = _safe_next(prefix, str(form.get("next") or ""))
    name = _token_viewer(s, str(form.get("token") or "").strip())
    if name is None:
        log.info("dashboard: failed sign-in from %s", request.remote)
        return web.Response(status=401, text=_login_html(prefix, target, "That is not a viewer token."),
                            content_type="text/html")
    log.info("dashboard: %s signed in from %s", name, request.remote)
    resp = web.HTTPSeeOther(target)
    secure = request.secure or (_from_proxy(s, request) and request.headers.get("X-Forwarded-Proto") == "https")
    resp.set_cookie(COOKIE, _session_cookie(s, name), max_age=s.session_s, path=prefix, httponly=True,
                    samesite="Strict", secure=secure)
    raise resp


async def _logout(request: web.Request) -> web.Response:
    prefix = request.app[SETTINGS].prefix
    resp = web.HTTPSeeOther(prefix + "/login")
    resp.del_cookie(COOKIE, path=prefix)
    raise resp


# -- static files ------------------------------------------------------------------------------------------------

async def _static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise web.HTTPNotFound()
    return web.FileResponse(STATIC / name, headers={"Content-Type": STATIC_FILES[name],
                                                     "Cache-Control": "no-cache"})


async def _plotly(request: web.Request) -> web.StreamResponse:
    """Plotly's bundle (4.8 MB), gzipped once in memory (1.4 MB): a manager's browser over a WAN."""
    s = request.app[SETTINGS]
    if s.plotly_gz is None:
        raw = s.plotly.read_bytes()
        s.plotly_gz = gzip.compress(raw, 6)
        s.plotly_etag = '"' + hashlib.sha256(raw).hexdigest()[:32] + '"'
    headers = {"Content-Type": "text/javascript", "Cache-Control": "public, max-age=86400",
               "ETag": s.plotly_etag, "Vary": "Accept-Encoding"}
    if request.headers.get("If-None-Match") == s.plotly_etag:
        return web.Response(status=304, headers=headers)
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        return web.Response(body=s.plotly_gz, headers={**headers, "Content-Encoding": "gzip"})
    return web.FileResponse(s.plotly, headers=headers)


# -- the figures -------------------------------------------------------------------------------------------------

ACQUIRE_TIMEOUT_S = 5.0
_DB_DOWN = (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError,
            asyncpg.InterfaceError)


def _unavailable(reason: str) -> web.HTTPServiceUnavailable:
    return web.HTTPServiceUnavailable(text=json.dumps({"error": reason}), content_type="application/json",
                                      headers={"Retry-After": "10"})


@contextlib.asynccontextmanager
async def _connection(request: web.Request) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection; the database down or the pool exhausted is a 503 the page shows, not a 500."""
    pool = request.app[SETTINGS].pool_of(request)
    if pool is None:
        raise _unavailable("the center's database is not connected yet")
    try:
        async with pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
            yield conn
    except _DB_DOWN as exc:
        log.warning("dashboard: database unavailable: %s", exc)
        raise _unavailable("the center's database is unavailable; try again shortly") from None


async def _meta(request: web.Request) -> web.Response:
    s = request.app[SETTINGS]
    async with _connection(request) as conn:
        sites = await data.load_sites(conn)
    viewer = request[VIEWER]
    out = data.meta(sites, targets=s.targets, now=s.clock())
    out["viewer"] = {"name": viewer.name, "via": viewer.via}
    return web.json_response(out)


async def _table(request: web.Request) -> dict[str, Any]:
    s = request.app[SETTINGS]
    table = request.match_info["table"]
    if table not in data.TABLES:
        raise web.HTTPNotFound(text=json.dumps({"error": f"no table {table!r}"}), content_type="application/json")
    now = s.clock()
    async with _connection(request) as conn:
        sites = await data.load_sites(conn)
        try:
            f = data.parse_filters(request.query, sites, now=now)
        except data.FilterError as exc:
            raise web.HTTPBadRequest(text=json.dumps({"error": str(exc)}), content_type="application/json") from None
        if table == "summary":
            return await data.summary(conn, f, now=now, targets=s.targets)
        if table == "series":
            return await data.series(conn, f, now=now)
        if table == "heatmap":
            return await data.heatmap(conn, f, now=now)
        if table == "exits":
            return await data.exits(conn, f, now=now)
        return await data.sites_table(conn, f, now=now)


async def _api_json(request: web.Request) -> web.Response:
    return web.json_response(await _table(request))


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(v: Any) -> Any:
    """A CSV cell: numbers as JSON writes them; text that a spreadsheet would run as a formula is quoted
    with a leading apostrophe (OWASP's CSV injection advice); nothing at all for None."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str) and v.startswith(_FORMULA_START):
        return "'" + v
    return v


def to_csv(table: Mapping[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(table["columns"])
    for row in table["rows"]:
        w.writerow([_cell(v) for v in row])
    return buf.getvalue()


async def _api_csv(request: web.Request) -> web.Response:
    t = await _table(request)
    f = t["filters"]
    name = f"{t['table']}_{f['since']}_{f['until']}.csv"
    return web.Response(text=to_csv(t), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})
