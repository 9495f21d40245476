"""The center at scale (issue 14 item 5): 1,000 sites post a busy day's events at once.

    .venv/bin/python bench/central.py                       # 1,000 sites × 350 calls ≈ 10⁷ events
    .venv/bin/python bench/central.py --sites 50 --calls 100  # a quick look

A throwaway PostgreSQL 15 (ivr_central.pgtemp) and ``ivr-central serve`` over TLS on 127.0.0.1, as in
production; the sites' days are made first (bench/central_workload.py: the simulator's own calls replayed,
with the PBX's queue_log rows) and written as the gzip NDJSON bodies the box's relay sends, so the timed part
measures the collector and PostgreSQL, not the generator. Then every site posts its batches in seq order,
all sites at once, each waiting for its 2xx before the next batch (as the relay does), honouring 503 +
Retry-After. Printed: ingest rate (events/s, batches/s), batch latency p50/p99, PostgreSQL's size per
million events, and the KPI / dashboard queries' p95 over the stored day.

Only loopback traffic; every loop is bounded by counts and a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import json
import os
import secrets
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
import trustme  # noqa: E402
from central_workload import SiteDay, record_templates  # noqa: E402

from ivr_central import db  # noqa: E402
from ivr_central.pgtemp import PgTemp, free_port  # noqa: E402

DAY = datetime(2026, 11, 30, tzinfo=UTC)


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def _write_batch(folder: Path, files: list[Path], lines: list[bytes]) -> int:
    body = b"".join(lines)
    f = folder / f"{len(files):05d}.ndjson.gz"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_bytes(gzip.compress(body, 6))
    files.append(f)
    lines.clear()
    return len(body)


def make_batches(work: Path, sites: int, calls: int, batch: int) -> tuple[dict[str, list[Path]], int, int]:
    """Each site's day as gzip NDJSON batch files; returns {site: [files]}, events, raw bytes."""
    templates = record_templates(work / "templates")
    out: dict[str, list[Path]] = {}
    total = raw = 0
    for i in range(sites):
        site = f"site-{i:04d}"
        files: list[Path] = []
        lines: list[bytes] = []
        for e in SiteDay(site, DAY, calls, templates, seed=i).events():
            lines.append(json.dumps(e, separators=(",", ":")).encode() + b"\n")
            total += 1
            if len(lines) >= batch:
                raw += _write_batch(work / "batches" / site, files, lines)
        if lines:
            raw += _write_batch(work / "batches" / site, files, lines)
        out[site] = files
        if (i + 1) % 100 == 0:
            print(f"  made {i + 1} sites, {total} events", file=sys.stderr)
    return out, total, raw


async def register(dsn: str, sites: list[str]) -> dict[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        await db.migrate(conn)
        tokens = {s: secrets.token_urlsafe(24) for s in sites}
        await conn.executemany("INSERT INTO sites (site_id, zone, region, token_sha256) VALUES ($1, $2, 'US', $3)",
                               [(s, "America/New_York", hashlib.sha256(t.encode()).hexdigest())
                                for s, t in tokens.items()])
        return tokens
    finally:
        await conn.close()


async def post_site(session: aiohttp.ClientSession, url: str, site: str, token: str, files: list[Path],
                    latencies: list[float], deadline: float) -> int:
    """Post one site's batches in order, each after the previous one's 2xx (the relay's rhythm)."""
    sent = 0
    for f in files:
        body = f.read_bytes()
        for _ in range(100):  # bounded retries of one batch
            if time.monotonic() > deadline:
                raise TimeoutError(f"{site}: deadline passed")
            t0 = time.perf_counter()
            try:
                async with session.post(url, data=body, headers={
                        "Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson",
                        "Content-Encoding": "gzip", "X-IVR-Site": site,
                        "Idempotency-Key": f"{site}:{f.stem}"}) as r:
                    answer = await r.read()
                    if 200 <= r.status < 300:
                        latencies.append(time.perf_counter() - t0)
                        sent += int(json.loads(answer)["inserted"]) + int(json.loads(answer)["duplicates"])
                        break
                    if r.status in (429, 503):
                        await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                        continue
                    raise RuntimeError(f"{site}: {r.status} {answer[:200]!r}")
            except (TimeoutError, aiohttp.ClientConnectionError):
                await asyncio.sleep(1)
    return sent


async def load(url: str, ca: Path, batches: dict[str, list[Path]], tokens: dict[str, str], connections: int
               ) -> tuple[float, int, list[float]]:
    ctx = ssl.create_default_context(cafile=str(ca))
    latencies: list[float] = []
    conn = aiohttp.TCPConnector(ssl=ctx, limit=connections)
    deadline = time.monotonic() + 6 * 3600
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=120)) as session:
        t0 = time.perf_counter()
        counts = await asyncio.gather(*(post_site(session, url, s, tokens[s], fs, latencies, deadline)
                                        for s, fs in batches.items()))
        return time.perf_counter() - t0, sum(counts), latencies


