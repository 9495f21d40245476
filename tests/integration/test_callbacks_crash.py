"""50 SIGKILLs of `ivr run` at random moments while callback requests stream in and the dialer calls a sipp
phone that rings and never answers (so attempts are in flight for a while: killed mid-INVITE, mid-CANCEL,
mid-commit), each followed by a restart. Then, from the database alone:
- every request whose filing returned (committed) is still there;
- no two overlapping attempts for one request (each attempt ended before the next began; none left open);
- no redial inside the retry interval (the next attempt began at least the interval after the previous
  one ended, whether it ended by itself or was found interrupted after a restart).
Short intervals and bounded loops keep the whole test within a few minutes.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from tests.conftest import Env
from tests.integration.appliance import free_port, start_appliance
from tests.integration.test_callbacks import SCENARIOS, configure, file_request, gap

KILLS = 50
INTERVAL = 2.0


@pytest.mark.skipif(subprocess.run(["which", "sipp"], capture_output=True).returncode != 0,
                    reason="sipp (Debian sip-tester) not installed")
def test_fifty_sigkills_lose_nothing_and_never_dial_twice(env: Env) -> None:
    customer_port, agent_port = free_port(), free_port()
    configure(env, customer_port, agent_port, intervals=f"[{INTERVAL}]", max_attempts=1000, ring_timeout=1)
    # an interrupted attempt backs off the same interval here (policy.after_interruption), not the default 60 s
    env.config.write_text(env.config.read_text().replace(
        "expiry: 3600", f"expiry: 3600, after_interruption: {INTERVAL}"))
    (env.state).mkdir(parents=True, exist_ok=True)
    phone_dir = env.root / "phone"
    phone_dir.mkdir()
    # one phone for every number (sipp answers any INVITE): rings, waits for our CANCEL, answers it with 487
    phone = subprocess.Popen(
        ["sipp", "-sf", str(SCENARIOS / "uas_ring_no_answer.xml"), "-i", "127.0.0.1", "-p", str(customer_port),
         "-nostdin", "-timeout", "600s"], cwd=phone_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rng = random.Random(20261127)
    committed: list[str] = []
    log = env.root / "daemon.log"
    try:
        for i in range(KILLS):
            proc = subprocess.Popen([sys.executable, "-m", "ivr.cli", "--config", str(env.config), "run"],
                                    stdout=subprocess.DEVNULL, stderr=log.open("a"))
            try:
                # a random moment: during start-up (about 2 s), reconcile, a dial, a commit (at most 5 s)
                time.sleep(rng.uniform(0.3, 3.0))
                if rng.random() < 0.7 and len(committed) < 40:
                    rid, _ = file_request(env, number=f"+1212555{1000 + i:04d}")
                    committed.append(rid)
                time.sleep(rng.uniform(0.0, 2.0))
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
        # a last, orderly run: reconcile what the last kill left, dial a little, stop with SIGTERM
        proc, _port, _log = start_appliance(env)
        time.sleep(3.0)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        phone.kill()
        phone.wait()
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert len(committed) >= 20

    with sqlite3.connect(env.state / "ivr.db") as db:
        db.row_factory = sqlite3.Row
        ids = {r["id"] for r in db.execute("SELECT id FROM callback_requests")}
        rows = [dict(r) for r in db.execute("SELECT * FROM callback_attempts ORDER BY request_id, n")]
    assert set(committed) <= ids, "a committed request was lost"
    by_request: dict[str, list[dict[str, object]]] = {}
    for r in rows:
        by_request.setdefault(str(r["request_id"]), []).append(r)
    assert sum(len(v) for v in by_request.values()) >= 20, "the dialer hardly dialled"
    interrupted = 0
    for rid, atts in by_request.items():
        assert [a["n"] for a in atts] == list(range(1, len(atts) + 1)), rid
        assert all(a["outcome"] is not None for a in atts), f"{rid}: attempt left open after a clean stop"
        interrupted += sum(1 for a in atts if a["outcome"] == "interrupted")
        for a, b in zip(atts, atts[1:], strict=False):
            assert gap(str(a["ended_at"]), str(b["started_at"])) >= INTERVAL - 0.001, (
                f"{rid}: attempt {b['n']} began {gap(str(a['ended_at']), str(b['started_at'])):.2f} s after"
                f" attempt {a['n']} ended ({a['outcome']})")
    assert interrupted >= 5, "the kills hardly ever hit an attempt in flight; the test proved little"
