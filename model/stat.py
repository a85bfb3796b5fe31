"""File type and mode bits of ``st_mode`` / ``i_mode`` (``include/uapi/linux/stat.h``).

The values every filesystem stores in its inodes (btrfs ``btrfs_inode_item.mode``, ext4
``i_mode``) and ``stat()`` returns.
"""

from __future__ import annotations

from typing import Final

S_IFMT: Final = 0o170000  # the file type bits
S_IFSOCK: Final = 0o140000
S_IFLNK: Final = 0o120000
S_IFREG: Final = 0o100000
S_IFBLK: Final = 0o060000
S_IFDIR: Final = 0o040000
S_ISUID: Final = 0o4000
S_ISGID: Final = 0o2000
S_ISVTX: Final = 0o1000
