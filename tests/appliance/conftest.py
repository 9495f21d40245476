"""The appliance tests boot the built image (firmware/build/edge-ivr.img) in qemu: slow, and skipped unless
the image exists and qemu can run it (KVM; or TCG when FW_ACCEL=tcg, as firmware/test.sh allows where KVM
cannot run firmware). `bash firmware/test.sh` builds what is missing and runs them."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.appliance import vm as vmmod

ACCEL: str | None = None
SKIP: str | None = None


def _decide() -> tuple[str | None, str | None]:
    if not vmmod.IMAGE.exists():
        return None, f"no firmware image at {vmmod.IMAGE}: run `bash firmware/test.sh` (builds it, ~5 min)"
    if not vmmod.OVMF_CODE.exists():
        return None, "OVMF not installed (apt-get install ovmf)"
    wanted = os.environ.get("FW_ACCEL", "kvm")
    why = vmmod.kvm_usable()
    if why is None and wanted == "kvm":
        return "kvm", None
    if wanted == "tcg" and vmmod.QEMU is not None:
        return "tcg", None
    return None, f"{why}; FW_ACCEL=tcg runs these tests under emulation (firmware/test.sh sets it here)"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    global ACCEL, SKIP
    needs_vm = [i for i in items if "vm_needed" in i.keywords]
    if not needs_vm:
        return
    ACCEL, SKIP = _decide()
    if SKIP:
        for item in needs_vm:
            item.add_marker(pytest.mark.skip(reason=SKIP))
    elif ACCEL == "tcg":
        vmmod.SLOW = float(os.environ.get("FW_SLOW", "3"))


SITE_CONFIG = """\
site:
  id: qemu-test
state_dir: /var/lib/ivr
flows_dir: flows
prompts:
  cache_dir: /var/lib/ivr/prompt-cache   # on the data partition: rendered once, kept across updates
sip:
  listen: 0.0.0.0:5060
  allowed_peers: [127.0.0.1, 10.0.2.2]   # the box's own health check, and the host through qemu's user-net
  rtp_ports: 20000-20099
"""


@pytest.fixture(scope="session")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[vmmod.Vm]:
    """One VM for the whole session (tests run in file order: boot, then updates)."""
    work = tmp_path_factory.mktemp("vm")
    key = work / "id_test"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    stick = vmmod.make_config_stick(work / "stick.img", pubkey=(work / "id_test.pub").read_text(),
                                    config=SITE_CONFIG, firewall="management: [10.0.2.2/32]\n",
                                    health_timeout=int(120 * vmmod.SLOW))
    machine = vmmod.Vm(work, stick, key, accel=ACCEL or "kvm")
    machine.start()
    try:
        yield machine
    finally:
        machine.kill()
        print(f"serial log: {machine.serial}")


def db_digest(machine: vmmod.Vm, upto: dict[str, int] | None = None) -> dict[str, dict[str, object]]:
    """Per table of the event log DB: rows, max rowid and a sha256 over the rows up to a rowid (read-only)."""
    script = r"""
import hashlib, json, sqlite3, sys
upto = json.loads(sys.argv[1])
db = sqlite3.connect("file:/var/lib/ivr/ivr.db?mode=ro", uri=True)
out = {}
for (t,) in db.execute("select name from sqlite_master where type='table' and name not like 'sqlite_%'"):
    try:
        hi = db.execute(f'select max(rowid) from "{t}"').fetchone()[0] or 0
    except sqlite3.OperationalError:
        continue  # WITHOUT ROWID
    lim = upto.get(t, hi)
    h = hashlib.sha256()
    for row in db.execute(f'select * from "{t}" where rowid <= ? order by rowid', (lim,)):
        h.update(repr(row).encode())
    n = db.execute(f'select count(*) from "{t}" where rowid <= ?', (lim,)).fetchone()[0]
    out[t] = {"rows": n, "max_rowid": lim, "sha256": h.hexdigest()}
print(json.dumps(out))
"""
    import json
    import shlex

    arg = json.dumps(upto or {})
    out = machine.ssh(f"/opt/ivr/venv/bin/python -c {shlex.quote(script)} {shlex.quote(arg)}")
    return json.loads(out.stdout)


@pytest.fixture(scope="session")
def bundles() -> Path:
    return vmmod.BUNDLES


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "vm_needed: boots the firmware image in qemu (slow)")


__all__ = ["db_digest", "Path"]
