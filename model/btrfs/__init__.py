"""The btrfs on-disk format as an executable specification.

Modules follow the kernel's files: ``constants`` (``include/uapi/linux/btrfs_tree.h``),
``csum`` (``fs/btrfs/disk-io.c`` checksums, ``fs/btrfs/dir-item.c`` name hashes),
``items`` (the item structs and their accessors), ``superblock``, ``treeblock``
(``struct btrfs_header``, leaves and nodes), ``chunks`` (``fs/btrfs/volumes.c`` mapping),
``reader`` (reading an image: ``open_ctree``'s order), ``tree_checker``
(``fs/btrfs/tree-checker.c``) and ``check`` (what ``btrfs check`` verifies).
"""
