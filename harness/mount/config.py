"""The mount bench's configuration (:class:`BenchConfig`) and its presets
(``presets/mount_bench.yaml``, sizes as the command line takes them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.errors import UserError
from harness.sizes import parse_size
from harness.target.spec import DEVICES
from model.btrfs.mkfs import KERNEL_LAYOUTS, MkfsConfig, MkfsError

PRESETS = Path(__file__).resolve().parent / "presets" / "mount_bench.yaml"


@dataclass(frozen=True)
class BenchConfig:
    """One bench run: the images (``size`` bytes of ``extent_size`` files on a
    ``device_size`` device), which layouts and devices, how many cold mounts each."""

    preset: str
    kernel: str
    layouts: tuple[str, ...]
    devices: tuple[str, ...]
    size: int
    device_size: int
    nodesize: int
    extent_size: int
    repeat: int
    seed: int = 0
    mem: int = 1536
    timeout: float = 5400.0

    def mkfs(self) -> MkfsConfig:
        return MkfsConfig(
            size=self.device_size,
            nodesize=self.nodesize,
            fill=self.size,
            extent_size=self.extent_size,
            seed=self.seed,
        )


def load_presets(path: Path = PRESETS) -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(path.read_text())
    presets: dict[str, dict[str, Any]] = doc["presets"]
    return presets


def default_device_size(size: int) -> int:
    """10 % more than the data, rounded up to a GiB (room for metadata and the chunk
    allocator's 10 % cap on chunk sizes)."""
    return max(-(-size * 11 // (10 << 30)), 1) << 30


def _list(value: Any, allowed: Sequence[str], what: str) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    out = tuple(str(i).strip() for i in items if str(i).strip())
    bad = [i for i in out if i not in allowed]
    if bad or not out:
        raise UserError(f"{what} {','.join(bad) or '(none)'}: use some of {','.join(allowed)}")
    return out


def make_config(
    preset: str = "default",
    *,
    kernel: str = "debian:6.12",
    overrides: dict[str, Any] | None = None,
    presets: dict[str, dict[str, Any]] | None = None,
) -> BenchConfig:
    """A preset's values with ``overrides`` (None values ignored) on top."""
    table = presets if presets is not None else load_presets()
    if preset not in table:
        raise UserError(f"no preset {preset!r}: use one of {', '.join(sorted(table))}")
    v = dict(table[preset])
    v.update({k: x for k, x in (overrides or {}).items() if x is not None})
    size = parse_size(str(v["size"]))
    device_size = (
        parse_size(str(v["device_size"])) if v.get("device_size") else default_device_size(size)
    )
    repeat = int(v.get("repeat", 3))
    if repeat < 1:
        raise UserError("--repeat must be at least 1")
    cfg = BenchConfig(
        preset=preset,
        kernel=kernel,
        layouts=_list(v.get("layouts", KERNEL_LAYOUTS), KERNEL_LAYOUTS, "layouts"),
        devices=_list(v.get("devices", DEVICES), DEVICES, "devices"),
        size=size,
        device_size=device_size,
        nodesize=parse_size(str(v.get("nodesize", "4K"))),
        extent_size=parse_size(str(v.get("extent_size", "4M"))),
        repeat=repeat,
        seed=int(v.get("seed", 0)),
        mem=int(v.get("mem", 1536)),
        timeout=float(v.get("timeout", 5400)),
    )
    try:
        cfg.mkfs().validate()
    except MkfsError as e:
        raise UserError(str(e)) from None
    return cfg
