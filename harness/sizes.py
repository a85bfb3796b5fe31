"""Sizes as people type them: 4096, 4K, 16KiB, 128G, 1T."""

from __future__ import annotations

import re

from harness.errors import UserError

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}


def parse_size(s: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([KMGTP]?)(?:i?B)?\s*", s, re.IGNORECASE)
    if not m:
        raise UserError(f"bad size {s!r}: use a number with an optional K/M/G/T suffix")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]
