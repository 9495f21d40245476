"""The image boots: first boot takes the site config, ivr.service becomes READY, the health check keeps the
slot, the unit is hardened, the firewall admits what the site said, a sipp call from the host walks a menu
through qemu's port forwarding, and a frozen daemon is restarted by the watchdog."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.appliance.vm import Vm
from tests.integration import scenarios

pytestmark = pytest.mark.vm_needed
FIGURES: dict[str, float] = {}


def test_first_boot_ready_and_kept(vm: Vm) -> None:
    t_ssh = vm.wait_ssh(timeout=300)
    FIGURES["ssh_s"] = t_ssh
    vm.wait_for("systemctl is-active ivr-health.service", "active", timeout=400, line=True)
    out = vm.ssh("systemctl show -P ActiveEnterTimestampMonotonic ivr.service").stdout.strip()
    FIGURES["boot_to_ready_s"] = int(out) / 1e6
    print(f"ssh after {t_ssh:.0f} s (host clock); ivr.service READY {FIGURES['boot_to_ready_s']:.1f} s after "
          "the kernel started (first boot: prompts rendered)")
    assert "healthy" in vm.ssh("journalctl -b -u ivr-health.service --no-pager").stdout
    env = vm.ssh("grub-editenv /grubboot/grub/grubenv list").stdout
    assert "A_OK=1" in env and "A_TRY=0" in env, env  # marked good: the try counter is back to 0
    assert vm.ssh("cat /proc/cmdline").stdout.count("rauc.slot=A") == 1


def test_site_config_and_keys_from_the_stick(vm: Vm) -> None:
    assert "qemu-test" in vm.ssh("cat /etc/ivr/ivr.yaml").stdout
    assert vm.ssh("findmnt -no SOURCE /var/lib/ivr").stdout.strip().endswith("[/ivr/state]")
    assert vm.ssh("test -s /data/ssh/ssh_host_ed25519_key && ls /etc/ssh/ssh_host_* 2>/dev/null | wc -l"
                  ).stdout.strip() == "0"  # the box's own host key, on the data partition, none baked in


def test_no_password_anywhere(vm: Vm) -> None:
    shadow = vm.ssh("cut -d: -f1,2 /etc/shadow").stdout.splitlines()
    usable = [line for line in shadow if not re.match(r"^[^:]+:(!|\*|!\*|!!|)", line)
              or line.endswith(":")]
    assert usable == [], usable
    sshd = vm.ssh("sshd -T").stdout
    assert "passwordauthentication no" in sshd and "permitrootlogin without-password" in sshd


def test_firewall_from_site_config(vm: Vm) -> None:
    assert vm.ssh("systemctl is-active nftables.service").stdout.strip() == "active"
    rules = vm.ssh("nft list table inet ivr").stdout
    assert re.search(r"set sip_peers4 \{[^}]*10\.0\.2\.2", rules), rules
    assert re.search(r"set mgmt4 \{[^}]*10\.0\.2\.2", rules), rules
    assert "policy drop" in rules


def test_journald_limits(vm: Vm) -> None:
    conf = vm.ssh("systemd-analyze cat-config systemd/journald.conf").stdout
    assert "SystemMaxUse=200M" in conf


def test_unit_hardening_exposure(vm: Vm) -> None:
    unit = vm.ssh("systemctl cat ivr.service").stdout
    if "Type=notify" not in unit:
        pytest.skip("the image has the firmware's fallback unit (systemd/ivr.service not merged)")
    out = vm.ssh("systemd-analyze security ivr.service --no-pager", check=False).stdout
    m = re.search(r"Overall exposure level for ivr\.service: (\d+\.\d+)", out)
    assert m, out[-2000:]
    FIGURES["exposure"] = float(m.group(1))
    print(f"systemd-analyze security ivr.service: {m.group(1)}")
    assert float(m.group(1)) <= 2.5


@pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp (Debian sip-tester) not installed")
def test_sipp_call_walks_a_menu(vm: Vm, tmp_path: Path) -> None:
    """The sample billing line by SIP INFO, from sipp on the host through the UDP hostfwd to the box."""
    steps: list[tuple[str, str]] = [("pause", "800")]
    for group in ["345678#", "1", "2"]:
        steps += [("info", k) for k in group]
        steps.append(("pause", "1200"))
    path = tmp_path / "billing.xml"
    # Inside the VM the host is 10.0.2.2 (qemu user-net): the IVR's BYE goes to our Contact, so it says that
    # address; sipp still sends everything to 127.0.0.1:<forwarded port>.
    text = scenarios.call("billing by INFO over qemu user-net", steps, telephone_event=True)
    contact = "Contact: <sip:sipp@[local_ip]:[local_port]>"
    path.write_text(text.replace(contact, "Contact: <sip:sipp@10.0.2.2:[local_port]>"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        local = s.getsockname()[1]
    cmd = ["sipp", f"127.0.0.1:{vm.sip_port}", "-sf", str(path), "-s", "102", "-m", "1", "-i", "127.0.0.1",
           "-p", str(local), "-timeout", "180s", "-timeout_error", "-nostdin", "-trace_err"]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    errors = "\n".join(p.read_text(errors="replace")[-3000:] for p in tmp_path.glob("*_errors.log"))
    assert r.returncode == 0, f"sipp exit {r.returncode}\n{r.stdout[-1500:]}\n{errors}"
    calls = vm.wait_for("ivr --config /etc/ivr/ivr.yaml calls --json --last 1", '"billing"', timeout=60)
    assert '"account"' in calls and '"billing_menu"' in calls, calls
    # The call's media went through the media worker, a child of the daemon, which the unit's LimitNICE= and
    # system call filter let run sip.media_priority (10) nice levels above the daemon's Nice=-5.
    daemon = vm.ssh("systemctl show -P MainPID ivr.service").stdout.strip()
    children = vm.ssh(f"ps -o ni=,args= --ppid {daemon}").stdout
    worker = [line.split() for line in children.splitlines() if "ivr.rtp.worker" in line]
    assert len(worker) == 1 and worker[0][0] == "-15", children


def test_watchdog_restarts_a_frozen_daemon(vm: Vm) -> None:
    unit = vm.ssh("systemctl show -P WatchdogUSec ivr.service").stdout.strip()
    if unit in ("0", "infinity", ""):
        pytest.skip("the image's ivr.service has no watchdog (systemd/ivr.service not merged)")
    pid = vm.ssh("systemctl show -P MainPID ivr.service").stdout.strip()
    restarts = int(vm.ssh("systemctl show -P NRestarts ivr.service").stdout.strip())
    vm.ssh(f"kill -STOP {pid}")
    start = time.monotonic()
    vm.wait_for("systemctl show -P NRestarts ivr.service", str(restarts + 1), timeout=120, line=True)
    new = vm.wait_for("systemctl is-active ivr.service; systemctl show -P MainPID ivr.service", "active",
                      timeout=400, line=True)
    took = time.monotonic() - start
    FIGURES["watchdog_restart_s"] = took
    assert pid not in new.split()
    log = vm.ssh("journalctl -b -u ivr.service --no-pager | grep -i watchdog", check=False).stdout
    print(f"watchdog: restarted and READY again {took:.0f} s after SIGSTOP\n{log[-600:]}")
    assert "watchdog timeout" in log.lower()
