"""The collector's config file: found, parsed with positions, validated, turned into frozen settings.

Search order: ``--config``, ``$IVR_CENTRAL_CONFIG``, ``/etc/ivr/central.yaml``, else the defaults (plain
HTTP on 127.0.0.1:8443, the database from ``$IVR_CENTRAL_DSN``). Errors are ``file:line:column`` lines, the
same machinery as the box's config (ivr/yamlpos.py). Relative paths in a file are relative to it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ivr.errors import ConfigError, Problem
from ivr.yamlpos import is_loopback, load_settings, position

SYSTEM_CONFIG = Path("/etc/ivr/central.yaml")
DSN_ENV = "IVR_CENTRAL_DSN"
CONFIG_ENV = "IVR_CENTRAL_CONFIG"
MiB = 1 << 20


@dataclass(frozen=True)
class TlsConfig:
    """HTTPS on the listener; ``client_ca`` set: mutual TLS, a box without a certificate it signed is refused
    in the handshake (before any HTTP)."""

    cert: Path
    key: Path
    client_ca: Path | None = None


@dataclass(frozen=True)
class Limits:
    """What one batch may cost, so a faulty or hostile box cannot take the collector's memory or CPU."""

    max_body_bytes: int = 8 * MiB
    """Largest body as sent (compressed); larger is 413 before it is read."""
    max_decompressed_bytes: int = 64 * MiB
    """Largest body once inflated: gzip is inflated with this bound (a gzip bomb is 413)."""
    max_events: int = 10_000
    """Most events in one batch (413 above)."""
    max_concurrent_batches: int = 8
    """Batches read, checked and written at once: bounds memory and keeps PostgreSQL connections for the rest."""
    queue_seconds: float = 2.0
    """How long a batch waits for one of those slots before 503 + Retry-After (the box backs off)."""


@dataclass(frozen=True)
class PoolConfig:
    size: int = 10
    """Most PostgreSQL connections (asyncpg pool); at least max_concurrent_batches."""
    acquire_timeout: float = 5.0
    """Seconds to wait for a connection before answering 503."""
    connect_timeout: float = 5.0
    """Seconds to open one (a PostgreSQL that drops packets must not hold a batch for a minute)."""


@dataclass(frozen=True)
class Viewer:
    name: str
    token_sha256: str


@dataclass(frozen=True)
class DashboardConfig:
    """The manager's read-only dashboard (docs/central-dashboard.md): viewers by the SHA-256 of their token,
    or the user an SSO proxy in front names (believed only from ``trusted_proxies``)."""

    viewers: tuple[Viewer, ...] = ()
    enabled: bool = True
    trusted_proxy_header: str | None = None
    trusted_proxies: tuple[str, ...] = ()
    session_secret_file: Path | None = None
    """The HMAC key of login cookies (the same on every collector behind one name); None: random per process."""
    target_service_level: float = 0.80
    target_asa_s: float = 20.0


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = True
    listen: tuple[str, int] | None = None
    """A separate plain-HTTP listener for /metrics and the health checks (a scraper without a client
    certificate where mTLS is on); None: served on the main listener."""


