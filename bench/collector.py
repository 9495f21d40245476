"""How fast the collector checks and stores batches (docs/central-collector.md, "Throughput").

Two figures:
- validation alone (ivr_central.validate.read_batch on gzip NDJSON batches, one core): events/s;
- end to end: ``ivr-central serve`` as its own process over HTTPS (TLS, trustme certificates) with a throwaway
  PostgreSQL 15 (ivr_central.pgtemp), ``--sites`` boxes posting ``--batches`` batches of ``--events`` each,
  concurrently: events/s, batches/s, batch latency p50/p99 as the boxes saw it.

The boxes run in this process, so on a small machine they take CPU from the collector and PostgreSQL; the
figure is a floor. Run: ``python bench/collector.py [--sites 50 --batches 20 --events 500]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import asyncpg
import trustme

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ivr_central import db, sites, validate  # noqa: E402
from ivr_central.pgtemp import PgTemp, free_port  # noqa: E402
from tests.central.helpers import events, gz, headers, ndjson  # noqa: E402


def start_collector(config: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "ivr_central.cli", "--config", str(config), "serve"],
                            env=env, cwd=REPO)


def bench_validation(n_events: int, seconds: float = 3.0) -> float:
    body = gz(ndjson(events("s1", 1, n_events)))
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        batch = validate.read_batch(body, content_type=validate.CONTENT_TYPE, content_encoding="gzip", site="s1",
                                    max_decompressed=64 << 20, max_events=100_000)
        done += len(batch.events)
    return done / (time.perf_counter() - t0)


async def bench_ingest(root: Path, n_sites: int, n_batches: int, n_events: int) -> dict[str, float]:
    pg = PgTemp(root / "pg", settings={"fsync": "on", "synchronous_commit": "on"})
    await asyncio.to_thread(pg.start)
    proc: subprocess.Popen[bytes] | None = None
    try:
        dsn = pg.create_db("central")
        conn = await asyncpg.connect(dsn)
        await db.migrate(conn)
        tokens = {f"site{i:04d}": await sites.add_site(conn, f"site{i:04d}") for i in range(n_sites)}
        await conn.close()
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        cert.private_key_and_cert_chain_pem.write_to_path(str(root / "server.pem"))
        port = free_port()
        (root / "central.yaml").write_text(
            f"listen: 127.0.0.1:{port}\ndatabase: {dsn}\ntls: {{cert: server.pem, key: server.pem}}\n"
            "limits: {max_concurrent_batches: 8}\npool: {size: 12}\nlog: {level: warning}\n")
        proc = start_collector(root / "central.yaml")
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        url = f"https://127.0.0.1:{port}"
        # every batch made before the clock starts: the boxes' own work is not the collector's
        bodies = {site: [] for site in tokens}  # type: dict[str, list[tuple[bytes, dict[str, str]]]]
        for site, token in tokens.items():
            for b in range(n_batches):
                evs = events(site, 1 + b * n_events, n_events)
                raw = ndjson(evs)
                bodies[site].append((gz(raw), headers(site, token, evs, raw, head_seq=n_batches * n_events)))
        latencies: list[float] = []
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=n_sites)) as s:
            for _ in range(300):
                try:
                    async with s.get(f"{url}/readyz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)

            async def box(site: str) -> None:
                for body, h in bodies[site]:
                    while True:
                        t = time.perf_counter()
                        async with s.post(f"{url}/v1/events", data=body, headers=h) as r:
                            await r.read()
                            if r.status == 200:
                                latencies.append(time.perf_counter() - t)
                                break
                            assert r.status == 503, r.status
                        await asyncio.sleep(0.05)

            t0 = time.perf_counter()
            await asyncio.gather(*(box(site) for site in tokens))
            elapsed = time.perf_counter() - t0
        conn = await asyncpg.connect(dsn)
        stored = await conn.fetchval("SELECT count(*) FROM events")
        size = await conn.fetchval("SELECT sum(pg_total_relation_size(c.oid)) FROM pg_inherits i "
                                   "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'events'::regclass")
        await conn.close()
        total = n_sites * n_batches * n_events
        assert stored == total, (stored, total)
        latencies.sort()
        return {"events": total, "seconds": elapsed, "events_per_s": total / elapsed,
                "batches_per_s": n_sites * n_batches / elapsed,
                "p50_ms": 1000 * latencies[len(latencies) // 2],
                "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
                "bytes_per_event": size / total}
    finally:
        if proc is not None:
            proc.terminate()
            await asyncio.to_thread(proc.wait, 30)
        await asyncio.to_thread(pg.stop)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sites", type=int, default=50)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--events", type=int, default=500)
    args = p.parse_args()
    print(f"cores: {os.cpu_count()}")
    print(f"validation: {bench_validation(args.events):,.0f} events/s on one core ({args.events}-event batches)")
    with tempfile.TemporaryDirectory(prefix="bench-collector-") as d:
        r = asyncio.run(bench_ingest(Path(d), args.sites, args.batches, args.events))
    print(f"ingest: {r['events']:,} events from {args.sites} sites in {r['seconds']:.1f} s: "
          f"{r['events_per_s']:,.0f} events/s, {r['batches_per_s']:.1f} batches/s, "
          f"batch latency p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms; "
          f"PostgreSQL {r['bytes_per_event']:.0f} bytes per event (events and indexes)")


if __name__ == "__main__":
    main()
