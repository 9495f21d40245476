"""A throw-away DNS server for RFC 3263 tests: dnsmasq on 127.0.0.1:<free port> answering only the
records a test gives it (`--srv-host=...`, `--host-record=...`), logging every query to
`<root>/dnsmasq.log` so a test can see what was asked."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.appliance import free_port

#: `pytestmark = needs_dnsmasq` in a module whose tests start one.
needs_dnsmasq = pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="dnsmasq is not installed (setup.sh test)")


def srv_records(name: str, targets: list[tuple[str, int]], address: str = "127.0.0.1") -> list[str]:
    """dnsmasq options for `_sip._udp.<name>` naming `targets` (host, port) at priorities 10, 20, ...,
    each host an A record of `address`."""
    records = []
    for i, (host, port) in enumerate(targets):
        records.append(f"--srv-host=_sip._udp.{name},{host},{port},{10 * (i + 1)},100")
        records.append(f"--host-record={host},{address}")
    return records


@contextmanager
def dnsmasq(root: Path, *records: str) -> Iterator[int]:
    """A DNS server on 127.0.0.1:<free port> answering only `records` (dnsmasq options), nothing else."""
    port = free_port()
    proc = subprocess.Popen(["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                             "--no-poll", "--user=root", "--bind-interfaces", "--listen-address=127.0.0.1",
                             f"--port={port}", "--local-ttl=60", f"--pid-file={root / 'dnsmasq.pid'}",
                             "--log-queries", f"--log-facility={root / 'dnsmasq.log'}", *records],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(50):  # bounded: until it logs that it started
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read() if proc.stderr else "dnsmasq died")
            log = root / "dnsmasq.log"
            if log.exists() and "started" in log.read_text():
                break
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
