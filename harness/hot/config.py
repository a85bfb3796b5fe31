"""The hot-data study's configuration: the YAML presets (``presets/NAME.yaml``, with
``variants``) and :class:`SimSetup`, a preset turned into model objects (the Zipf workload,
the two devices, the SSD share, the seeds and the policy's clock)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import UserError
from harness.safeio import read_text_input
from model.hotdata import constants as C
from model.hotdata.tiering import DeviceModel, TierModel
from model.hotdata.workload import ZipfWorkload

PRESET_DIR = Path(__file__).resolve().parent / "presets"
MiB = 2**20


def load_preset(name: str) -> dict[str, Any]:
    """``NAME`` (a preset of this package, ``presets/NAME.yaml``) or a path to a YAML file."""
    path = Path(name)
    if not path.suffix:
        path = PRESET_DIR / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
        raise UserError(f"preset {name!r} not found (known: {known})")
    try:
        data = yaml.safe_load(read_text_input(path, "preset"))
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a mapping")
    return data


@dataclass(frozen=True)
class SimSetup:
    """The preset turned into model objects."""

    workload: ZipfWorkload
    tiers: TierModel
    jobs: int
    ssd_capacity: int
    trace_reads: int
    trace_seed: int
    measure_seed: int
    measure_reads: int
    setup_writes: bool
    start_ns: int
    horizon_ns: int
    rewrite_delay_ns: int | None
    curve: tuple[float, ...]
    seed_speedup: float
    seed_fraction: float
    raw: dict[str, Any] = field(default_factory=dict, compare=False)


def _get(d: dict[str, Any], path: str) -> Any:
    cur: Any = d
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise UserError(f"preset: missing {path}")
        cur = cur[part]
    return cur


def _device(d: dict[str, Any]) -> DeviceModel:
    bps = d.get("bps_cap_mib")
    return DeviceModel(
        name=str(d["name"]),
        latency_s=float(d["latency_ms"]) / 1e3,
        iops_cap=None if d.get("iops_cap") is None else float(d["iops_cap"]),
        bps_cap=None if bps is None else float(bps) * MiB,
    )


def setup_from_preset(p: dict[str, Any]) -> SimSetup:
    w = _get(p, "workload")
    io_size = int(w["io_size"])
    wl = ZipfWorkload(
        files=int(w["files"]),
        file_size=int(w["file_size_mib"]) * MiB,
        io_size=io_size,
        s=float(w["zipf_exponent"]),
        unit=int(w["zipf_unit_mib"]) * MiB,
        seed=int(w["rank_seed"]),
    )
    jobs = int(w["jobs"])
    tiers = TierModel(
        ssd=_device(_get(p, "devices.ssd")),
        hdd=_device(_get(p, "devices.hdd")),
        jobs=jobs,
        io_size=io_size,
        cpu_s_per_io=float(_get(p, "host.cpu_ms_per_io")) / 1e3,
        cpus=int(_get(p, "host.cpus")),
    )
    start = datetime.datetime.fromisoformat(str(_get(p, "policy.start_realtime")))
    rd = p.get("policy", {}).get("rewrite_delay_s")
    return SimSetup(
        workload=wl,
        tiers=tiers,
        jobs=jobs,
        ssd_capacity=int(float(_get(p, "tiering.ssd_capacity_fraction")) * wl.dataset_bytes),
        trace_reads=int(w["trace_reads"]),
        trace_seed=int(w["trace_seed"]),
        measure_seed=int(w["measure_seed"]),
        measure_reads=int(w["sim_measure_reads"]),
        setup_writes=bool(w.get("setup_writes", True)),
        start_ns=int(start.timestamp()) * C.NSEC_PER_SEC,
        horizon_ns=int(float(_get(p, "policy.horizon_hours")) * 3600) * C.NSEC_PER_SEC,
        rewrite_delay_ns=None if rd is None else int(float(rd) * C.NSEC_PER_SEC),
        curve=tuple(float(x) for x in _get(p, "tiering.curve_fractions")),
        seed_speedup=float(_get(p, "seed_claim.speedup")),
        seed_fraction=float(_get(p, "seed_claim.ssd_fraction")),
        raw=p,
    )


# ---- presets with variants -------------------------------------------------------------


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_variant(name: str) -> dict[str, Any]:
    """``PRESET`` or ``PRESET:VARIANT`` (the preset's ``variants.VARIANT`` merged over it,
    ``name`` set to ``PRESET:VARIANT``)."""
    base, _, variant = name.partition(":")
    p = load_preset(base)
    variants = p.pop("variants", {}) or {}
    if variant:
        if variant not in variants:
            raise UserError(
                f"preset {base!r} has no variant {variant!r} (has: {', '.join(variants) or 'none'})"
            )
        p = _merge(p, variants[variant])
        p["name"] = f"{p.get('name', base)}:{variant}"
    return p
