"""`ivr update status|install BUNDLE`: the box's A/B firmware slots through RAUC (firmware/README.md).

RAUC checks the bundle's signature against the box's keyring and writes the slot the box is not running;
GRUB boots it next with a try counter, and ivr-health keeps it (`rauc status mark-good`) only once the
service is READY and answers SIP OPTIONS. What this module adds: a downgrade (or a reinstall of the
running version) is refused unless forced. The same rule is enforced by RAUC's pre-install handler
(firmware/rootfs/usr/lib/ivr-firmware/rauc-pre-install), so a bare `rauc install` obeys it too.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

OS_RELEASE = Path("/etc/os-release")
FORCE_FLAG = Path("/run/ivr-update-force")
GRUBENV = Path("/grubboot/grub/grubenv")


class UpdateError(Exception):
    """An update refused or failed; the message says why."""


def version_key(version: str) -> tuple[tuple[int, str], ...]:
    """Order versions the way `sort -V` does for the forms we build (1.2.10 > 1.2.9, 1.0 < 1.0.1)."""
    return tuple((int(p), "") if p.isdigit() else (-1, p) for p in re.split(r"[.+~-]", version) if p)


def check_version(current: str, new: str, *, force: bool) -> str | None:
    """Why the install of `new` over `current` is refused (None: allowed)."""
    if force:
        return None
    if version_key(new) < version_key(current):
        return f"refusing downgrade from {current} to {new} (--force to install it anyway)"
    if version_key(new) == version_key(current):
        return f"refusing to reinstall {current} (--force to install it anyway)"
    return None


def current_version(os_release: Path = OS_RELEASE) -> str:
    for line in os_release.read_text().splitlines():
        if line.startswith("IMAGE_VERSION="):
            return line.split("=", 1)[1].strip().strip('"')
    raise UpdateError(f"{os_release} has no IMAGE_VERSION: not an edge-ivr firmware image")


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise UpdateError(f"{cmd[0]} not found: not an edge-ivr firmware image") from exc


def bundle_version(bundle: str) -> str:
    """The bundle's version, after RAUC verified its signature against the box's keyring."""
    out = _run(["rauc", "info", "--output-format=json", bundle])
    if out.returncode != 0:
        raise UpdateError(f"bundle refused: {out.stderr.strip() or out.stdout.strip()}")
    return str(json.loads(out.stdout)["version"])


@dataclass(frozen=True)
class SlotStatus:
    booted: str
    version: str
    slots: dict[str, dict[str, str]]
    grubenv: dict[str, str]


def status() -> SlotStatus:
    out = _run(["rauc", "status", "--detailed", "--output-format=json"])
    if out.returncode != 0:
        raise UpdateError(out.stderr.strip())
    doc = json.loads(out.stdout)
    slots: dict[str, dict[str, str]] = {}
    for entry in doc.get("slots", []):
        for name, slot in entry.items():
            status_ = slot.get("slot_status") or {}
            bundle = status_.get("bundle") or {}
            slots[name] = {"bootname": str(slot.get("bootname")), "state": str(slot.get("state")),
                           "boot_status": str(slot.get("boot_status")), "version": str(bundle.get("version", "")),
                           "installed": str((status_.get("installed") or {}).get("timestamp", ""))}
    env_out = _run(["grub-editenv", str(GRUBENV), "list"])
    env = dict(line.split("=", 1) for line in env_out.stdout.splitlines() if "=" in line)
    return SlotStatus(booted=str(doc.get("booted")), version=current_version(), slots=slots, grubenv=env)


def install(bundle: str, *, force: bool = False) -> str:
    """Install a bundle into the other slot; returns what to tell the admin."""
    if not Path(bundle).is_file():
        raise UpdateError(f"{bundle}: no such file")
    new = bundle_version(bundle)
    current = current_version()
    why = check_version(current, new, force=force)
    if why:
        raise UpdateError(why)
    try:
        if force:
            FORCE_FLAG.touch()
        out = _run(["rauc", "install", bundle])
    finally:
        FORCE_FLAG.unlink(missing_ok=True)
    if out.returncode != 0:
        raise UpdateError(f"rauc install failed: {(out.stderr or out.stdout).strip()}")
    return f"installed {new} (running {current}); reboot to start it: it is kept once healthy, else rolled back"


def cmd_update(args: argparse.Namespace) -> int:
    try:
        if args.action == "install":
            print(install(args.bundle, force=args.force))
            return 0
        st = status()
    except UpdateError as exc:
        print(f"ivr update: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"booted": st.booted, "version": st.version, "slots": st.slots, "grubenv": st.grubenv},
                         indent=2))
        return 0
    print(f"running {st.version} from slot {st.booted}")
    for name, slot in sorted(st.slots.items()):
        b = slot["bootname"]
        print(f"  {name} ({b}): {slot['state']}, boot {slot['boot_status']}, version {slot['version'] or '-'}, "
              f"tries {st.grubenv.get(f'{b}_TRY', '?')}, installed {slot['installed'] or '-'}")
    print(f"  boot order: {st.grubenv.get('ORDER', '?')}")
    return 0


def add_subcommand(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """`ivr update status|install BUNDLE [--force]` (wired into ivr/cli.py by one line)."""
    s = sub.add_parser("update", help="firmware slots and signed updates (A/B, rolled back unless healthy)")
    act = s.add_subparsers(dest="action", required=True)
    c = act.add_parser("status", help="the running version, both slots, GRUB's boot order and tries")
    c.add_argument("--json", action="store_true", help="one JSON object instead of the text")
    c = act.add_parser("install", help="install a signed bundle into the other slot (reboot to start it)")
    c.add_argument("bundle", help="a .raucb bundle made by firmware/build.sh, signed with the box's key")
    c.add_argument("--force", action="store_true", help="also a downgrade or the running version")
    s.set_defaults(func=cmd_update)
