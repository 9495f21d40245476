#!/bin/bash
# Build the edge-ivr appliance: the slot root filesystem (mkosi 14 + the project's wheel in a venv), the
# bootable GPT disk image (BIOS GRUB, boot, rootfs A, rootfs B, data) and a signed RAUC bundle of the slot.
#
#   bash firmware/build.sh                 # everything, into firmware/build/
#   bash firmware/build.sh --bundle-only   # only the root filesystem and its bundle (another version)
#   bash firmware/build.sh --disk-only     # only the disk image, from the last root filesystem
#
# Environment: FW_BUILD (output dir), FW_VERSION (default: pyproject's version), FW_BOOT_TRIES (GRUB tries
# of an unconfirmed slot, default 3), FW_SIGNING_KEY/FW_SIGNING_CERT (default: a development key made in
# FW_BUILD/keys), FW_KEYRING (the certificate the image trusts, default FW_SIGNING_CERT),
# SOURCE_DATE_EPOCH (default: the last commit's time), FW_BREAK_SERVICE=1 (tests: ivr.service never READY),
# FW_WATCHDOG_SEC (tests under emulation only: a longer watchdog for ivr.service).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
B=${FW_BUILD:-$HERE/build}
BUNDLE_ONLY=0 DISK_ONLY=0
[ "${1:-}" = "--bundle-only" ] && BUNDLE_ONLY=1
[ "${1:-}" = "--disk-only" ] && DISK_ONLY=1   # the disk again from the last rootfs.ext4
VERSION=${FW_VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/pyproject.toml")}
BOOT_TRIES=${FW_BOOT_TRIES:-3}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$REPO" log -1 --format=%ct)}
SLOT_SIZE=2048    # MiB per root filesystem slot
DATA_SIZE=512     # MiB of the data partition in the image (grow it on the real disk)
IVR_UID=970
T0=$(date +%s)
say() { echo "[$(($(date +%s) - T0))s] $*"; }

mkdir -p "$B/mkosi" "$B/wheels" "$B/keys"

if [ "$DISK_ONLY" = 0 ]; then
# 1. The Debian root filesystem (cached while mkosi.default is unchanged).
stamp=$(sha256sum "$HERE/mkosi.default" | cut -c1-16)
if [ "$(cat "$B/mkosi/stamp" 2>/dev/null)" != "$stamp" ] || [ ! -d "$B/mkosi/root" ]; then
    say "mkosi: Debian 12 root filesystem"
    rm -rf "$B/mkosi/root"
    (cd "$HERE" && mkosi --default mkosi.default --output "$B/mkosi/root" -f build)
    echo "$stamp" > "$B/mkosi/stamp"
fi

# 2. The wheelhouse: the project's wheel (runtime deps only, no extras) and its dependencies.
say "wheels"
rm -f "$B"/wheels/edge_ivr-*.whl
PY=${FW_PYTHON:-python3}
"$PY" -m pip wheel -q --disable-pip-version-check -w "$B/wheels" "$REPO"

# 3. The slot's tree: mkosi's root + the appliance.
say "rootfs $VERSION"
R=$B/rootfs
mounts=()
cleanup() { for ((i=${#mounts[@]}-1; i>=0; i--)); do umount -l "${mounts[$i]}" 2>/dev/null || true; done; }
trap cleanup EXIT
rm -rf "$R"
cp -a "$B/mkosi/root" "$R"
for d in proc sys dev; do mount --bind "/$d" "$R/$d"; mounts+=("$R/$d"); done
mkdir -p "$R/tmp/wheels"; mount --bind "$B/wheels" "$R/tmp/wheels"; mounts+=("$R/tmp/wheels")
chroot "$R" /usr/bin/python3 -m venv /opt/ivr/venv
chroot "$R" env -u PIP_FIND_LINKS /opt/ivr/venv/bin/pip install -q --no-index --no-compile --disable-pip-version-check \
    --find-links /tmp/wheels edge-ivr
chroot "$R" /opt/ivr/venv/bin/python -m compileall -q --invalidation-mode unchecked-hash /opt/ivr/venv >/dev/null
ln -sf /opt/ivr/venv/bin/ivr "$R/usr/local/bin/ivr"
chroot "$R" groupadd -r -g $IVR_UID ivr
chroot "$R" useradd -r -u $IVR_UID -g ivr -d /var/lib/ivr -s /usr/sbin/nologin -c "edge-ivr" ivr
cp -r "$HERE/rootfs/." "$R/"
echo "$BOOT_TRIES" > "$R/usr/lib/ivr-firmware/boot-tries"
# The units are the repository's own (systemd/: hardened, Type=notify with the watchdog; docs/service.md).
for f in "$REPO"/systemd/ivr.service "$REPO"/systemd/ivr-backup.service "$REPO"/systemd/ivr-backup.timer; do
    install -m 644 "$f" "$R/usr/lib/systemd/system/"
done
install -m 644 "$REPO/systemd/ivr.sysusers.conf" "$R/usr/lib/sysusers.d/ivr.conf"
chroot "$R" systemctl enable -q ivr-backup.timer
if [ -n "${FW_WATCHDOG_SEC:-}" ]; then
    # Emulated test runs only (firmware/test.sh under TCG, ~10x slower): Python's imports alone outlast
    # WatchdogSec=20 before the daemon's loop can ping. A production build never sets it.
    mkdir -p "$R/etc/systemd/system/ivr.service.d"
    printf '[Service]\nWatchdogSec=%s\nTimeoutStartSec=900\n' "$FW_WATCHDOG_SEC" > "$R/etc/systemd/system/ivr.service.d/emulation.conf"
fi
if [ "${FW_BREAK_SERVICE:-0}" = 1 ]; then
    # The rollback test's bundle: a daemon that never sends READY. Its start job gives up after 60 s (named so
    # it sorts after emulation.conf's 900 s, which would otherwise make each try wait 15 min under TCG); the
    # health check then waits out IVR_HEALTH_TIMEOUT as on any slot, so what is tested is unchanged.
    mkdir -p "$R/etc/systemd/system/ivr.service.d"
    printf '[Service]\nExecStart=\nExecStart=/bin/sleep infinity\nTimeoutStartSec=60\n' \
        > "$R/etc/systemd/system/ivr.service.d/never-ready.conf"
fi
mkdir -p "$R/grubboot" "$R/data" "$R/var/lib/ivr" "$R/etc/ivr"
chroot "$R" systemctl enable -q ivr.service ivr-firstboot.service ivr-health.service nftables.service \
    systemd-networkd.service systemd-resolved.service chrony.service ssh.service serial-getty@ttyS0.service
chroot "$R" passwd -q -l root
rm -f "$R"/etc/ssh/ssh_host_* "$R/usr/sbin/policy-rc.d"
: > "$R/etc/machine-id"
rm -f "$R/var/lib/dbus/machine-id"
sed -i '/^IMAGE_ID=\|^IMAGE_VERSION=/d' "$R/etc/os-release"
printf 'IMAGE_ID=edge-ivr\nIMAGE_VERSION=%s\n' "$VERSION" >> "$R/etc/os-release"

# Signing: a development key for tests unless the site's own is given (never committed: FW_BUILD is ignored).
KEY=${FW_SIGNING_KEY:-$B/keys/dev.key.pem}
CERT=${FW_SIGNING_CERT:-$B/keys/dev.cert.pem}
if [ -z "${FW_SIGNING_KEY:-}" ] && [ ! -f "$KEY" ]; then
    say "development signing key (FW_BUILD/keys, for tests only)"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
        -subj "/O=edge-ivr/CN=edge-ivr development key (not for sites)" -keyout "$KEY" -out "$CERT" 2>/dev/null
fi
install -m 644 "${FW_KEYRING:-$CERT}" "$R/etc/rauc/keyring.pem"

for kdir in "$R"/lib/modules/*; do
    kver=$(basename "$kdir")
    chroot "$R" update-initramfs -c -k "$kver" 2>&1 | grep -v "^update-initramfs: Generating\|No zstd" || true
    ln -sfn "boot/vmlinuz-$kver" "$R/vmlinuz"; ln -sfn "boot/initrd.img-$kver" "$R/initrd.img"
done
[ -f "$R/initrd.img" ] || { echo "no initramfs" >&2; exit 1; }
rm -f "$R/vmlinuz.old" "$R/initrd.img.old"
cleanup; mounts=()
rm -rf "$R"/var/cache/apt/* "$R"/var/lib/apt/lists/* "$R"/var/log/*.log "$R"/tmp/wheels "$R"/var/cache/ldconfig/aux-cache
find "$R" -xdev -newermt "@$SOURCE_DATE_EPOCH" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} + 2>/dev/null || true

# 4. The slot image (ext4; fixed UUID and hash seed, timestamps clamped: reproducible from the same tree).
say "rootfs.ext4"
uuid=$(python3 -c "import uuid,sys;print(uuid.uuid5(uuid.NAMESPACE_URL,'edge-ivr/rootfs/'+sys.argv[1]))" "$VERSION")
rm -f "$B/rootfs.ext4"; truncate -s ${SLOT_SIZE}M "$B/rootfs.ext4"
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mkfs.ext4 -q -L rootfs -U "$uuid" -E "hash_seed=$uuid,lazy_itable_init=0" \
    -d "$R" "$B/rootfs.ext4"

# 5. The signed bundle: the slot image shrunk to its content (RAUC grows it to the slot: resize=true).
say "bundle"
BD=$B/bundle-src; rm -rf "$BD"; mkdir -p "$BD"
cp --sparse=always "$B/rootfs.ext4" "$BD/rootfs.ext4"
e2fsck -fy "$BD/rootfs.ext4" >/dev/null 2>&1 || true
resize2fs -M "$BD/rootfs.ext4" >/dev/null 2>&1
cat > "$BD/manifest.raucm" <<MF
[update]
compatible=edge-ivr-x86_64
version=$VERSION
description=edge-ivr appliance $VERSION
build=$SOURCE_DATE_EPOCH

[bundle]
format=verity

[image.rootfs]
filename=rootfs.ext4
MF
touch -d "@$SOURCE_DATE_EPOCH" "$BD"/*
BUNDLE=$B/edge-ivr-$VERSION.raucb
rm -f "$BUNDLE"
rauc bundle --cert="$CERT" --key="$KEY" --mksquashfs-args="-comp zstd -Xcompression-level 6" \
    "$BD" "$BUNDLE" >/dev/null
rm -rf "$BD"
say "bundle: $BUNDLE ($(du -h --apparent-size "$BUNDLE" | cut -f1))"
[ "$BUNDLE_ONLY" = 1 ] && exit 0

fi

# 6. The disk: GPT with a BIOS boot partition, boot (GRUB and its env), rootfs A, rootfs B, data.
say "disk image"
IMG=$B/edge-ivr.img
rm -f "$IMG"; truncate -s $((1 + 16 + 64 + 2 * SLOT_SIZE + DATA_SIZE + 1))M "$IMG"
sfdisk -q "$IMG" <<PT
label: gpt
label-id: 6B3C1D2E-0F1A-4B5C-8D9E-0A1B2C3D4E5F
first-lba: 2048
size=16MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp, uuid=6B3C1D2E-0F1A-4B5C-8D9E-000000000001
size=64MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=boot, uuid=6B3C1D2E-0F1A-4B5C-8D9E-000000000002
size=${SLOT_SIZE}MiB, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name=rootfs-a, uuid=6B3C1D2E-0F1A-4B5C-8D9E-000000000003
size=${SLOT_SIZE}MiB, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name=rootfs-b, uuid=6B3C1D2E-0F1A-4B5C-8D9E-000000000004
type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=data, uuid=6B3C1D2E-0F1A-4B5C-8D9E-000000000005
PT
part_start() { sfdisk -J "$IMG" | python3 -c "import json,sys;print(json.load(sys.stdin)['partitiontable']['partitions'][$1]['start'])"; }
dd if="$B/rootfs.ext4" of="$IMG" bs=1M seek=$(( $(part_start 2) / 2048 )) conv=notrunc,sparse status=none

# data: the appliance's state and site config, ssh host keys, RAUC's status; never written by an update.
DD=$B/data-skel; rm -rf "$DD"; mkdir -p "$DD/ivr/state" "$DD/ivr/etc" "$DD/ssh" "$DD/rauc"
chown $IVR_UID:$IVR_UID "$DD/ivr/state"; chmod 750 "$DD/ivr/state"; chmod 700 "$DD/ssh"
chown 0:$IVR_UID "$DD/ivr/etc"; chmod 750 "$DD/ivr/etc"
rm -f "$B/data.ext4"; truncate -s ${DATA_SIZE}M "$B/data.ext4"
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mkfs.ext4 -q -L data -U 6b3c1d2e-0f1a-4b5c-8d9e-0000000000da \
    -E "hash_seed=6b3c1d2e-0f1a-4b5c-8d9e-0000000000da" -d "$DD" "$B/data.ext4"
dd if="$B/data.ext4" of="$IMG" bs=1M seek=$(( $(part_start 4) / 2048 )) conv=notrunc,sparse status=none
rm -rf "$DD" "$B/data.ext4"

# boot: GRUB (UEFI: the ESP holds only GRUB's image, which finds the partition labelled "boot"), grub.cfg
# choosing the slot by RAUC's ORDER/x_OK and counting tries (x_TRY), the grubenv RAUC edits.
GB=$B/boot-skel; rm -rf "$GB"; mkdir -p "$GB/grub"
"$HERE/grub-cfg.sh" "$BOOT_TRIES" > "$GB/grub/grub.cfg"
grub-editenv "$GB/grub/grubenv" set ORDER="A B" A_OK=1 A_TRY=0 B_OK=0 B_TRY=0
rm -f "$B/boot.ext4"; truncate -s 64M "$B/boot.ext4"
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mkfs.ext4 -q -L boot -U 6b3c1d2e-0f1a-4b5c-8d9e-0000000000b0 -d "$GB" "$B/boot.ext4"
dd if="$B/boot.ext4" of="$IMG" bs=1M seek=$(( $(part_start 1) / 2048 )) conv=notrunc status=none
rm -rf "$GB" "$B/boot.ext4"
printf 'search --no-floppy --label boot --set=root\nset prefix=($root)/grub\n' > "$B/grub-early.cfg"
grub-mkimage -O x86_64-efi -o "$B/BOOTX64.EFI" -c "$B/grub-early.cfg" -p /grub --sbat /usr/share/grub/sbat.csv \
    part_gpt ext2 fat normal loadenv test configfile linux echo search search_label serial terminal \
    efi_gop all_video gzio regexp 2>/dev/null || \
grub-mkimage -O x86_64-efi -o "$B/BOOTX64.EFI" -c "$B/grub-early.cfg" -p /grub \
    part_gpt ext2 fat normal loadenv test configfile linux echo search search_label serial terminal \
    efi_gop all_video gzio regexp
rm -f "$B/esp.vfat"; truncate -s 16M "$B/esp.vfat"
mkfs.vfat -n ESP -i 6b3c1d2e "$B/esp.vfat" >/dev/null
mmd -i "$B/esp.vfat" ::/EFI ::/EFI/BOOT
mcopy -i "$B/esp.vfat" "$B/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
dd if="$B/esp.vfat" of="$IMG" bs=1M seek=$(( $(part_start 0) / 2048 )) conv=notrunc status=none
rm -f "$B/esp.vfat" "$B/grub-early.cfg" "$B/BOOTX64.EFI"
trap - EXIT
say "disk: $IMG ($(du -h --apparent-size "$IMG" | cut -f1) apparent, $(du -h "$IMG" | cut -f1) allocated)"
echo "$VERSION" > "$B/VERSION"
