"""What a bootable kernel is: the :class:`Kernel` record every kernel source returns.

A leaf module (it imports nothing from ``vm``), so the kernel sources (:mod:`vm.debian`,
:mod:`vm.kbuild`) and the spec registry that calls them (:mod:`vm.kernels`) can all use it
without importing each other. Import it from :mod:`vm.kernels` or ``vm``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Kernel:
    """A bootable kernel: ``vmlinuz`` with release ``release`` (what ``uname -r`` prints).

    ``modules_dir`` is its ``lib/modules/<release>`` directory (None for a kernel with
    everything built in); ``config`` its ``.config`` when known.
    """

    spec: str
    release: str
    vmlinuz: Path
    modules_dir: Path | None = None
    config: Path | None = None

    def config_value(self, option: str) -> str | None:
        """The value of ``CONFIG_<option>`` (``y``, ``m``, a string) or None if unset/unknown."""
        if self.config is None:
            return None
        prefix = f"CONFIG_{option}="
        for line in self.config.read_text(errors="replace").splitlines():
            if line.startswith(prefix):
                return line[len(prefix) :].strip('"')
        return None