async def sizes(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT c.relname, pg_total_relation_size(c.oid) AS size FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') "
            "AND NOT c.relispartition")
        out = {r["relname"]: int(r["size"]) for r in rows}
        parts = await conn.fetchval("SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits "
                                    "WHERE inhparent = 'events'::regclass")
        out["events"] = int(parts)
        out["database"] = int(await conn.fetchval("SELECT pg_database_size(current_database())"))
        out["rows"] = int(await conn.fetchval("SELECT count(*) FROM events"))
        return out
    finally:
        await conn.close()


async def time_queries(dsn: str, url: str, ca: Path, viewer: str, sites: list[str], repeats: int
                       ) -> dict[str, tuple[float, float]]:
    """p50/p95 seconds of what a manager's browser asks the collector's dashboard for (over HTTPS, as it
    would), all sites and one site, the day and by hour; and ``report()``, every KPI, for one site."""
    from ivr_central import kpi
    out: dict[str, tuple[float, float]] = {}
    day = DAY.date().isoformat()
    views = {"all sites": {"since": day, "until": day}, "one site": {"since": day, "until": day,
                                                                      "sites": sites[0]}}
    ctx = ssl.create_default_context(cafile=str(ca))
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {viewer}"},
                                     timeout=aiohttp.ClientTimeout(total=600)) as s:
        for view, params in views.items():
            for table in ("summary", "series", "heatmap", "exits", "sites"):
                for by in ("day", "hour") if table == "series" else ("day",):
                    times = []
                    for _ in range(repeats):
                        t0 = time.perf_counter()
                        async with s.get(f"{url}/dashboard/api/{table}", params={**params, "by": by},
                                         ssl=ctx) as r:
                            await r.read()
                            if r.status != 200:
                                raise RuntimeError(f"dashboard {table}: {r.status}")
                        times.append(time.perf_counter() - t0)
                    name = f"dashboard {table}{' by ' + by if table == 'series' else ''}, {view}"
                    out[name] = (statistics.median(times), pct(times, 95))
    conn = await asyncpg.connect(dsn)
    try:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            await kpi.report(conn, sites=sites[:1], since=DAY, until=DAY + timedelta(days=1),
                             now=DAY + timedelta(days=1), zone="America/New_York", by="hour")
            times.append(time.perf_counter() - t0)
        out["kpi report(), every KPI, one site by hour"] = (statistics.median(times), pct(times, 95))
    finally:
        await conn.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sites", type=int, default=1000)
    ap.add_argument("--calls", type=int, default=350, help="calls per site in the day (≈29 events each)")
    ap.add_argument("--batch", type=int, default=500, help="events per batch (the relay's default)")
    ap.add_argument("--connections", type=int, default=200, help="client connections open at once")
    ap.add_argument("--repeats", type=int, default=10, help="runs of each query for its p95")
    ap.add_argument("--work", type=Path, default=None, help="keep the batches and the database here")
    ap.add_argument("--make-only", action="store_true",
                    help="only make the workload in --work (a later run with the same --work and sizes reuses it)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="central-bench-"))
    (work / "batches").mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    manifest = work / "batches" / "manifest.json"
    wanted = {"sites": args.sites, "calls": args.calls, "batch": args.batch}
    if manifest.exists() and json.loads(manifest.read_text())["wanted"] == wanted:  # made by --make-only
        m = json.loads(manifest.read_text())
        batches = {site: [Path(f) for f in files] for site, files in m["batches"].items()}
        events, raw = m["events"], m["raw"]
    else:
        batches, events, raw = make_batches(work, args.sites, args.calls, args.batch)
        manifest.write_text(json.dumps({"wanted": wanted, "events": events, "raw": raw,
                                        "batches": {s: [str(f) for f in fs] for s, fs in batches.items()}}))
    nbatches = sum(len(v) for v in batches.values())
    print(f"workload: {args.sites} sites, {events} events in {nbatches} batches "
          f"({raw / events:.0f} B/event raw), ready in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    if args.make_only:
        return 0

    pg = PgTemp(work / "pg")
    pg.start()
    server = None
    try:
        dsn = pg.create_db("central")
        tokens = asyncio.run(register(dsn, list(batches)))
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        (work / "tls").mkdir(exist_ok=True)
        ca.cert_pem.write_to_path(str(work / "tls" / "ca.pem"))
        cert.private_key_and_cert_chain_pem.write_to_path(str(work / "tls" / "server.pem"))
        port = free_port()
        cfg = work / "central.yaml"
        viewer = secrets.token_urlsafe(24)
        cfg.write_text(f"listen: 127.0.0.1:{port}\ndatabase: {dsn}\n"
                       f"tls:\n  cert: {work / 'tls' / 'server.pem'}\n  key: {work / 'tls' / 'server.pem'}\n"
                       f"dashboard:\n  viewers:\n    - {{name: bench, token_sha256: "
                       f"{hashlib.sha256(viewer.encode()).hexdigest()}}}\n")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with open(work / "collector.log", "wb") as log:
            server = subprocess.Popen([sys.executable, "-m", "ivr_central.cli", "--config", str(cfg), "serve"],
                                      env=env, stdout=subprocess.DEVNULL, stderr=log)
        url = f"https://127.0.0.1:{port}"
        ctx = ssl.create_default_context(cafile=str(work / "tls" / "ca.pem"))

        async def ready() -> None:
            async with aiohttp.ClientSession() as s:
                for _ in range(300):
                    try:
                        async with s.get(url + "/readyz", ssl=ctx) as r:
                            if r.status == 200:
                                return
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.1)
            raise RuntimeError(f"collector not ready; see {work / 'collector.log'}")

        asyncio.run(ready())
        took, stored, lat = asyncio.run(load(url + "/v1/events", work / "tls" / "ca.pem", batches, tokens,
                                             args.connections))
        size = asyncio.run(sizes(dsn))
        per_million = size["database"] / max(1, size["rows"]) * 1e6
        print(f"\ningest: {stored} events in {took:.1f} s = {stored / took:,.0f} events/s, "
              f"{nbatches / took:,.1f} batches/s ({args.sites} sites at once, {args.connections} connections)")
        print(f"batch latency: p50 {pct(lat, 50) * 1000:.0f} ms, p99 {pct(lat, 99) * 1000:.0f} ms "
              f"({len(lat)} batches of ≤{args.batch})")
        print(f"PostgreSQL: {size['rows']:,} events, database {size['database'] / 2**20:,.0f} MiB "
              f"= {per_million / 2**20:,.0f} MiB per million events (events table and indexes "
              f"{size['events'] / max(1, size['rows']) * 1e6 / 2**20:,.0f} MiB/M)")
        for name, (p50, p95) in asyncio.run(time_queries(dsn, url, work / "tls" / "ca.pem", viewer, list(batches),
                                                         args.repeats)).items():
            print(f"{name}: p50 {p50 * 1000:,.0f} ms, p95 {p95 * 1000:,.0f} ms")
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
        pg.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