@dataclass(frozen=True)
class CentralConfig:
    host: str = "127.0.0.1"
    port: int = 8443
    """Where the collector listens (``listen: host:port``; port 0 picks a free one, for tests)."""
    dsn: str | None = None
    """PostgreSQL DSN (``database``, overridden by $IVR_CENTRAL_DSN)."""
    tls: TlsConfig | None = None
    """None: plain HTTP, allowed on loopback only (a TLS-terminating proxy in front)."""
    limits: Limits = field(default_factory=Limits)
    pool: PoolConfig = field(default_factory=PoolConfig)
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    log_level: str = "info"
    log_format: str = "text"
    access_log: bool = False
    shutdown_seconds: float = 30.0
    """On SIGTERM: how long batches in flight may take to commit before they are cut (the box resends them)."""
    source: str = "built-in defaults"

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_listen(text: str) -> tuple[str, int] | None:
    """``host:port`` (``[v6]:port`` too) or None when it is not one."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        return None
    return host, int(port)


def find_config(explicit: str | None) -> Path | None:
    if explicit:
        return Path(explicit)
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    return SYSTEM_CONFIG if SYSTEM_CONFIG.is_file() else None


def load_config(explicit: str | None = None, env: dict[str, str] | None = None) -> CentralConfig:
    """The config in force; raises ConfigError listing every problem with its position."""
    env = dict(os.environ) if env is None else env
    path = find_config(explicit)
    if path is None:
        return CentralConfig(dsn=env.get(DSN_ENV) or None)
    return build(load_settings(path, "config.schema.json", package="ivr_central"), path.parent, str(path), env)


def build(doc: Any, base: Path, name: str, env: dict[str, str]) -> CentralConfig:
    """Settings from a schema-valid document; the checks a schema cannot make, each at its line."""
    problems: list[Problem] = []

    def at(*keys: str | int) -> tuple[int, int]:
        return position(doc, list(keys))

    host, port = "127.0.0.1", 8443
    if "listen" in doc:
        parsed = parse_listen(str(doc["listen"]))
        if parsed is None:
            problems.append(Problem(name, *at("listen"), "listen is host:port, e.g. 0.0.0.0:8443 or [::]:8443"))
        else:
            host, port = parsed
    tls = None
    if isinstance(doc.get("tls"), dict):
        t = doc["tls"]
        files = {}
        for key in ("cert", "key", "client_ca"):
            if key in t:
                p = base / str(t[key])
                if not p.is_file():
                    problems.append(Problem(name, *at("tls", key), f"tls.{key}: no such file {p}"))
                files[key] = p
        tls = TlsConfig(files["cert"], files["key"], files.get("client_ca"))
    elif not is_loopback(host):
        problems.append(Problem(name, *at("listen"), f"listening on {host} without tls: plain HTTP is allowed on "
                                                    "loopback only (configure tls:, or put a TLS-terminating proxy "
                                                    "in front and listen on 127.0.0.1)"))
    lim = doc.get("limits") or {}
    limits = Limits(**{str(k): v for k, v in lim.items()})
    pool = PoolConfig(**{str(k): v for k, v in (doc.get("pool") or {}).items()})
    if limits.max_concurrent_batches > pool.size:
        where = at("limits", "max_concurrent_batches") if "max_concurrent_batches" in lim else at("pool", "size")
        problems.append(Problem(name, *where, f"limits.max_concurrent_batches ({limits.max_concurrent_batches}) "
                                              f"is more than pool.size ({pool.size}): batches would wait for "
                                              "connections instead of slots"))
    m = doc.get("metrics") or {}
    metrics_listen = None
    if "listen" in m:
        metrics_listen = parse_listen(str(m["listen"]))
        if metrics_listen is None:
            problems.append(Problem(name, *at("metrics", "listen"), "listen is host:port, e.g. 127.0.0.1:9465"))
    d = doc.get("dashboard") or {}
    viewers = tuple(Viewer(str(v["name"]), str(v["token_sha256"])) for v in d.get("viewers") or ())
    if d.get("trusted_proxy_header") and not d.get("trusted_proxies"):
        problems.append(Problem(name, *at("dashboard", "trusted_proxy_header"),
                                "trusted_proxy_header needs trusted_proxies: the SSO proxy's addresses, the only "
                                "ones whose header is believed"))
    targets = d.get("targets") or {}
    secret_file = d.get("session_secret_file")
    dashboard = DashboardConfig(
        viewers=viewers, enabled=bool(d.get("enabled", True)),
        trusted_proxy_header=str(d["trusted_proxy_header"]) if d.get("trusted_proxy_header") else None,
        trusted_proxies=tuple(str(x) for x in d.get("trusted_proxies") or ()),
        session_secret_file=(Path(name).parent / str(secret_file)) if secret_file else None,
        target_service_level=float(targets.get("service_level", 0.80)),
        target_asa_s=float(targets.get("asa_seconds", 20.0)))
    if problems:
        raise ConfigError(problems)
    log = doc.get("log") or {}
    return CentralConfig(
        host=host, port=port,
        dsn=env.get(DSN_ENV) or (str(doc["database"]) if "database" in doc else None),
        tls=tls, limits=limits, pool=pool, dashboard=dashboard,
        metrics=MetricsConfig(bool(m.get("enabled", True)), metrics_listen),
        log_level=str(log.get("level", "info")), log_format=str(log.get("format", "text")),
        access_log=bool(log.get("access", False)),
        shutdown_seconds=float(doc.get("shutdown_seconds", 30)), source=name)
