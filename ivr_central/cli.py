"""The ``ivr-central`` command: run the collector, migrate its database, manage the sites that post to it.

Every failure is one line on stderr and a non-zero exit: a config error (``file:line:column``), PostgreSQL
unreachable, a site that exists or does not, an address already taken.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from ivr import log as ivr_log
from ivr.errors import ConfigError
from ivr_central import db, sites
from ivr_central.config import CentralConfig, load_config

T = TypeVar("T")


class _Exit(Exception):  # noqa: N818 - control flow, not a fault
    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _config(args: argparse.Namespace) -> CentralConfig:
    return load_config(args.config)


def _on_db(config: CentralConfig, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """Run ``work`` on one connection; PostgreSQL's faults become one line and exit 1."""
    if not config.dsn:
        raise _Exit(1, "no database: set database: in the config or $IVR_CENTRAL_DSN")
    dsn = config.dsn

    async def run() -> T:
        conn = await asyncpg.connect(dsn, timeout=config.pool.connect_timeout)
        try:
            return await work(conn)
        finally:
            await conn.close()

    try:
        return asyncio.run(run())
    except sites.SiteError as exc:
        raise _Exit(1, str(exc)) from None
    except asyncpg.UndefinedTableError:
        raise _Exit(1, "the database is not migrated: run ivr-central migrate") from None
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        text = " ".join(str(exc).split())
        raise _Exit(1, f"cannot use PostgreSQL: {type(exc).__name__}: {text}") from None


def cmd_serve(args: argparse.Namespace) -> int:
    from ivr_central.server import serve

    config = _config(args)
    ivr_log.setup(config.log_level, config.log_format)
    if os.environ.get("IVR_LOOP", "uvloop") != "asyncio":  # as `ivr run`: uvloop when installed
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return int(uvloop.run(serve(config)))
    return asyncio.run(serve(config))


def cmd_migrate(args: argparse.Namespace) -> int:
    version = _on_db(_config(args), db.migrate)
    print(f"database schema at version {version}")
    return 0


def _open_token_file(path: Path) -> int:
    """Open (create or truncate) the token file with mode 0600 before anything is changed, so a path that
    cannot be written stops the command while the old token still works."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        os.fchmod(fd, 0o600)
    except OSError as exc:
        raise _Exit(1, f"cannot write {path}: {exc.strerror}") from None
    return fd


def _issue(args: argparse.Namespace, verb: str, work: Callable[[asyncpg.Connection, str], Awaitable[str]]) -> int:
    """Issue a token (add, rotate-token): shown once on stdout, or written to --token-file (0600)."""
    token = sites.new_token()
    fd = _open_token_file(Path(args.token_file)) if args.token_file else None
    try:
        _on_db(_config(args), lambda conn: work(conn, token))
    except BaseException:
        if fd is not None:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(args.token_file)
        raise
    if fd is not None:
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        print(f"site {args.id} {verb}; its token is in {args.token_file} (mode 0600)", file=sys.stderr)
    else:
        print(f"site {args.id} {verb}; its token (shown once, only its SHA-256 is kept):", file=sys.stderr)
        print(token)
    return 0


def cmd_site(args: argparse.Namespace) -> int:
    if args.action == "add":
        return _issue(args, "added", lambda conn, token: sites.add_site(
            conn, args.id, name=args.name, grp=args.group, zone=args.zone, region=args.region, token=token))
    if args.action == "rotate-token":
        return _issue(args, "has a new token (the old one no longer works)",
                      lambda conn, token: sites.rotate_token(conn, args.id, token))
    if args.action == "disable":
        _on_db(_config(args), lambda conn: sites.disable(conn, args.id))
        print(f"site {args.id} disabled: its box now gets 401 (site rotate-token {args.id} enables it again)",
              file=sys.stderr)
        return 0
    rows = _on_db(_config(args), sites.list_sites)
    if args.json:
        print(json.dumps([_row_json(r) for r in rows], indent=2))
    else:
        print(render_sites(rows, datetime.now(UTC)))
    return 0


def _row_json(r: sites.SiteRow) -> dict[str, Any]:
    out: dict[str, Any] = {k: getattr(r, k) for k in r.__dataclass_fields__}
    for k in ("last_batch_at", "last_event_at"):
        out[k] = out[k].isoformat() if out[k] else None
    out["lag"] = r.lag
    return out


def _age(t: datetime | None, now: datetime) -> str:
    if t is None:
        return "never"
    s = max(0.0, (now - t).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s / size:.0f}{unit} ago"
    return f"{s:.0f}s ago"


def render_sites(rows: list[sites.SiteRow], now: datetime) -> str:
    """``site list`` as a table: who is enabled and how far each site's delivery is."""
    head = ("SITE", "GROUP", "ZONE", "STATE", "ACKED", "LAG", "LAST BATCH", "NEWEST EVENT", "EVENTS", "DUPS",
            "REJECTS")
    body = [(r.site_id, r.grp or "-", r.zone, "enabled" if r.enabled else "disabled", str(r.acked_seq),
             "?" if r.lag is None else str(r.lag), _age(r.last_batch_at, now), _age(r.last_event_at, now),
             str(r.events), str(r.duplicates), str(r.rejects)) for r in rows]
    if not body:
        return "no sites (ivr-central site add ID)"
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
    return "\n".join("  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)).rstrip()
                     for line in (head, *body))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ivr-central", description="edge-ivr central: the collector of every "
                                                                "site's events (docs/central-collector.md)")
    p.add_argument("--config", help="config file (default: $IVR_CENTRAL_CONFIG, /etc/ivr/central.yaml, built-in)")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the collector")
    s.set_defaults(func=cmd_serve)
    s = sub.add_parser("migrate", help="apply the database migrations not yet applied")
    s.set_defaults(func=cmd_migrate)
    s = sub.add_parser("site", help="add, list, rotate the token of, or disable a site")
    acts = s.add_subparsers(dest="action", required=True)
    a = acts.add_parser("add", help="register a site and print its token once")
    a.add_argument("id", help="the box's site.id")
    a.add_argument("--name", default="")
    a.add_argument("--group", default="", help="a group of sites (region, brand, ...)")
    a.add_argument("--zone", default="UTC", help="the site's IANA zone: its days and hours (default UTC)")
    a.add_argument("--region", default="US", help="ISO 3166 region its caller IDs are read in (default US)")
    a.add_argument("--token-file", help="write the token to this file (mode 0600) instead of printing it")
    a = acts.add_parser("list", help="the sites with their delivery: acked seq, lag, last batch")
    a.add_argument("--json", action="store_true")
    a = acts.add_parser("rotate-token", help="issue a new token (the old one stops working at once)")
    a.add_argument("id")
    a.add_argument("--token-file", help="write the token to this file (mode 0600) instead of printing it")
    a = acts.add_parser("disable", help="forget the site's token: its box gets 401; its events stay")
    a.add_argument("id")
    s.set_defaults(func=cmd_site)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    except _Exit as exc:
        if exc.message:
            print(f"ivr-central: {exc.message}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
