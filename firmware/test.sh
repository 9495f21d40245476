#!/bin/bash
# The appliance tests (slow): build the image and the test bundles if missing, then run tests/appliance.
#   bash firmware/test.sh            # build what is missing, run the tests
#   FW_REBUILD=1 bash firmware/test.sh
# Test bundles (firmware/build/test/): 0.1.1 good, 0.1.2 whose ivr.service never becomes READY, 0.1.3 good
# (the power-cut test), 0.0.9 (a downgrade), 0.1.1 signed with another key, and a tampered copy of 0.1.1.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
B=$HERE/build
T=$B/test
export FW_BOOT_TRIES=${FW_BOOT_TRIES:-2}
# KVM where it can run firmware; else TCG (a nested hypervisor may refuse OVMF's first instructions), with a
# longer watchdog baked into the test image only (Python's imports take longer than WatchdogSec=20 there).
if [ -z "${FW_ACCEL:-}" ]; then
    if (cd "$REPO" && python3 -c "import sys; from tests.appliance.vm import kvm_usable; sys.exit(kvm_usable() is not None)"); then
        export FW_ACCEL=kvm
    else
        echo "KVM cannot run firmware here: tests under TCG emulation (slow)"; export FW_ACCEL=tcg
    fi
fi
[ "$FW_ACCEL" = tcg ] && export FW_WATCHDOG_SEC=${FW_WATCHDOG_SEC:-120}
mkdir -p "$T"
if [ "${FW_REBUILD:-0}" = 1 ] || [ ! -f "$B/edge-ivr.img" ]; then
    FW_VERSION=0.1.0 bash "$HERE/build.sh"
fi
bundle() {  # VERSION [env...]: a real bundle of a freshly built root filesystem
    local v=$1; shift
    [ -f "$T/edge-ivr-$v.raucb" ] && [ "${FW_REBUILD:-0}" != 1 ] && return 0
    env "$@" FW_VERSION="$v" FW_BUILD="$B" bash "$HERE/build.sh" --bundle-only
    mv "$B/edge-ivr-$v.raucb" "$T/"
}
bundle 0.1.1
bundle 0.1.2 FW_BREAK_SERVICE=1
bundle 0.1.3
if [ ! -f "$T/edge-ivr-0.0.9.raucb" ] || [ ! -f "$T/other-key-0.1.4.raucb" ]; then
    # Refused before anything is written: their content does not matter, so the last root filesystem serves.
    W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
    cp --sparse=always "$B/rootfs.ext4" "$W/rootfs.ext4"; e2fsck -fy "$W/rootfs.ext4" >/dev/null 2>&1 || true
    resize2fs -M "$W/rootfs.ext4" >/dev/null 2>&1
    mf() { printf '[update]\ncompatible=edge-ivr-x86_64\nversion=%s\n\n[bundle]\nformat=verity\n\n[image.rootfs]\nfilename=rootfs.ext4\n' "$1" > "$W/manifest.raucm"; }
    [ -f "$B/keys/other.key.pem" ] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
        -subj "/O=elsewhere/CN=another key" -keyout "$B/keys/other.key.pem" -out "$B/keys/other.cert.pem" 2>/dev/null
    mf 0.0.9; rm -f "$T/edge-ivr-0.0.9.raucb"
    rauc bundle --cert="$B/keys/dev.cert.pem" --key="$B/keys/dev.key.pem" --mksquashfs-args="-comp zstd" "$W" "$T/edge-ivr-0.0.9.raucb" >/dev/null
    mf 0.1.4; rm -f "$T/other-key-0.1.4.raucb"
    rauc bundle --cert="$B/keys/other.cert.pem" --key="$B/keys/other.key.pem" --mksquashfs-args="-comp zstd" "$W" "$T/other-key-0.1.4.raucb" >/dev/null
fi
if [ ! -f "$T/tampered-0.1.1.raucb" ]; then
    cp "$T/edge-ivr-0.1.1.raucb" "$T/tampered-0.1.1.raucb"
    # flip one byte in the middle of the squashfs payload (the signature covers it: verity root hash)
    python3 -c "import sys,os;f=open(sys.argv[1],'r+b');n=os.path.getsize(sys.argv[1])//2;f.seek(n);b=f.read(1);f.seek(n);f.write(bytes([b[0]^0xff]))" "$T/tampered-0.1.1.raucb"
fi
cd "$REPO"
PY=${FW_TEST_PYTHON:-/work/main/.venv/bin/python}
[ -x "$PY" ] || PY=python3
exec "$PY" -m pytest tests/appliance -v -x --basetemp=/tmp/fw-pt "$@"
