"""Every number of the hot data tracking and relocation model, with where it comes from.

The seed is the 2010 btrfs RFC (``btrfs-hot-data-relocation-rfc-2010.txt``: Ben Chociej, Matt
Lupfer, Conor Scott). Only its cover letters survive in public archives: its
``hotdata_hash.h`` "#defined values" that tune the temperature are **unknown**, and so are its
timer periods and relocation limits. The same design was carried into the generic "VFS hot
tracking" series (Zhi Yong Wu, IBM, 2012-2013) and a btrfs relocation port (2013, Zhi Yong
Wu with Ben Chociej); their constants are used here and each one says which version it is
from:

``[2013-VFS]``
    ``fs/hot_tracking.h`` and ``include/linux/hot_tracking.h`` of the 2013 series as kept in
    the author's tree (github.com/wuzhy/kernel, commit 291cabc6), the version the btrfs
    relocation port builds on (``hot_comm_item``, ``storage_type``, ``HOT_IN_LIST``).
``[2012-VFS]``
    the RFC v2 series of September 2012 (``fs/hot_tracking.h`` with ``TIME_TO_KICK`` and
    ``HEAT_UPDATE_DELAY``, and ``hot_is_obsolete`` in ``fs/hot_tracking.c``).
``[2013-BTRFS]``
    ``fs/btrfs/hot_relocate.h`` and ``hot_relocate.c`` (github.com/wuzhy/kernel, commit
    18f33c0d).
``[seed]``
    the 2010 cover letter.
``[linux]``
    mainline facts (page size, ``NSEC_PER_SEC``).
"""

from __future__ import annotations

NSEC_PER_SEC = 1_000_000_000  # [linux]
PAGE_CACHE_SHIFT = 12  # [linux] 4 KiB pages (x86-64), as hot_relocate.c moves whole pages

# --- tracking granularity and moving average ------------------------------------------
RANGE_BITS = 20  # [2013-VFS] (also [2012-VFS]): sub-file ranges of 1 MiB; 2010 value unknown
RANGE_SIZE = 1 << RANGE_BITS
FREQ_POWER = 4  # [2013-VFS] (also [2012-VFS]): avg = (avg * 15 + delta / 16) / 16

# --- temperature: the six heat criteria ------------------------------------------------
# [2013-VFS]; the 2010 equivalents lived in hotdata_hash.h and are unknown.
NRR_MULTIPLIER_POWER = 20  # NRR heat unit = 2^20 per read since mount
NRR_COEFF_POWER = 0
NRW_MULTIPLIER_POWER = 20  # NRW heat unit = 2^20 per write since mount
NRW_COEFF_POWER = 0
LTR_DIVIDER_POWER = 30  # LTR heat unit = 2^30 ns (~1.07 s) since the last read
LTR_COEFF_POWER = 1  # [2013-VFS]: 1 (so LTR is shifted right by 3 - 1 = 2)
LTW_DIVIDER_POWER = 30  # LTW heat unit = 2^30 ns since the last write
LTW_COEFF_POWER = 1
AVR_DIVIDER_POWER = 40  # AVR cold unit = 2^40 ns of average read delta
AVR_COEFF_POWER = 0
AVW_DIVIDER_POWER = 40  # AVW cold unit = 2^40 ns of average write delta
AVW_COEFF_POWER = 0

# --- heat map ------------------------------------------------------------------------
MAP_BITS = 8  # [2013-VFS] include/linux/hot_tracking.h (HEAT_MAP_BITS 8 in [2012-VFS])
MAP_SIZE = 1 << MAP_BITS  # 256 buckets; bucket = temp >> (32 - MAP_BITS)
TYPE_INODE = 0  # [2013-VFS] enum: hot_freq_data.flags and the first index of hot_map
TYPE_RANGE = 1
MAX_TYPES = 2

# --- timers ----------------------------------------------------------------------------
HOT_UPDATE_INTERVAL = 150  # [2013-VFS] s between hot_update_worker runs (re-bucketing)
# (the same period in [2012-VFS] was HEAT_UPDATE_DELAY, 300 s)
# [2013-VFS] fs/hot_tracking.h also defines HOT_AGE_INTERVAL 300, unused by that version's .c
TIME_TO_KICK = 300  # [2012-VFS] s: hot_is_obsolete when both last read and write are older

# --- btrfs relocation ([2013-BTRFS]; the 2010 hotdata_relocate.h values are unknown) ------
HOT_RELOC_INTERVAL = 120  # s between hot_do_relocate runs of the kthread
HOT_RELOC_THRESHOLD = 150  # initial heat threshold (a bucket number)
HOT_RELOC_MAX_ITEMS = 250  # ranges queued per pass (see hot_queue_extent for the overrun)
HEAT_MAX_VALUE = MAP_SIZE - 1  # 255
HIGH_WATER_LEVEL = 75  # % SSD used: raise the threshold, demote cold ranges first
LOW_WATER_LEVEL = 50  # % SSD used: lower the threshold
THRESH_UP_SPEED = 10
THRESH_DOWN_SPEED = 1
THRESH_MAX_VALUE = 100  # ratio above this (101 = no SSD) parks the threshold at 256
RELOC_THRESH_UPDATE_PERIOD = 15  # hot_do_relocate: hot_update_threshold(.., !(run % 15))
RELOC_RECHECK_MOVES = 30  # hot_do_relocate: re-check SSD usage every 30 hot moves
TYPE_ROT = 0  # relocation target types (hot_relocq[MAX_RELOC_TYPES])
TYPE_NONROT = 1
STORAGE_UNKNOWN = -1  # [2013-VFS] hot_range_item_init: storage_type = -1

# --- the seed's claim -------------------------------------------------------------------
# [seed] "about 5x throughput" in random-read tests "by adding an SSD of about 20% of the
# total capacity"
