"""The unit files in systemd/ as systemd itself reads them: `systemd-analyze verify` finds nothing wrong, and
`systemd-analyze security` rates each service's exposure at most 2.5 (issue 16). The image's qemu tests
(tests/appliance) check the same inside a booted box; these run on any machine with systemd's tools."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

UNITS = REPO / "systemd"
SERVICES = ["ivr.service", "ivr-central.service", "ivr-backup.service"]
VENV_BIN = Path(sys.executable).parent

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                reason="systemd-analyze (Debian's systemd package) is not installed")


def here(tmp_path: Path) -> Path:
    """The units with ExecStart= pointing at this checkout's venv (verify checks the program exists)."""
    out = tmp_path / "units"
    out.mkdir()
    for unit in UNITS.glob("*.*"):
        if unit.suffix in (".service", ".timer"):
            text = unit.read_text(encoding="utf-8").replace("/opt/ivr/venv/bin/", f"{VENV_BIN}/")
            (out / unit.name).write_text(text, encoding="utf-8")
    return out


def test_every_unit_verifies(tmp_path: Path) -> None:
    units = here(tmp_path)
    names = sorted(p.name for p in units.iterdir())
    assert {"ivr.service", "ivr-backup.service", "ivr-backup.timer", "ivr-central.service"} <= set(names)
    run = subprocess.run(["systemd-analyze", "verify", *names], cwd=units, capture_output=True, text=True,
                         timeout=60)
    problems = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    assert run.returncode == 0 and problems == [], problems


@pytest.mark.parametrize("service", SERVICES)
def test_exposure_at_most_2_5(tmp_path: Path, service: str) -> None:
    units = here(tmp_path)
    run = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", service], cwd=units,
                         capture_output=True, text=True, timeout=60)
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", run.stdout)
    assert found, run.stdout + run.stderr
    assert float(found.group(1)) <= 2.5, run.stdout


def test_the_service_runs_as_its_own_user_with_systemd_s_folders() -> None:
    """The daemon's default paths (ivr/config.py SERVICE_DIRS) are where the unit's directives put them."""
    from ivr.config import SERVICE_DIRS

    unit = (UNITS / "ivr.service").read_text(encoding="utf-8")
    settings = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    assert settings["Type"] == "notify" and settings["User"] == "ivr" and "WatchdogSec" in settings
    roots = {"STATE_DIRECTORY": "/var/lib/", "CACHE_DIRECTORY": "/var/cache/", "RUNTIME_DIRECTORY": "/run/"}
    directives = {"STATE_DIRECTORY": "StateDirectory", "CACHE_DIRECTORY": "CacheDirectory",
                  "RUNTIME_DIRECTORY": "RuntimeDirectory"}
    for variable, path in SERVICE_DIRS.items():
        assert str(path) == roots[variable] + settings[directives[variable]]
    users = (UNITS / "ivr.sysusers.conf").read_text(encoding="utf-8")
    assert re.search(r"^u ivr ", users, re.M)
