#!/bin/sh
# List the guest's disks as "NAME IFACE SERIAL BYTES" lines and refresh the
# /dev/disk/by-id/{virtio,nvme}-SERIAL links (there is no udev in the guest).
mkdir -p /dev/disk/by-id
for sys in /sys/block/*; do
    name=${sys##*/}
    # hidden multipath paths (nvme0c0n1) have no device node; their head (nvme0n1) does
    [ "$(cat "$sys/hidden" 2>/dev/null)" = 1 ] && continue
    case "$name" in
    vd*) iface=virtio; serial=$(cat "$sys/serial" 2>/dev/null) ;;
    nvme*) iface=nvme; serial=$(cat "$sys/device/serial" 2>/dev/null) ;;
    *) continue ;;
    esac
    serial=$(echo $serial)
    [ -n "$serial" ] || serial=-
    bytes=$(($(cat "$sys/size") * 512))
    [ "$serial" != - ] && ln -sfn "/dev/$name" "/dev/disk/by-id/$iface-$serial"
    echo "$name $iface $serial $bytes"
done
# drop links whose device went away
for link in /dev/disk/by-id/*; do
    [ -L "$link" ] && [ ! -e "$link" ] && rm -f "$link"
done
exit 0
