"""Every item of every real image re-encodes to its exact on-disk bytes."""

from __future__ import annotations

import pytest

from model.blocksource import FileSource
from model.btrfs.encode import encode_item
from model.btrfs.items import FileExtentItem
from model.btrfs.reader import BtrfsImage
from tests.btrfs.images import VARIANTS


@pytest.mark.parametrize("variant", VARIANTS)
def test_encode_roundtrip(btrfs_image, variant: str) -> None:
    img = BtrfsImage.open(FileSource(btrfs_image(variant)))
    n = 0
    for root in img.trees():
        for blk, slot, item in img.iter_items(root):
            raw = blk.item_data(slot)
            inline = b""
            if isinstance(item, FileExtentItem) and item.type == 0:
                inline = raw[FileExtentItem.INLINE_DATA_START :]
            assert encode_item(item, inline) == raw, (root.name, blk.items[slot].key)
            n += 1
    assert n > 0
