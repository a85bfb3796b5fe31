"""The extent-tree-v2 study: the design post's three claims, each beside its seed value.

* leaf capacity: block group items one leaf holds ("A 16KiB leaf will contain ~680 block
  group items"), counted by the model and, optionally, read off the leaves a kernel wrote
  (:mod:`harness.etv2.leafmeasure`);
* COW cost: tree blocks COWed when two adjacent block groups change ("5 blocks ... in a
  height-3 extent tree, 2 with a block group tree"), from the model's layout of the
  filesystem and, optionally, measured with the ``btrfs_cow_block`` tracepoint
  (:mod:`harness.etv2.cowmeasure`);
* contention: lock waits on the global roots for N writers and M global roots (a
  simulation, :mod:`model.btrfs.contention`).

``config`` holds what each part is asked, ``experiment`` answers it (a result with a JSON
form), ``guest`` the commands run on the target, ``render`` the Markdown, ``cli`` the
``fsoracle etv2`` options.
"""
