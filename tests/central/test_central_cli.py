"""``ivr-central`` commands in-process against a real PostgreSQL, and the config file's errors at their lines."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import stat
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from ivr.errors import ConfigError
from ivr_central import sites
from ivr_central.cli import main
from ivr_central.config import load_config


@dataclass
class Out:
    code: int
    out: str
    err: str


def run(*args: str) -> Out:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return Out(code, out.getvalue(), err.getvalue())


@pytest.fixture
def dsn_env(pg_dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    monkeypatch.setenv("IVR_CENTRAL_DSN", pg_dsn)
    monkeypatch.delenv("IVR_CENTRAL_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    return pg_dsn


def owner_of(dsn: str, token: str, claimed: str | None) -> sites.Auth:
    async def go() -> sites.Auth:
        conn = await asyncpg.connect(dsn)
        try:
            return await sites.authenticate(conn, token, claimed)
        finally:
            await conn.close()

    return asyncio.run(go())


def test_migrate_then_site_add_list_rotate_disable(dsn_env: str, tmp_path: Path) -> None:
    assert run("site", "list").err.strip() == "ivr-central: the database is not migrated: run ivr-central migrate"
    r = run("migrate")
    assert r.code == 0 and r.out.startswith("database schema at version ")
    r = run("site", "add", "store-042", "--group", "east", "--zone", "America/New_York", "--name", "Store 42")
    assert r.code == 0
    token = r.out.strip()
    assert len(token) >= 40 and "shown once" in r.err
    assert owner_of(dsn_env, token, "store-042") == sites.Auth(200, "store-042")
    assert run("site", "add", "store-042").code == 1  # exists
    r = run("site", "add", "bad id!", "--zone", "Mars/Base")
    assert r.code == 1 and "site id" in r.err and "unknown time zone" in r.err
    token_file = tmp_path / "s2.token"
    r = run("site", "add", "s2", "--token-file", str(token_file))
    assert r.code == 0 and r.out == "" and str(token_file) in r.err
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    t2 = token_file.read_text().strip()
    assert owner_of(dsn_env, t2, "s2").status == 200
    assert owner_of(dsn_env, t2, "store-042") == sites.Auth(403, "s2", "this token is not site 'store-042''s")
    r = run("site", "rotate-token", "store-042")
    new = r.out.strip()
    assert r.code == 0 and new != token
    assert owner_of(dsn_env, token, "store-042").status == 401
    assert owner_of(dsn_env, new, "store-042").status == 200
    assert run("site", "disable", "s2").code == 0
    assert owner_of(dsn_env, t2, "s2").status == 401
    assert run("site", "disable", "nope").err.strip() == "ivr-central: no site nope"
    r = run("site", "list")
    lines = r.out.splitlines()
    assert lines[0].split()[:4] == ["SITE", "GROUP", "ZONE", "STATE"]
    assert lines[1].split()[:5] == ["s2", "-", "UTC", "disabled", "0"]
    assert lines[2].split()[:6] == ["store-042", "east", "America/New_York", "enabled", "0", "?"]
    listed = json.loads(run("site", "list", "--json").out)
    assert [(s["site_id"], s["enabled"], s["acked_seq"], s["lag"]) for s in listed] == \
        [("s2", False, 0, None), ("store-042", True, 0, None)]


def test_postgres_unreachable_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from ivr_central.pgtemp import free_port

    monkeypatch.setenv("IVR_CENTRAL_DSN", f"postgresql://nobody@127.0.0.1:{free_port()}/x")
    monkeypatch.chdir(tmp_path)
    r = run("site", "list")
    assert r.code == 1 and len(r.err.splitlines()) == 1 and r.err.startswith("ivr-central: cannot use PostgreSQL")


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "central.yaml"
    p.write_text(text)
    return p


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(str(path), env={})
    return [str(p) for p in info.value.problems]


def test_config_errors_are_reported_at_their_line(tmp_path: Path) -> None:
    p = write(tmp_path, "listen: 0.0.0.0:8443\n"
                        "database: postgresql://db/central\n"
                        "limits:\n"
                        "  max_events: 0\n"
                        "  max_concurrent_batches: 50\n"
                        "pool: {size: 10}\n"
                        "metrics: {listen: nowhere}\n"
                        "tls_typo: 1\n")
    found = problems(p)
    assert found == [f"{p}:4:15: limits/max_events: 0 is less than the minimum of 1",
                     f"{p}:8:1: unknown key 'tls_typo' (allowed: dashboard, database, limits, listen, log, "
                     "metrics, pool, shutdown_seconds, tls)"]
    p = write(tmp_path, "listen: 0.0.0.0:8443\n"
                        "limits:\n"
                        "  max_concurrent_batches: 50\n"
                        "metrics: {listen: nowhere}\n")
    found = problems(p)
    assert found[0].startswith(f"{p}:1:9: listening on 0.0.0.0 without tls: plain HTTP is allowed on loopback")
    assert found[1].startswith(f"{p}:3:27: limits.max_concurrent_batches (50) is more than pool.size (10)")
    assert found[2] == f"{p}:4:19: listen is host:port, e.g. 127.0.0.1:9465"
    p = write(tmp_path, "tls: {cert: missing.pem, key: key.pem}\n")
    assert problems(p)[0] == f"{p}:1:13: tls.cert: no such file {tmp_path / 'missing.pem'}"


def test_a_good_config_and_the_dsn_from_the_environment(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("x")
    (tmp_path / "k.pem").write_text("x")
    p = write(tmp_path, "listen: '[::]:9443'\n"
                        "database: postgresql://ivr@db/central\n"
                        "tls: {cert: c.pem, key: k.pem, client_ca: c.pem}\n"
                        "limits: {max_events: 500}\n"
                        "metrics: {listen: 127.0.0.1:9465}\n"
                        "dashboard: {viewers: [{name: boss, token_sha256: " + "a" * 64 + "}]}\n")
    c = load_config(str(p), env={})
    assert (c.host, c.port, c.address) == ("::", 9443, "[::]:9443")
    assert c.dsn == "postgresql://ivr@db/central"
    assert c.tls is not None and c.tls.client_ca == tmp_path / "c.pem"
    assert c.limits.max_events == 500 and c.limits.max_concurrent_batches == 8
    assert c.metrics.listen == ("127.0.0.1", 9465)
    assert c.dashboard.viewers[0].name == "boss"
    assert load_config(str(p), env={"IVR_CENTRAL_DSN": "postgresql://other/x"}).dsn == "postgresql://other/x"
