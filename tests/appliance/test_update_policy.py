"""The downgrade rule of `ivr update install` (the same rule as RAUC's pre-install handler, checked there too)."""

import subprocess
from pathlib import Path

import pytest

from ivr.update import check_version, current_version, version_key

HANDLER = Path(__file__).parents[2] / "firmware/rootfs/usr/lib/ivr-firmware/rauc-pre-install"


@pytest.mark.parametrize(("current", "new", "refused"), [
    ("0.1.0", "0.1.1", False),
    ("0.1.9", "0.1.10", False),
    ("0.2.0", "0.1.99", True),
    ("1.0", "1.0.1", False),
    ("0.1.0", "0.1.0", True),
])
def test_check_version(current: str, new: str, refused: bool) -> None:
    why = check_version(current, new, force=False)
    assert (why is not None) == refused
    assert check_version(current, new, force=True) is None
    if refused and new != current:
        assert why == f"refusing downgrade from {current} to {new} (--force to install it anyway)"


def test_version_key_orders_numerically() -> None:
    assert sorted(["0.1.10", "0.1.9", "0.1.0"], key=version_key) == ["0.1.0", "0.1.9", "0.1.10"]


def test_current_version(tmp_path: Path) -> None:
    f = tmp_path / "os-release"
    f.write_text('ID=debian\nIMAGE_ID=edge-ivr\nIMAGE_VERSION="0.3.1"\n')
    assert current_version(f) == "0.3.1"


@pytest.mark.parametrize(("new", "rc"), [("0.1.1", 0), ("0.0.9", 1), ("0.1.0", 1)])
def test_pre_install_handler_agrees(tmp_path: Path, new: str, rc: int) -> None:
    """The shell handler RAUC runs reads the running version from /etc/os-release: run a copy on a fake one."""
    script = HANDLER.read_text().replace("/etc/os-release", str(tmp_path / "os-release")).replace(
        "/run/ivr-update-force", str(tmp_path / "force"))
    (tmp_path / "os-release").write_text("IMAGE_VERSION=0.1.0\n")
    (tmp_path / "h").write_text(script)
    out = subprocess.run(["sh", str(tmp_path / "h")], env={"RAUC_MF_VERSION": new, "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True)
    assert out.returncode == rc, out.stderr
    (tmp_path / "force").touch()
    forced = subprocess.run(["sh", str(tmp_path / "h")], env={"RAUC_MF_VERSION": new, "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True)
    assert forced.returncode == 0
