"""`ivr backup` and `ivr restore` (issue 16): a backup taken while another process writes the log is one
consistent moment, and a restore onto a fresh box gives back the pending callbacks and the unsent events."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, Env, make_env
from tests.integration.appliance import start_appliance, stop_appliance

WRITER = textwrap.dedent("""
    import asyncio, sys
    from datetime import UTC, datetime, timedelta
    from pathlib import Path
    from ivr.store.callbacks import CallbackStore, Consent
    from ivr.store.eventlog import EventLog

    async def main(path, count):
        log = await EventLog.open(Path(path), "test-site")
        store = CallbackStore(log)
        t0 = datetime(2026, 12, 1, 15, tzinfo=UTC)
        print("writing", flush=True)
        for i in range(count):
            now = t0 + timedelta(seconds=i)
            number = f"+1415555{i:04d}"
            await store.request(queue="support", number=number, zones=("America/New_York",), arrival_at=now,
                                consent=Consent(at=now, number=number, heard="offer", pressed="1"), now=now,
                                call_id=f"call-{i}")
        await log.close()

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
""")


def contents(path: Path) -> tuple[int, int, int, list[int]]:
    """(events, callback requests, callback.requested events, seqs) of a state file."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        seqs = [r[0] for r in db.execute("SELECT seq FROM events ORDER BY seq")]
        requests = db.execute("SELECT count(*) FROM callback_requests").fetchone()[0]
        requested = db.execute("SELECT count(*) FROM events WHERE type='callback.requested'").fetchone()[0]
        return len(seqs), requests, requested, seqs
    finally:
        db.close()


def test_backups_under_load_are_each_one_consistent_moment(env: Env, tmp_path: Path) -> None:
    env.state.mkdir(parents=True, exist_ok=True)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(env.state / "ivr.db"), "3000"], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    backups: list[Path] = []
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "writing"
        for i in range(4):
            time.sleep(0.3)
            r = env.ivr("backup", "--to", str(tmp_path / f"b{i}.db"))
            assert r.code == 0, r.err
            backups.append(tmp_path / f"b{i}.db")
    finally:
        assert writer.wait(timeout=120) == 0
    sizes = []
    for path in backups:
        assert not Path(f"{path}-wal").exists()  # one self-contained file
        assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        events, requests, requested, seqs = contents(path)
        # the callback rows and the events that record them were copied at the same instant, with no gap
        assert requests == requested and seqs == list(range(1, events + 1))
        sizes.append(requests)
    assert sizes == sorted(sizes) and sizes[0] > 0 and sizes[-1] <= 3000
    assert sizes[0] < 3000, "every backup came after the writer finished: nothing was tested under load"


def test_a_restore_onto_a_fresh_box_gives_back_callbacks_and_unsent_events(env: Env, tmp_path: Path,
                                                                           prompt_cache: Path) -> None:
    env.state.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", WRITER, str(env.state / "ivr.db"), "25"], cwd=REPO, check=True,
                   capture_output=True, timeout=120)
    before = env.ivr("callbacks", "list", "--json").json()
    unsent = env.ivr("sync", "status", "--json").json()["backlog"]
    assert len(before) == 25 and unsent > 0

    made = env.ivr("backup", "--keep", "3")
    assert made.code == 0, made.err
    folder = env.state / "backups"
    [file] = folder.glob("ivr-test-site-*.db")
    assert "25 callbacks waiting or in progress" in made.out

    fresh = make_env(tmp_path / "new-box", prompt_cache)  # the same site, new hardware: no state at all
    restored = fresh.ivr("restore", str(file))
    assert restored.code == 0, restored.err
    after = fresh.ivr("callbacks", "list", "--json").json()
    assert [(c["id"], c["number"], c["state"]) for c in after] == [(c["id"], c["number"], c["state"]) for c in before]
    status = fresh.ivr("sync", "status", "--json").json()
    assert status["backlog"] == unsent + 1  # and the state.restored event that says it happened
    events = fresh.ivr("events", "--json").out
    assert "state.restored" in events

    # restoring again keeps what it replaces
    again = fresh.ivr("restore", str(file))
    assert again.code == 0 and "kept as" in again.out
    assert len(list(fresh.state.glob("ivr.db.replaced-*"))) == 1


def test_restore_refuses_what_would_lose_data(env: Env, tmp_path: Path, prompt_cache: Path) -> None:
    env.state.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", WRITER, str(env.state / "ivr.db"), "3"], cwd=REPO, check=True,
                   capture_output=True, timeout=120)
    assert env.ivr("backup", "--to", str(tmp_path / "b.db")).code == 0

    not_a_backup = tmp_path / "notes.db"
    not_a_backup.write_text("hello", encoding="utf-8")
    r = env.ivr("restore", str(not_a_backup))
    assert r.code == 1 and "not a readable SQLite database" in r.err

    other = make_env(tmp_path / "other-site", prompt_cache)
    other.config.write_text(other.config.read_text().replace("id: test-site", "id: store-9"), encoding="utf-8")
    r = other.ivr("restore", str(tmp_path / "b.db"))
    assert r.code == 1 and "--force" in r.err and not (other.state / "ivr.db").exists()
    assert other.ivr("restore", "--force", str(tmp_path / "b.db")).code == 0

    proc, _, _ = start_appliance(env)
    try:
        r = env.ivr("restore", str(tmp_path / "b.db"))
        assert r.code == 1 and "stop it first" in r.err
    finally:
        stop_appliance(proc)


@pytest.mark.parametrize("keep", [2])
def test_keep_prunes_only_this_sites_older_backups(env: Env, keep: int) -> None:
    env.state.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", WRITER, str(env.state / "ivr.db"), "1"], cwd=REPO, check=True,
                   capture_output=True, timeout=120)
    folder = env.state / "backups"
    folder.mkdir()
    for stamp in ("20260101T000000Z", "20260102T000000Z", "20260103T000000Z"):
        (folder / f"ivr-test-site-{stamp}.db").write_bytes(b"")
    (folder / "ivr-other-20250101T000000Z.db").write_bytes(b"")
    r = env.ivr("backup", "--keep", str(keep))
    assert r.code == 0, r.err
    left = sorted(p.name for p in folder.iterdir())
    assert len([n for n in left if n.startswith("ivr-test-site-")]) == keep
    assert "ivr-other-20250101T000000Z.db" in left and "ivr-test-site-20260101T000000Z.db" not in left
