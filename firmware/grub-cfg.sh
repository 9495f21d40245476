#!/bin/bash
# grub.cfg for RAUC's GRUB integration with boot counting: a slot is booted while x_OK=1 and x_TRY < N;
# each boot adds one to x_TRY, `rauc status mark-good` (ivr-health) sets it back to 0. RAUC owns ORDER and
# x_OK (install: the new slot first, OK=1, TRY=0). A slot that never reports healthy is tried N times,
# then GRUB boots the next slot in ORDER. No slot left: the first good one in ORDER, not counted.
N=${1:-3}
cat <<CFG
set default=0
set timeout=1
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console

set ORDER="A B"
set A_OK=0
set B_OK=0
set A_TRY=0
set B_TRY=0
load_env

set selected=""
for SLOT in \$ORDER; do
    if [ -z "\$selected" ]; then
        if [ "\$SLOT" = "A" ]; then OK=\$A_OK; TRY=\$A_TRY; fi
        if [ "\$SLOT" = "B" ]; then OK=\$B_OK; TRY=\$B_TRY; fi
        if [ "\$OK" = "1" -a "\$TRY" -lt $N ]; then
            selected=\$SLOT
CFG
for ((i = 0; i < N; i++)); do
    echo "            if [ \"\$TRY\" = \"$i\" ]; then NEXT=$((i + 1)); fi"
done
cat <<CFG
            if [ "\$SLOT" = "A" ]; then A_TRY=\$NEXT; fi
            if [ "\$SLOT" = "B" ]; then B_TRY=\$NEXT; fi
        fi
    fi
done
if [ -z "\$selected" ]; then
    for SLOT in \$ORDER; do
        if [ -z "\$selected" ]; then
            if [ "\$SLOT" = "A" -a "\$A_OK" = "1" ]; then selected=A; fi
            if [ "\$SLOT" = "B" -a "\$B_OK" = "1" ]; then selected=B; fi
        fi
    done
fi
if [ -z "\$selected" ]; then selected=A; fi
save_env A_TRY B_TRY
if [ "\$selected" = "B" ]; then default=1; fi

regexp --set=1:disk '^([^,]*),' "\$root"
set CMDLINE="rw console=ttyS0,115200 panic=10 quiet systemd.show_status=1"
menuentry "edge-ivr slot A (OK=\$A_OK TRY=\$A_TRY)" {
    set root=(\$disk,gpt3)
    linux /vmlinuz root=PARTLABEL=rootfs-a \$CMDLINE rauc.slot=A
    initrd /initrd.img
}
menuentry "edge-ivr slot B (OK=\$B_OK TRY=\$B_TRY)" {
    set root=(\$disk,gpt4)
    linux /vmlinuz root=PARTLABEL=rootfs-b \$CMDLINE rauc.slot=B
    initrd /initrd.img
}
CFG
