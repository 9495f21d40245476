"""Signed A/B updates in qemu: a good bundle is installed, booted and kept; one whose service never becomes
READY is rolled back after the boot-count limit; another key, a tampered bundle and a downgrade are
refused; the data partition's event log and callbacks are the same before and after; a power cut during
an install leaves the box on a complete slot."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.appliance.conftest import db_digest
from tests.appliance.vm import BUNDLES, Vm

pytestmark = pytest.mark.vm_needed
FIGURES: dict[str, float] = {}


def _bundle(name: str) -> Path:
    path = BUNDLES / name
    if not path.exists():
        pytest.skip(f"{path} missing: `bash firmware/test.sh` builds the test bundles")
    return path


def _status(vm: Vm) -> dict:
    return json.loads(vm.ssh("ivr update status --json").stdout)


def _same_data(vm: Vm, before: dict) -> None:
    after = db_digest(vm, {t: v["max_rowid"] for t, v in before.items()})
    assert after == before  # every row there before the update, byte for byte (row counts + sha256)


def _install(vm: Vm, bundle: Path, *flags: str) -> tuple[int, str]:
    """Install from the read-only BUNDLES disk the harness attaches (firmware/build/test)."""
    vm.ssh("mkdir -p /run/bundles; mountpoint -q /run/bundles || mount -o ro LABEL=BUNDLES /run/bundles")
    start = time.monotonic()
    out = vm.ssh(f"ivr update install /run/bundles/{bundle.name} {' '.join(flags)}; echo rc=$?", timeout=900,
                 check=False)
    FIGURES[f"install_{bundle.name}_s"] = time.monotonic() - start
    text = out.stdout + out.stderr
    rc = int(text.rsplit("rc=", 1)[1].split()[0])
    return rc, text


@pytest.fixture(scope="module")
def healthy(vm: Vm) -> Vm:
    vm.wait_ssh(timeout=300)
    vm.wait_for("systemctl is-active ivr-health.service", "active", timeout=400, line=True)
    return vm


def test_refused_other_key_tampered_downgrade(healthy: Vm) -> None:
    vm = healthy
    before = _status(vm)
    for name, why in (("other-key-0.1.4.raucb", "signature"), ("tampered-0.1.1.raucb", ""),
                      ("edge-ivr-0.0.9.raucb", "downgrade")):
        rc, text = _install(vm, _bundle(name))
        assert rc != 0, text
        assert "refus" in text.lower() or "fail" in text.lower(), text
        if why:
            assert why in text.lower(), text
    assert _status(vm)["grubenv"] == before["grubenv"]  # nothing was marked, ORDER unchanged


def test_good_bundle_installed_booted_and_kept(healthy: Vm) -> None:
    vm = healthy
    before = db_digest(vm)
    rc, text = _install(vm, _bundle("edge-ivr-0.1.1.raucb"))
    assert rc == 0, text
    print(f"install 0.1.1: {FIGURES['install_edge-ivr-0.1.1.raucb_s']:.0f} s")
    env = _status(vm)["grubenv"]
    assert env["ORDER"].startswith("B") and env["B_OK"] == "1", env
    vm.reboot()
    vm.wait_for("systemctl is-active ivr-health.service", "active", timeout=400, line=True)
    st = _status(vm)
    assert st["booted"] == "B" and st["version"] == "0.1.1", st
    assert st["grubenv"]["B_TRY"] == "0", st  # kept: marked good
    _same_data(vm, before)


def test_bundle_never_ready_is_rolled_back(healthy: Vm) -> None:
    vm = healthy
    before = db_digest(vm)
    rc, text = _install(vm, _bundle("edge-ivr-0.1.2.raucb"))
    assert rc == 0, text
    tries = int(vm.ssh("cat /usr/lib/ivr-firmware/boot-tries").stdout.strip())
    serial_from = vm.serial.stat().st_size
    start = time.monotonic()
    vm.ssh("systemctl reboot", check=False, timeout=30)
    # Slot A (0.1.2) boots, never becomes healthy, reboots itself until its tries are spent; then B again.
    deadline = time.monotonic() + 3600
    while time.monotonic() < deadline:
        time.sleep(30)
        try:
            out = vm.ssh("cat /proc/cmdline; systemctl is-active ivr-health.service", timeout=60, check=False)
        except Exception:  # noqa: BLE001 - the box is rebooting
            continue
        if "rauc.slot=B" in out.stdout and out.stdout.split()[-1:] == ["active"]:
            break
    FIGURES["rollback_s"] = time.monotonic() - start
    st = _status(vm)
    assert st["booted"] == "B" and st["version"] == "0.1.1", st
    assert st["grubenv"]["A_OK"] == "1" and int(st["grubenv"]["A_TRY"]) >= tries, st  # tries spent on A
    # The boots as GRUB chose them (the serial console): slot A with TRY 1..N, then B. (Not the journal: it is
    # on each slot's root file system, so slot B's holds nothing of A's boots and their "not healthy": seen.)
    with vm.serial.open("rb") as f:
        f.seek(serial_from)
        console = f.read().decode(errors="replace")
    boots: list[tuple[str, str]] = []
    for b in re.findall(r"Booting `edge-ivr slot ([AB]) \(OK=1 TRY=(\d+)\)", console):
        if not boots or boots[-1] != b:  # GRUB prints each line twice
            boots.append(b)
    assert boots == [("A", str(i)) for i in range(1, tries + 1)] + [("B", "1")], boots
    print(f"rolled back: GRUB booted {boots}; back on B, kept, {FIGURES['rollback_s']:.0f} s after the reboot")
    _same_data(vm, before)


def test_power_cut_during_install(healthy: Vm) -> None:
    vm = healthy
    bundle = _bundle("edge-ivr-0.1.3.raucb")
    before = db_digest(vm)
    st0 = _status(vm)
    booted, version = st0["booted"], st0["version"]
    target = "A" if booted == "B" else "B"
    # the target slot's partition: its kernel write counter (sectors) shows when RAUC is writing the image
    stat = f"/sys/class/block/$(basename $(readlink -f /dev/disk/by-partlabel/rootfs-{target.lower()}))/stat"
    written = f"awk '{{print $7}}' {stat}"
    base = int(vm.ssh(written).stdout.strip())
    vm.ssh("mkdir -p /run/bundles; mountpoint -q /run/bundles || mount -o ro LABEL=BUNDLES /run/bundles")
    vm.ssh(f"systemd-run --unit=cut-install ivr update install /run/bundles/{bundle.name}")
    start = time.monotonic()
    deadline = start + 900
    mid = 0
    while time.monotonic() < deadline:  # in the middle of writing the slot: 64 MiB written, not finished
        mid = int(vm.ssh(written).stdout.strip()) - base
        if mid >= 131072:
            break
        time.sleep(2)
    running = vm.ssh("systemctl is-active cut-install.service", check=False).stdout.strip()
    vm.kill()
    FIGURES["power_cut_after_s"] = time.monotonic() - start
    print(f"power cut {FIGURES['power_cut_after_s']:.0f} s into the install, {mid * 512 >> 20} MiB of slot {target}"
          f" written, install {running}")
    assert mid >= 131072 and running == "active", (mid, running)  # the cut came in the middle of the write
    vm.start()
    vm.wait_ssh(timeout=600)
    vm.wait_for("systemctl is-active ivr-health.service", "active", timeout=600, line=True)
    st = _status(vm)
    # RAUC marked the target bad before writing it: the box is back on the slot it ran, never a half-written one
    assert (st["booted"], st["version"]) == (booted, version), st
    assert st["grubenv"][f"{target}_OK"] == "0", st
    print(f"power cut during install: booted {st['booted']} {st['version']}, slot {target} marked bad")
    _same_data(vm, before)
