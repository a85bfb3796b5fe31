"""``fsoracle kernel ...``: build kernels from Debian's source with series from ``patches/``.

    fsoracle kernel build --base 6.12 [--series NAME]... [--config-only NAME]... [--force] [--json]
    fsoracle kernel config --base 6.12 [--series NAME]... [--config-only NAME]... [--json]
    fsoracle kernel list [--json]

``build`` prints the kernel spec (``build:6.12+NAME...``) every other command takes with
``--kernel``, and where the kernel is; a cached build returns at once. ``config`` only
configures (tinyconfig + fragments + olddefconfig) and checks that every fragment option
survived, without compiling. ``list`` shows every cached kernel and what it came from.
Errors (a patch that does not apply, an option that fell out, a compiler error) end in one
line after their details and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from harness.errors import vm_errors


def _request(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from harness.kernel.patchsets import series_patch_sets
    from vm.kbuild import make_request

    return make_request(args.base, args.series, args.config_only, series_patch_sets())


def cmd_build(args: argparse.Namespace) -> int:
    from vm.kbuild import build_kernel

    t0 = time.monotonic()
    with vm_errors():
        req = _request(args)
        kernel = build_kernel(req, force=args.force)
    seconds = time.monotonic() - t0
    doc = {
        "spec": kernel.spec,
        "release": kernel.release,
        "bzImage": str(kernel.vmlinuz),
        "config": str(kernel.config),
        "modules": str(kernel.modules_dir) if kernel.modules_dir else None,
        "seconds": round(seconds, 1),
    }
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        width = max(len(k) for k in doc)
        for k, v in doc.items():
            print(f"{k:<{width}}  {v}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from vm.kbuild import check_config

    with vm_errors():
        req = _request(args)
        res = check_config(req)
    doc = {
        "spec": req.spec,
        "options": len(res.merged),
        "fragment": [o.line for o in res.merged.values()],
        "notes": res.notes,
        "config": str(res.obj / ".config"),
        "symbols_set": sum(1 for v in res.dotconfig.values() if v != "n"),
    }
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        print(
            f"{req.spec}: all {len(res.merged)} fragment options survived make olddefconfig; "
            f"{doc['symbols_set']} symbols set; .config: {doc['config']}"
        )
        for n in res.notes:
            print(f"  note: {n}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from vm.kbuild import cached_kernels

    ks = cached_kernels()
    if args.json:
        print(
            json.dumps(
                [
                    {"spec": k.spec, "release": k.release, "path": str(k.path), "what": k.what}
                    | {
                        key: k.meta[key]
                        for key in ("build_seconds", "built", "cold", "fragment")
                        if key in k.meta
                    }
                    for k in ks
                ],
                indent=1,
            )
        )
        return 0
    if not ks:
        print("no cached kernels (fsoracle kernel build, or any --kernel SPEC, makes one)")
        return 0
    for k in ks:
        built = ""
        if "build_seconds" in k.meta:
            built = f"; built {k.meta['built']} in {k.meta['build_seconds'] / 60:.1f} min"
            built += " (cold)" if k.meta.get("cold") else " (incremental)"
        print(f"{k.spec}\n  release {k.release}: {k.what}{built}\n  {k.path}")
    sys.stdout.flush()
    return 0


def _request_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", default="6.12", help="kernel source: 6.12 (Debian linux-source-6.12)")
    p.add_argument(
        "--series",
        action="append",
        default=[],
        metavar="NAME",
        help="apply patches/NAME (patches and config:), in the order given",
    )
    p.add_argument(
        "--config-only",
        action="append",
        default=[],
        metavar="NAME",
        help="add a config-only series (patches/NAME with no patches: extent-tree-v2) or "
        "fragment (vm/kconfig/NAME.config: debug), after the --series",
    )
    p.add_argument("--json", action="store_true")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    k = sub.add_parser("kernel", help="build kernels from Debian's source with patch series")
    ksub = k.add_subparsers(dest="kernel_command", metavar="SUBCOMMAND")
    ksub.required = True

    b = ksub.add_parser(
        "build",
        help="build (or find in the cache) a kernel: base + series; prints its spec",
        description="Build linux-source-6.12 with the series' patches and config fragments "
        "(cached by source version, patches and config). Prints the kernel spec to use with "
        "--kernel (build:6.12+NAME...).",
    )
    _request_args(b)
    b.add_argument("--force", action="store_true", help="rebuild even if cached")
    b.set_defaults(func=cmd_build)

    c = ksub.add_parser("config", help="configure only, and check every fragment option survived")
    _request_args(c)
    c.set_defaults(func=cmd_config)

    ls = ksub.add_parser("list", help="cached kernels and what they were built from")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)
