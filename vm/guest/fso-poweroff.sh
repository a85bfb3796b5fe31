#!/bin/sh
# Clean power-off: flush, unmount the disk filesystems (newest first), power off at once.
sync
awk '$1 ~ "^/dev/" {print $2}' /proc/mounts | sed -n '1!G;h;$p' | while read -r mnt; do
    umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null
done
sync
poweroff -f
