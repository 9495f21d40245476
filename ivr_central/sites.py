"""The sites the collector accepts: their tokens, their delivery state and their refused batches (PostgreSQL's
``sites``, ``site_state`` and ``rejects``), plus the token rules, which need no I/O.

A site's bearer token is 32 random bytes (``secrets``) shown once; only its SHA-256 is stored, so a copy of
the database lets nobody post as a site. A presented token is hashed and compared with the claimed site's
hash by ``hmac.compare_digest`` (constant time). A token that is not the claimed site's is looked up by its
hash only to tell 403 (a valid token, another site's name) from 401: an index look-up of a SHA-256 leaks
nothing an attacker can steer towards a token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg

SITE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
"""The box's ``site.id`` pattern (ivr/config.schema.json), at most 64 characters."""
REGION = re.compile(r"^[A-Z]{2}$")


class SiteError(Exception):
    """An admin command that cannot be done; the message is the one line the CLI prints."""


@dataclass(frozen=True)
class Auth:
    """Who a request is: ``status`` 200 (``site`` authenticated), 401 (no such token) or 403 (``site``'s
    valid token naming another site)."""

    status: int
    site: str | None = None
    error: str = ""


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def bearer(header: str | None) -> str | None:
    """The token of ``Authorization: Bearer <token>`` (RFC 6750), or None."""
    scheme, _, token = (header or "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def site_problems(site_id: str, zone: str, region: str) -> list[str]:
    out = []
    if not SITE_ID.match(site_id):
        out.append(f"site id {site_id!r}: letters, digits, '.', '_', '-', starting with a letter or digit, "
                   "at most 64 (the box's site.id)")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        out.append(f"unknown time zone {zone!r}")
    if not REGION.match(region):
        out.append(f"region {region!r} is not an ISO 3166 two-letter code, e.g. US")
    return out


async def authenticate(conn: asyncpg.Connection, token: str, claimed: str | None) -> Auth:
    """The site ``token`` belongs to, checked against the ``X-IVR-Site`` it came with (``claimed``)."""
    digest = token_digest(token)
    if claimed:
        stored = await conn.fetchval("SELECT token_sha256 FROM sites WHERE site_id = $1", claimed)
        if stored is not None and hmac.compare_digest(digest.encode(), str(stored).encode()):
            return Auth(200, claimed)
    owner = await conn.fetchval("SELECT site_id FROM sites WHERE token_sha256 = $1", digest)
    if owner is None:
        return Auth(401, None, "unknown or missing token")
    if claimed and claimed != owner:
        return Auth(403, str(owner), f"this token is not site {claimed!r}'s")
    return Auth(200, str(owner))


async def record_reject(conn: asyncpg.Connection, site_id: str, idempotency_key: str | None, status: int,
                        error: str) -> None:
    await conn.execute("INSERT INTO rejects (site_id, idempotency_key, status, error) VALUES ($1, $2, $3, $4)",
                       site_id, idempotency_key, status, error)


# -- admin ----------------------------------------------------------------------------------------------------------

async def add_site(conn: asyncpg.Connection, site_id: str, *, name: str = "", grp: str = "", zone: str = "UTC",
                   region: str = "US", token: str | None = None) -> str:
    """Register a site; returns its token (new unless given; shown once, never stored)."""
    problems = site_problems(site_id, zone, region)
    if problems:
        raise SiteError("; ".join(problems))
    token = token or new_token()
    done = await conn.execute(
        "INSERT INTO sites (site_id, name, grp, zone, region, token_sha256) VALUES ($1, $2, $3, $4, $5, $6) "
        "ON CONFLICT (site_id) DO NOTHING", site_id, name, grp, zone, region, token_digest(token))
    if done == "INSERT 0 0":
        raise SiteError(f"site {site_id} exists (ivr-central site rotate-token {site_id} issues a new token)")
    return token


async def rotate_token(conn: asyncpg.Connection, site_id: str, token: str | None = None) -> str:
    """A new token for the site (also re-enables a disabled one); the old one stops working at once."""
    token = token or new_token()
    done = await conn.execute("UPDATE sites SET token_sha256 = $2 WHERE site_id = $1", site_id, token_digest(token))
    if done == "UPDATE 0":
        raise SiteError(f"no site {site_id}")
    return token


async def disable(conn: asyncpg.Connection, site_id: str) -> None:
    """Forget the site's token: its box gets 401 from now on; its events stay."""
    done = await conn.execute("UPDATE sites SET token_sha256 = NULL WHERE site_id = $1", site_id)
    if done == "UPDATE 0":
        raise SiteError(f"no site {site_id}")


@dataclass(frozen=True)
class SiteRow:
    site_id: str
    name: str
    grp: str
    zone: str
    region: str
    enabled: bool
    acked_seq: int
    head_seq: int | None
    last_batch_at: datetime | None
    last_event_at: datetime | None
    batches: int
    events: int
    duplicates: int
    rejects: int

    @property
    def lag(self) -> int | None:
        """Events the box had that the center has not acknowledged, as of the box's last post."""
        return None if self.head_seq is None else max(0, self.head_seq - self.acked_seq)


async def list_sites(conn: asyncpg.Connection) -> list[SiteRow]:
    rows = await conn.fetch(
        "SELECT s.site_id, s.name, s.grp, s.zone, s.region, s.token_sha256 IS NOT NULL AS enabled,"
        " coalesce(t.acked_seq, 0) AS acked_seq, t.head_seq, t.last_batch_at, t.last_event_at,"
        " coalesce(t.batches, 0) AS batches, coalesce(t.events, 0) AS events,"
        " coalesce(t.duplicates, 0) AS duplicates,"
        " (SELECT count(*) FROM rejects r WHERE r.site_id = s.site_id) AS rejects"
        " FROM sites s LEFT JOIN site_state t USING (site_id) ORDER BY s.site_id")
    return [SiteRow(**dict(r)) for r in rows]


@dataclass(frozen=True)
class Delivery:
    """One site's delivery as the metrics show it."""

    site_id: str
    acked_seq: int
    lag: int | None
    event_age: float | None
    """Seconds since the wall time of the newest event received."""
    batch_age: float | None


async def deliveries(conn: asyncpg.Connection) -> list[Delivery]:
    """Every site's delivery state in one small query (one row per site: cheap on every scrape)."""
    rows = await conn.fetch(
        "SELECT site_id, acked_seq, head_seq - acked_seq AS lag,"
        " extract(epoch FROM clock_timestamp() - last_event_at)::float8 AS event_age,"
        " extract(epoch FROM clock_timestamp() - last_batch_at)::float8 AS batch_age FROM site_state")
    return [Delivery(r["site_id"], r["acked_seq"], None if r["lag"] is None else max(0, r["lag"]),
                     r["event_age"], r["batch_age"]) for r in rows]
