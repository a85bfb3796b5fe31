"""Numbers from Linux's generic headers that the btrfs, ext4 and hot data models share.

``include/vdso/limits.h`` (``U32_MAX``, ``U64_MAX``), ``include/linux/sizes.h`` (``SZ_*``) and
the page size of the kernels modelled (x86-64: ``PAGE_SHIFT`` 12). Filesystem numbers live
in each filesystem's own constants module; errno values come from :mod:`errno`.
"""

from __future__ import annotations

from typing import Final

U32_MAX: Final = 0xFFFF_FFFF
U64: Final = 0xFFFF_FFFF_FFFF_FFFF  # U64_MAX: the mask of a u64

SZ_4K: Final = 4096
SZ_1G: Final = 1 << 30

PAGE_SIZE: Final = 4096  # x86-64, 4 KiB pages
