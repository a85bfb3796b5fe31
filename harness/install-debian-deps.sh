#!/bin/sh
# Install the Debian packages fsoracle needs. Run as root; a no-op for what is present.
# bookworm-backports is enabled by copying the machine's own first Debian source stanza
# (no mirror host is named here), because btrfs-progs 6.14 and QEMU 10 come from there.
#
# `install-debian-deps.sh --kbuild` installs only what building a kernel from Debian's
# linux-source needs (KBUILD_DEPS: compiler, flex/bison, libelf/libssl headers; perl for
# scripts/checkpatch.pl comes with build-essential). `make test` never asks for them.
#
# `install-debian-deps.sh --report` installs REPORT_DEPS: Debian's chromium, which the report
# tests (tests/report/test_report_render.py) use headless to open the HTML reports and take a
# screenshot; the test runs this itself, as root, when chromium is missing.
set -eu
REPORT_DEPS="chromium"
KBUILD_DEPS="build-essential flex bison bc libelf-dev libssl-dev xz-utils"
# missing PKG...: the packages of the list that are not installed, each after a space
missing() {
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || printf ' %s' "$p"
    done
}
# install_list WHAT PKG...: install the packages of a list that are missing, then exit
install_list() {
    what=$1
    shift
    if [ "$(id -u)" != 0 ]; then
        echo "install-debian-deps: not root; install these for $what: $*" >&2
        exit 0
    fi
    need=$(missing "$@")
    [ -z "$need" ] && exit 0
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $need
    exit 0
}
case "${1:-}" in
    --report) install_list "the report tests" $REPORT_DEPS ;;
    --kbuild) install_list "kernel builds" $KBUILD_DEPS ;;
esac
want_bpo="btrfs-progs qemu-system-x86"
want_main="e2fsprogs zstd liblzo2-dev xz-utils cpio kmod busybox-static dropbear-bin openssh-client iproute2 python3 dmsetup lz4"
if [ "$(id -u)" != 0 ]; then
    echo "install-debian-deps: not root; skipping Debian packages (install: $want_bpo $want_main)" >&2
    exit 0
fi
btrfs_ok=0
if command -v mkfs.btrfs >/dev/null 2>&1; then
    v=$(mkfs.btrfs --version 2>&1 | sed -n 's/.*v\([0-9]*\)\.\([0-9]*\).*/\1 \2/p' | head -1)
    set -- $v
    if [ "${1:-0}" -gt 6 ] || { [ "${1:-0}" -eq 6 ] && [ "${2:-0}" -ge 14 ]; }; then btrfs_ok=1; fi
fi
qemu_ok=0
if command -v qemu-system-x86_64 >/dev/null 2>&1; then
    v=$(qemu-system-x86_64 --version | sed -n 's/.*version \([0-9]*\)\..*/\1/p' | head -1)
    [ "${v:-0}" -ge 10 ] && qemu_ok=1
fi
need=$(missing $want_main)
if [ $btrfs_ok = 1 ] && [ $qemu_ok = 1 ] && [ -z "$need" ]; then
    exit 0
fi
src=/etc/apt/sources.list.d/debian.sources
bpo=/etc/apt/sources.list.d/fsoracle-backports.sources
if [ ! -f "$bpo" ]; then
    if [ ! -f "$src" ]; then
        echo "install-debian-deps: $src not found; add bookworm-backports to apt by hand" >&2
        exit 2
    fi
    # first stanza of the machine's own entry, with the suite replaced
    awk 'BEGIN{RS=""; ORS="\n\n"} NR==1{print; exit}' "$src" \
        | sed 's/^Suites:.*/Suites: bookworm-backports/' > "$bpo.tmp"
    mv "$bpo.tmp" "$bpo"
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $need
apt-get install -y -qq --no-install-recommends -t bookworm-backports btrfs-progs qemu-system-x86 qemu-utils
