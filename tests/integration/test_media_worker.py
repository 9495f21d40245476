"""`ivr run` with its media in a worker process (sip.media_worker, the default; issue 19 item 2): the worker is
the daemon's child, a caller walks the menu through it, a killed worker is one ERROR line and the next caller
is served by a new one; `sip.media_workers: 2` runs two, both the daemon's children, and while one is replaced
the other serves; `sip.media_worker: false` keeps the media on the daemon's loop, and calls work there too.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import Env
from tests.integration import scenarios
from tests.integration.appliance import start_appliance, stop_appliance
from tests.integration.test_calls import dtmf_of, keys_by, last_call, sipp

pytestmark = pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp (Debian sip-tester) not installed")


def walk_menu(env: Env, port: int) -> None:
    steps, te = keys_by("rfc2833", "2", env.root)
    sipp(scenarios.call("keys by rfc2833", steps, telephone_event=te), port, env.root)
    call = last_call(env)
    assert call["path"] == ["menu", "two"] and call["outcome"] == "hangup"
    assert dtmf_of(env, call["call_id"]) == [("2", "rfc4733")]


def children(pid: int) -> set[int]:
    return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def test_a_killed_media_worker_is_replaced_and_the_next_caller_is_served(env: Env) -> None:
    proc, port, log = start_appliance(env)
    try:
        for _ in range(100):  # the daemon is READY before its worker is (the first call would wait for it)
            media = env.ivr("status").json()["media"]
            if media["worker_pid"]:
                break
            time.sleep(0.1)
        worker = media["worker_pid"]
        assert worker in children(proc.pid) and media["worker_restarts"] == 0
        walk_menu(env, port)
        os.kill(worker, signal.SIGKILL)
        for _ in range(100):  # bounded: 10 s for the daemon to notice and start another
            media = env.ivr("status").json()["media"]
            if media["worker_restarts"] == 1 and media["worker_pid"] not in (0, worker):
                break
            time.sleep(0.1)
        assert media["worker_restarts"] == 1 and media["worker_pid"] in children(proc.pid)
        walk_menu(env, port)
        errors = [line for line in log.read_text().splitlines() if "level=error" in line or "ERROR" in line]
        assert len(errors) == 1 and "media worker" in errors[0], errors
        assert "Traceback" not in log.read_text()
    finally:
        stop_appliance(proc)
    assert proc.returncode == 0
    with pytest.raises(ProcessLookupError):  # the worker went with the daemon
        for _ in range(50):
            os.kill(media["worker_pid"], 0)
            time.sleep(0.1)


def test_two_media_workers_are_the_daemons_children_and_one_serves_while_the_other_is_replaced(env: Env) -> None:
    text = env.config.read_text().replace("rtp_ports: 31000-31999}", "rtp_ports: 31000-31999, media_workers: 2}")
    env.config.write_text(text)
    proc, port, log = start_appliance(env)
    try:
        for _ in range(100):  # the daemon is READY before its workers are
            media = env.ivr("status").json()["media"]
            if all(media["worker_pids"]):
                break
            time.sleep(0.1)
        workers = media["worker_pids"]
        assert len(set(workers)) == 2 and set(workers) == children(proc.pid), (workers, children(proc.pid))
        assert media["worker_pid"] == workers[0] and media["worker_restarts"] == 0
        walk_menu(env, port)
        os.kill(workers[0], signal.SIGKILL)
        for _ in range(100):  # the daemon noticed (a call in between would have lost its media with it)
            if env.ivr("status").json()["media"]["worker_pids"][0] != workers[0]:
                break
            time.sleep(0.05)
        walk_menu(env, port)  # at once: the other worker takes calls while the first is replaced (~0.5 s)
        for _ in range(100):
            media = env.ivr("status").json()["media"]
            if media["worker_restarts"] == 1 and all(media["worker_pids"]):
                break
            time.sleep(0.1)
        assert media["worker_pids"][1] == workers[1] and media["worker_pids"][0] not in (0, workers[0])
        assert set(media["worker_pids"]) == children(proc.pid)
        errors = [line for line in log.read_text().splitlines() if "level=error" in line or "ERROR" in line]
        assert len(errors) == 1 and f"media worker pid={workers[0]} exited: 0 calls" in errors[0], errors
        assert "Traceback" not in log.read_text()
    finally:
        stop_appliance(proc)
    assert proc.returncode == 0


def test_media_on_the_daemons_own_loop_when_the_worker_is_turned_off(env: Env) -> None:
    text = env.config.read_text().replace("rtp_ports: 31000-31999}", "rtp_ports: 31000-31999, media_worker: false}")
    env.config.write_text(text)
    proc, port, _ = start_appliance(env)
    try:
        media = env.ivr("status").json()["media"]
        assert "worker_pid" not in media and children(proc.pid) == set()
        walk_menu(env, port)
    finally:
        stop_appliance(proc)
