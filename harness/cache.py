"""The artefact cache: ``~/.cache/fsoracle`` or ``$FSORACLE_CACHE``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    env = os.environ.get("FSORACLE_CACHE")
    root = Path(env) if env else Path.home() / ".cache" / "fsoracle"
    root.mkdir(parents=True, exist_ok=True)
    return root


def cache_dir(kind: str) -> Path:
    d = cache_root() / kind
    d.mkdir(parents=True, exist_ok=True)
    return d
