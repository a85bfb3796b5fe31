"""The extent-tree-v2 post's COW claim on a real kernel (issue 11): blocks the kernel COWs
(``btrfs_cow_block`` tracepoint) on the paths to two adjacent block group items, against
the model's COW search over the same tree (dumped by the guest's btrfs-progs)."""

from __future__ import annotations

import pytest

from harness.etv2.cowmeasure import measure


@pytest.mark.vm
@pytest.mark.timeout(1200)
def test_cow_of_two_adjacent_block_groups(vm_tools: None, kernel_spec: str) -> None:
    got = {g.layout: g for g in measure(kernel_spec, straddle=True)}
    assert set(got) == {"extent-tree", "extent-tree-straddling", "bg-tree"}
    for g in got.values():
        assert g.all_path_blocks_cowed, g.layout  # the update searches with cow=1
        assert g.measured_cowed == g.model_cowed, g.layout
    et, st, bgt = got["extent-tree"], got["extent-tree-straddling"], got["bg-tree"]
    assert et.tree_height == st.tree_height == 3 and bgt.tree_height == 2
    # arithmetic of the paths: shared root and parent (4), different parents (5, the
    # seed's case), one leaf of a two-level block group tree (2, the seed's other case)
    assert (et.measured_cowed, st.measured_cowed, bgt.measured_cowed) == (4, 5, 2)


@pytest.mark.vm
@pytest.mark.timeout(600)
def test_block_group_items_per_leaf_on_a_kernel(vm_tools: None, kernel_spec: str) -> None:
    """The seed's "~680 block group items per 16 KiB leaf", read off the leaves the kernel
    wrote for ~400 block groups: struct btrfs_item (25 bytes) + struct
    btrfs_block_group_item (24 bytes) per item, so (16384 - 101) // 49 = 332."""
    from harness.etv2.leafmeasure import measure_leaf_capacity

    got = measure_leaf_capacity(kernel_spec, block_groups=400)
    assert got.block_groups >= 400  # fallocate's + the ones mkfs made
    assert len(got.leaves) >= 2  # the tree grew past one leaf: splits happened
    assert got.bytes_per_item == 25 + 24
    assert got.capacity == (16384 - 101) // 49 == 332
