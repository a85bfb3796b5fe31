"""Deterministic file contents for the compression experiments.

Every byte is a pure function of (kind, seed, absolute file offset), so the model, the
host-kernel runs and the VM runs write exactly the same data:

- ``zeros``: all zero bytes (maximally compressible; the heuristic's repeated-pattern case);
- ``random``: SHA-256 in counter mode over (seed, 32-byte block index): incompressible;
- ``text``: English-like lines of words from a fixed 74-word vocabulary chosen by a 64-bit
  LCG seeded per 4 KiB block, so text compresses about 3:1 and the heuristic sees a byte
  set under 64 values.
"""

from __future__ import annotations

import hashlib

PATTERN_KINDS = ("zeros", "random", "text")

_VOCAB = (
    "the of and to in is was that for on with as by at from his her which or had are this "
    "but not be have were one all they an their been has more when who will no would if "
    "can so said there out up about what than into only other time some could these two "
    "may first then do any like my now over such our man me even most made "
)
_WORDS = tuple(_VOCAB.split())
_TEXT_BLOCK = 4096
_LCG_A = 6364136223846793005
_LCG_C = 1442695040888963407
_M64 = (1 << 64) - 1


def _text_block(seed: int, index: int) -> bytes:
    """One 4 KiB block of text: words and line breaks from a per-block LCG."""
    state = (seed * 0x9E3779B97F4A7C15 + index * 0xBF58476D1CE4E5B9 + 1) & _M64
    out = bytearray()
    col = 0
    while len(out) < _TEXT_BLOCK:
        state = (state * _LCG_A + _LCG_C) & _M64
        word = _WORDS[(state >> 33) % len(_WORDS)]
        out += word.encode()
        col += len(word) + 1
        if col > 60 or (state >> 60) == 0:
            out += b"\n"
            col = 0
        else:
            out += b" "
    return bytes(out[:_TEXT_BLOCK])


def _random_block(seed: int, index: int) -> bytes:
    return hashlib.sha256(seed.to_bytes(8, "little") + index.to_bytes(8, "little")).digest()


def pattern_bytes(kind: str, offset: int, length: int, seed: int = 0) -> bytes:
    """``length`` bytes of pattern ``kind`` as they appear at file offset ``offset``."""
    if length <= 0:
        return b""
    if kind == "zeros":
        return bytes(length)
    if kind == "random":
        bs, gen = 32, _random_block
    elif kind == "text":
        bs, gen = _TEXT_BLOCK, _text_block
    else:
        raise ValueError(f"unknown data kind {kind!r}: one of {', '.join(PATTERN_KINDS)}")
    first, last = offset // bs, (offset + length - 1) // bs
    buf = b"".join(gen(seed, i) for i in range(first, last + 1))
    skip = offset - first * bs
    return buf[skip : skip + length]
