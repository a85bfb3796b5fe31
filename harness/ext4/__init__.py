"""The ext4 allocation study: the free-space extent tree allocator (the 2020 RFC, with its
meta-tree, cache levels and memory limit) against mballoc's buddy allocator, and ext4
images on the host.

- ``fsoracle ext4 alloc-sim`` (:mod:`.sim`): the allocators over a generated fragmented
  filesystem up to the seed's 60T scale, with a device and CPU cost model
  (:mod:`.config`, ``presets/ext4_cost_model.yaml``); its table is printed beside the
  seed's published numbers (:mod:`.seed`, read from the series' ``series.yaml``) by
  :mod:`.render`.
- The guest run (:mod:`.experiment`, :mod:`.guest`): images fragmented by a real kernel
  on a target, our reader against ``dumpe2fs``, and single allocations whose exact
  placement the mballoc model of the kernel's version predicts (:mod:`.placement`).
- ``fsoracle ext4 dump`` / ``check`` (:mod:`.images`): free space per group, and the
  kernel's and e2fsck's checks, on an image.

:mod:`.cli` holds the argument parsing.
"""
