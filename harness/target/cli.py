"""``fsoracle vm ...``: boot a kernel under QEMU and run commands in it.

- ``vm run [options] -- CMD...``: boot, run CMD in the guest (one argument is a shell command
  line, several are an argv), stream its output, power off, exit with CMD's status.
- ``vm shell [options]``: an interactive shell in the guest.
- ``vm prepare [--kernel SPEC]``: fetch the kernel, build the initramfs, settle the
  accelerator, and say where everything is (so a later boot starts at once).

Errors the user can cause (a kernel spec that does not resolve, a missing disk image, a guest
that panics or stops answering) end in one line and exit status 2; a kernel fault report is
printed above that line.
"""

from __future__ import annotations

import argparse
import json
import sys

from harness.argtypes import float_range, int_range
from harness.errors import UserError, vm_errors
from vm.accel import ACCELS, choose_accel, find_qemu
from vm.disks import Disk
from vm.errors import VMUserError
from vm.guestroot import build_guest_root
from vm.kernels import DEFAULT_SPEC, boot_image, resolve_kernel, schemes
from vm.machine import Machine, MachineConfig, parse_mem

DEFAULT_RUN_TIMEOUT = 600.0


def _machine_args(p: argparse.ArgumentParser, timeout: float | None) -> None:
    p.add_argument(
        "--kernel",
        default=DEFAULT_SPEC,
        metavar="SPEC",
        help=f"kernel spec: debian:6.12 (default), debian:6.1, path:VMLINUZ[,MODULES_DIR] "
        f"(schemes: {', '.join(schemes())})",
    )
    p.add_argument(
        "--disk",
        action="append",
        default=[],
        metavar="PATH[:virtio|:nvme]",
        help="attach an image (serials fso0, fso1... in order; default interface virtio)",
    )
    p.add_argument("--accel", choices=ACCELS, default="auto", help="default: auto")
    p.add_argument("--mem", default="1024", metavar="M", help="guest memory, e.g. 1024, 2G")
    p.add_argument("--cpus", type=int_range(1, 64), default=2, metavar="N")
    p.add_argument(
        "--timeout",
        type=float_range(1.0, 7 * 86400.0),
        default=timeout,
        metavar="S",
        help="kill the machine after S seconds"
        + (f" (default {timeout:.0f})" if timeout else " (default: none)"),
    )
    p.add_argument("--network", choices=("auto", "netns", "user"), default="auto")
    p.add_argument("--log-dir", default=None, help="where console.log goes (default results/vm/)")


def _config(args: argparse.Namespace) -> MachineConfig:
    if args.cpus < 1:
        raise UserError(f"--cpus {args.cpus}: need at least 1")
    try:
        disks = tuple(Disk.parse(spec) for spec in args.disk)
        mem = parse_mem(args.mem)
    except (ValueError, VMUserError) as e:
        raise UserError(str(e)) from e
    return MachineConfig(
        kernel=args.kernel,
        disks=disks,
        accel=args.accel,
        mem=mem,
        cpus=args.cpus,
        timeout=args.timeout,
        network=args.network,
        log_dir=args.log_dir,
        name="cli",
    )


def cmd_run(args: argparse.Namespace) -> int:
    cmd: list[str] = args.cmd
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise UserError("vm run needs a command: fsoracle vm run [options] -- CMD...")
    line: str | list[str] = cmd[0] if len(cmd) == 1 else cmd
    config = _config(args)
    with vm_errors(), Machine(config) as m:
        if args.json:
            r = m.run(line)
        else:
            r = m.run(line, stdout=sys.stdout.buffer, stderr=sys.stderr.buffer)
        boot = m.boot
    if args.json:
        assert boot is not None
        doc = {
            "cmd": r.cmd,
            "status": r.status,
            "stdout": r.out,
            "stderr": r.err,
            "duration": round(r.duration, 3),
            "kernel": boot.kernel,
            "release": boot.release,
            "accel": boot.accel,
            "accel_reason": boot.accel_reason,
            "network": boot.network,
            "seconds_to_ready": round(boot.seconds_to_ready, 3),
            "console_log": str(boot.console_log),
        }
        print(json.dumps(doc, indent=1))
    return r.status


def cmd_shell(args: argparse.Namespace) -> int:
    config = _config(args)
    with vm_errors(), Machine(config) as m:
        return m.interactive_shell()


def cmd_prepare(args: argparse.Namespace) -> int:
    with vm_errors():
        kernel = resolve_kernel(args.kernel)
        root = build_guest_root(kernel)
        image = boot_image(kernel)
        accel = choose_accel(args.accel, find_qemu(), image, root.initramfs)
    doc = {
        "kernel": kernel.spec,
        "release": kernel.release,
        "vmlinuz": str(kernel.vmlinuz),
        "boot_image": str(image),
        "modules": str(kernel.modules_dir) if kernel.modules_dir else None,
        "initramfs": str(root.initramfs),
        "initramfs_mib": round(root.size / 2**20, 1),
        "accel": accel.accel,
        "accel_reason": accel.reason,
    }
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        width = max(len(k) for k in doc)
        for k, v in doc.items():
            print(f"{k:<{width}}  {v}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    vm = sub.add_parser("vm", help="boot kernels under QEMU and run commands in them")
    vsub = vm.add_subparsers(dest="vm_command", metavar="SUBCOMMAND")
    vsub.required = True

    run = vsub.add_parser(
        "run",
        help="run a command in a fresh guest and exit with its status",
        description="Boot a guest, run CMD in it (one argument: a shell command line; "
        "several: an argv), stream its output and exit with its status.",
    )
    _machine_args(run, DEFAULT_RUN_TIMEOUT)
    run.add_argument("--json", action="store_true", help="print one JSON document instead")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD...")
    run.set_defaults(func=cmd_run)

    shell = vsub.add_parser("shell", help="an interactive shell in a fresh guest")
    _machine_args(shell, None)
    shell.set_defaults(func=cmd_shell)

    prep = vsub.add_parser(
        "prepare", help="fetch the kernel, build the initramfs, settle the accelerator"
    )
    prep.add_argument("--kernel", default=DEFAULT_SPEC, metavar="SPEC")
    prep.add_argument("--accel", choices=ACCELS, default="auto")
    prep.add_argument("--json", action="store_true")
    prep.set_defaults(func=cmd_prepare)
