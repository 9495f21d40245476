"""One appliance VM under qemu for the tests: the image as a qcow2 overlay, the site config stick as a second
disk, ssh (the test key from the stick) and SIP through user-net port forwarding to 127.0.0.1 only."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("FW_BUILD", REPO / "firmware/build"))
IMAGE = BUILD / "edge-ivr.img"
BUNDLES = BUILD / "test"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
QEMU = shutil.which("qemu-system-x86_64")
SLOW = 1.0  # scaled up under TCG


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kvm_usable() -> str | None:
    """None when KVM runs firmware here; else why not (a nested hypervisor may refuse x87 in OVMF)."""
    if QEMU is None:
        return "qemu-system-x86_64 not installed (apt-get install qemu-system-x86)"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm not usable"
    proc = subprocess.Popen([QEMU, "-enable-kvm", "-cpu", "host", "-m", "256", "-display", "none", "-bios",
                             "/usr/share/ovmf/OVMF.fd", "-serial", "none", "-monitor", "none", "-no-reboot"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=6)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    if "KVM internal error" in (err or ""):
        return "KVM is present but cannot run OVMF here (KVM internal error: emulation failure)"
    return None


def make_config_stick(path: Path, *, pubkey: str, config: str, firewall: str, health_timeout: int = 120) -> Path:
    """The IVRCONFIG vfat stick the first boot reads (firmware/rootfs/usr/lib/ivr-firmware/firstboot)."""
    src = path.parent / "stick"
    src.mkdir(exist_ok=True)
    (src / "ivr.yaml").write_text(config)
    (src / "firewall.yaml").write_text(firewall)
    (src / "authorized_keys").write_text(pubkey)
    (src / "health.env").write_text(f"IVR_HEALTH_TIMEOUT={health_timeout}\n")
    subprocess.run(["truncate", "-s", "16M", str(path)], check=True)
    subprocess.run(["mkfs.vfat", "-n", "IVRCONFIG", str(path)], check=True, capture_output=True)
    names = ("ivr.yaml", "firewall.yaml", "authorized_keys", "health.env")
    subprocess.run(["mcopy", "-i", str(path), *(str(src / n) for n in names), "::"], check=True)
    # One flow (the sample billing line, made the default): its 38 prompts render in minutes even under TCG
    # emulation, where the whole sample set's 242 would take half an hour on first boot.
    (src / "flows").mkdir(exist_ok=True)
    billing = (REPO / "flows/billing.yaml").read_text().replace("\nnumbers:", "\ndefault: true\nnumbers:", 1)
    (src / "flows/billing.yaml").write_text(billing)
    subprocess.run(["mcopy", "-s", "-i", str(path), str(src / "flows"), "::"], check=True)
    return path


class Vm:
    def __init__(self, workdir: Path, stick: Path, key: Path, *, accel: str) -> None:
        self.dir = workdir
        self.stick = stick
        self.key = key
        self.accel = accel
        self.disk = workdir / "disk.qcow2"
        self.serial = workdir / "serial.log"
        self.ssh_port = free_port()
        self.sip_port = free_port(socket.SOCK_DGRAM)
        self.proc: subprocess.Popen[bytes] | None = None
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(IMAGE), "-F", "raw", str(self.disk)],
                       check=True)
        shutil.copyfile(OVMF_VARS, workdir / "vars.fd")
        # The test bundles as a read-only ext4 disk (label BUNDLES): scp of 350 MB is ~20 min under TCG.
        self.bundles = workdir / "bundles.ext4"
        if BUNDLES.is_dir():
            # read-only: no journal (it alone would be 64 MiB of a 2 GiB disk), no reserved blocks; a margin
            # for the metadata (the six test bundles, 2.1 GB, did not fit with 64 MiB to spare: seen)
            total = sum(p.stat().st_size for p in BUNDLES.glob("*.raucb"))
            size = total + total // 16 + (64 << 20)
            subprocess.run(["truncate", "-s", str(size), str(self.bundles)], check=True)
            subprocess.run(["mkfs.ext4", "-q", "-O", "^has_journal", "-m", "0", "-L", "BUNDLES", "-d", str(BUNDLES),
                            str(self.bundles)], check=True)

    def start(self) -> None:
        assert QEMU is not None
        accel = ["-enable-kvm", "-cpu", "host"] if self.accel == "kvm" else ["-accel", "tcg,thread=multi",
                                                                             "-cpu", "max"]
        fwd = f"hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22,hostfwd=udp:127.0.0.1:{self.sip_port}-:5060"
        with self.serial.open("ab") as log:
            log.write(b"\n==== qemu start ====\n")
        self.proc = subprocess.Popen(
            [QEMU, *accel, "-m", "2048", "-smp", "2", "-display", "none", "-no-user-config",
             "-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
             "-drive", f"if=pflash,format=raw,file={self.dir / 'vars.fd'}",
             "-drive", f"file={self.disk},if=virtio,format=qcow2,cache=unsafe",
             "-drive", f"file={self.stick},if=virtio,format=raw,readonly=on",
             *(["-drive", f"file={self.bundles},if=virtio,format=raw,readonly=on"] if self.bundles.exists() else []),
             "-netdev", f"user,id=n0,{fwd}", "-device", "virtio-net-pci,netdev=n0",
             "-chardev", f"file,id=s0,path={self.serial},append=on", "-serial", "chardev:s0",
             "-monitor", "none"],
            stdout=subprocess.DEVNULL, stderr=(self.dir / "qemu.err").open("ab"))

    def kill(self) -> None:
        """Power cut: no shutdown, no sync."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=30)
            self.proc = None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ssh(self, command: str, *, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            ["ssh", "-i", str(self.key), "-p", str(self.ssh_port), "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=20",
             "-o", "BatchMode=yes", "root@127.0.0.1", command],
            capture_output=True, text=True, timeout=timeout * SLOW)
        if check and out.returncode != 0:
            raise AssertionError(f"{command!r} -> {out.returncode}\n{out.stdout}\n{out.stderr}")
        return out

    def scp(self, src: Path, dest: str) -> None:
        subprocess.run(["scp", "-q", "-i", str(self.key), "-P", str(self.ssh_port), "-o", "StrictHostKeyChecking=no",
                        "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", str(src),
                        f"root@127.0.0.1:{dest}"], check=True, timeout=600)

    def wait_ssh(self, timeout: float = 300) -> float:
        """Seconds until ssh answers (bounded by `timeout`, scaled under TCG)."""
        start = time.monotonic()
        deadline = start + timeout * SLOW
        while time.monotonic() < deadline:
            if not self.running():
                raise AssertionError(f"qemu exited; serial log tail:\n{self.serial_tail()}")
            try:
                if self.ssh("true", timeout=30, check=False).returncode == 0:
                    return time.monotonic() - start
            except subprocess.TimeoutExpired:
                pass
            time.sleep(3)
        raise AssertionError(f"no ssh after {timeout * SLOW:.0f} s; serial log tail:\n{self.serial_tail()}")

    def wait_for(self, command: str, expect: str, timeout: float, *, line: bool = False) -> str:
        """Poll `command` until its output contains `expect` (`line`: as a whole line; bounded)."""
        deadline = time.monotonic() + timeout * SLOW
        last = ""
        while time.monotonic() < deadline:
            try:
                out = self.ssh(command, timeout=60, check=False)
                last = out.stdout + out.stderr
                if (expect in last.splitlines()) if line else (expect in last):
                    return last
            except subprocess.TimeoutExpired:
                pass
            except AssertionError:
                pass
            time.sleep(5)
        raise AssertionError(f"{command!r} never showed {expect!r} in {timeout * SLOW:.0f} s; last: {last}")

    def reboot(self, timeout: float = 600) -> float:
        self.ssh("systemctl reboot", check=False, timeout=30)
        time.sleep(10)
        return self.wait_ssh(timeout)

    def serial_tail(self, n: int = 4000) -> str:
        try:
            return self.serial.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""
