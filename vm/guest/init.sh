#!/bin/sh
# /init of the fsoracle guest (an initramfs; see vm/guestroot.py). busybox sh, PID 1.
# Parameters come from the kernel command line (fso.*), so one cached initramfs serves
# every boot: fso.ip=ADDR/LEN (guest address), fso.key=TYPE,BASE64 (the per-VM SSH key),
# fso.probe=1 (accelerator probe: say so and power off at once).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
for arg in $(cat /proc/cmdline); do
    case "$arg" in
    fso.probe=1) echo "FSORACLE-PROBE-OK"; poweroff -f ;;
    fso.ip=*) FSO_IP=${arg#fso.ip=} ;;
    fso.key=*) FSO_KEY=${arg#fso.key=} ;;
    esac
done
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm /dev/disk/by-id
mount -t devpts -o gid=5,mode=620 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t configfs configfs /sys/kernel/config 2>/dev/null
ln -sf /proc/self/fd /dev/fd
hostname fsoracle

# modules, dependencies first (the order was computed at build time with modprobe -D):
# the network driver now, the rest while the SSH server takes the host's first connection
load_modules() {
    while read -r ko; do
        insmod "/lib/modules/$(uname -r)/$ko" 2>/run/insmod.err ||
            echo "fsoracle: insmod $ko failed: $(cat /run/insmod.err)"
    done < "$1"
}
load_modules /etc/fso-modules-early
# a kernel built without module support (fsoracle kernel build) has no modprobe sysctl
[ -e /proc/sys/kernel/modprobe ] && echo /sbin/modprobe > /proc/sys/kernel/modprobe

ip link set lo up
if [ -n "$FSO_IP" ]; then
    ip addr add "$FSO_IP" dev eth0
    ip link set eth0 up
fi

mkdir -p -m 700 /root/.ssh
if [ -n "$FSO_KEY" ]; then
    echo "$FSO_KEY" | tr ',' ' ' > /root/.ssh/authorized_keys
    chmod 600 /root/.ssh/authorized_keys
fi
# -s: no passwords; -j -k: no port forwarding; host key made when the initramfs was built
dropbear -s -j -k -p 22 -r /etc/dropbear/dropbear_ed25519_host_key -E 2>/run/dropbear.log
echo "FSORACLE-READY $(cut -d' ' -f1 /proc/uptime)"

# the harness's first SSH command waits for /run/fso-ready (vm/machine.py, _wait_ready)
load_modules /etc/fso-modules
fso-disks > /dev/null
touch /run/fso-ready
# busybox init reaps orphans and runs /etc/inittab's shutdown entry on poweroff
exec /sbin/init
