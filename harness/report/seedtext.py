"""The seed texts: where they are, whether a claim's ``quote`` occurs in its seed, and how a
seed number is read from the token the seed prints ("805851.8 us", "25m51s", "43.5 MB").

A quote occurs *verbatim* when it is a substring of the seed file after both are reduced to
single spaces (the seeds wrap lines, and two of them are flattened to one line), and after
the seed's mail-quote markers are dropped: the delayed-compression seed is a reply whose
quoted lines, flattened, read ``... I'll go > the following example ...``. Nothing else
is normalised: case, punctuation and typographic quotes must match.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

DEFAULT_SEEDS = Path("/work/shared/seeds")


def seeds_dir() -> Path:
    """``$FSORACLE_SEEDS`` or the shared seed directory."""
    return Path(os.environ.get("FSORACLE_SEEDS", str(DEFAULT_SEEDS)))


_MARKER = re.compile(r"(?:(?<=\s)|^)>(?=\s)")


def normalise(text: str) -> str:
    """Single spaces, mail-quote markers (a lone ``>`` between spaces) dropped."""
    text = _MARKER.sub(" ", text)
    return " ".join(text.split())


def quote_in_seed(quote: str, seed_text: str) -> bool:
    return normalise(quote) in normalise(seed_text)


# --------------------------------------------------------------------------- tokens

WORDS = {
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "half": 0.5,
}

# unit spelled in the seed -> (dimension, factor to the dimension's base unit)
UNITS: dict[str, tuple[str, float]] = {
    "us": ("time", 1e-6),
    "ms": ("time", 1e-3),
    "s": ("time", 1.0),
    "b": ("bytes", 1.0),
    "kb": ("bytes", 1e3),
    "mb": ("bytes", 1e6),
    "gb": ("bytes", 1e9),
    "kib": ("bytes", 1024.0),
    "mib": ("bytes", 1024.0**2),
    "gib": ("bytes", 1024.0**3),
    "kb/s": ("rate", 1e3),
    "mb/s": ("rate", 1e6),
    "x": ("ratio", 1.0),
    "%": ("ratio", 0.01),
}

# the unit a seed key is stored in, from its suffix (``before_ms``, ``throughput_kb_s``)
KEY_UNITS = {
    "_us": "us",
    "_ms": "ms",
    "_s": "s",
    "_kb": "kb",
    "_mb": "mb",
    "_gb": "gb",
    "_kb_s": "kb/s",
    "_mb_s": "mb/s",
    "percent": "%",
}

_NUM = r"[-+]?\d+(?:\.\d+)?"
_DURATION = re.compile(rf"^(?:(\d+)h)?(?:(\d+)m)?(?:({_NUM})s)?$")
_TOKEN = re.compile(rf"^[~≈]?\s*({_NUM})\s*([A-Za-z%/]*)$")
_SIZE = re.compile(rf"^({_NUM})([KMG])$")


class TokenError(ValueError):
    pass


def key_unit(key: str) -> str | None:
    for suffix in sorted(KEY_UNITS, key=len, reverse=True):
        if key.endswith(suffix):
            return KEY_UNITS[suffix]
    return None


def parse_token(token: str) -> tuple[float, str | None]:
    """The number a seed token spells and its unit (lower case), e.g. ``"25m51s"`` ->
    (1551, "s"), ``"805851.8 us"`` -> (805851.8, "us"), ``"~680"`` -> (680, None),
    ``"two"`` -> (2, None), ``"128K"`` -> (131072, None)."""
    t = token.strip()
    if t.lower() in WORDS:
        return float(WORDS[t.lower()]), None
    m = _DURATION.match(t)
    if m and any(m.groups()) and ("m" in t or "h" in t):
        h, mi, s = (float(g) if g else 0.0 for g in m.groups())
        return h * 3600 + mi * 60 + s, "s"
    m = _SIZE.match(t)
    if m:
        return float(m.group(1)) * {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2)], None
    m = _TOKEN.match(t)
    if not m:
        raise TokenError(f"cannot read a number from {token!r}")
    unit = m.group(2).lower() or None
    if unit is not None and unit not in UNITS:
        raise TokenError(f"unknown unit {m.group(2)!r} in {token!r}")
    return float(m.group(1)), unit


def convert(value: float, unit: str | None, to: str | None) -> float:
    """``value`` in ``unit`` expressed in ``to``; a key without a unit suffix takes the base
    unit of the token's dimension (bytes, a fraction, seconds): "16KiB" -> 16384,
    "20%" -> 0.2."""
    if unit == to or unit is None:
        return value
    if to is None:
        return value * UNITS[unit][1]
    du, fu = UNITS[unit]
    dt, ft = UNITS[to]
    if du != dt:
        raise TokenError(f"cannot convert {unit} to {to}")
    return value * fu / ft


def decimals(value: float) -> int:
    """Decimal places of the value as written (805.85 -> 2)."""
    text = repr(float(value))
    if "e" in text:
        return 6
    frac = text.split(".")[1]
    return 0 if frac == "0" else len(frac)


def token_matches(token: str, key: str, value: float) -> bool:
    """The token, converted to the key's unit, rounds to the stored value."""
    number, unit = parse_token(token)
    got = convert(number, unit, key_unit(key))
    return (
        math.isclose(got, value, rel_tol=1e-12)
        or abs(got - value) <= 0.5 * 10 ** (-decimals(value)) + 1e-12
    )


_RANGE = re.compile(r"^\[\s*(\S+?)\s*,\s*(\S+?)\s*\)$")


def parse_range(token: str) -> list[list[float]]:
    """``"[8K, 128K)"`` -> [[8192, 131072]] (a half-open byte range as the seeds write it)."""
    m = _RANGE.match(token.strip())
    if not m:
        raise TokenError(f"{token!r} is not a range [A, B)")
    return [[parse_token(m.group(1))[0], parse_token(m.group(2))[0]]]


def default_token(value: float) -> str:
    """The token to look for when series.yaml gives none: the number as written."""
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))
