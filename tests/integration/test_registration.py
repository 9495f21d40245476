"""`ivr run` with `sip.accounts`: it registers with digest at a real registrar (sipp), shows the state in
`ivr status`, and withdraws the registration (Expires: 0) when it stops."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tests.conftest import Env
from tests.integration.appliance import free_port, run_appliance

SCENARIO = Path(__file__).parent / "sipp" / "reg_auth.xml"


def test_daemon_registers_and_unregisters(env: Env) -> None:
    port = free_port()
    registrar = subprocess.Popen(["sipp", "-sf", str(SCENARIO), "-m", "1", "-i", "127.0.0.1", "-p", str(port),
                                  "-timeout", "60s", "-timeout_error", "-nostdin", "-trace_err"],
                                 cwd=env.root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    (env.root / "pbx.secret").write_text("regpass\n")
    with env.config.open("a") as f:
        f.write(f"sip: {{listen: '127.0.0.1:0', rtp_ports: 31000-31999, accounts: [{{aor: 'sip:2000@127.0.0.1',"
                f" registrar: '127.0.0.1:{port}', username: '2000', password_file: pbx.secret}}]}}\n")
    text = env.config.read_text()
    env.config.write_text(text.replace("sip: {listen: '127.0.0.1:0', rtp_ports: 31000-31999}\n", "", 1))
    try:
        for env_, _sip_port, _log in run_appliance(env):
            lines: list[str] = []
            for _ in range(100):  # bounded: the 401 round trip, then the 200
                lines = env_.ivr("status").json()["registrations"]
                if lines and "registered" in lines[0] and "retrying" not in lines[0]:
                    break
                time.sleep(0.1)
            assert lines and lines[0].startswith("sip:2000@127.0.0.1: registered, expires in"), lines
        # run_appliance stopped the daemon: the registrar saw the un-REGISTER (its scenario ends with it).
        assert registrar.wait(timeout=30) == 0, registrar.stderr.read() if registrar.stderr else ""
    finally:
        if registrar.poll() is None:
            registrar.kill()
