"""Mount timing: how long the kernel's mount spends in ``btrfs_read_block_groups`` and which
tree blocks it reads there, for each place the block group items can live (the extent tree,
the block group tree, the skinny block group tree), set beside the model's prediction and
the SKINNY_BG_TREE RFC's seed numbers (1080 -> 14 -> 8 tree blocks at 1 TiB).

- :mod:`~harness.mount.config`: the bench's configuration and its YAML presets;
- :mod:`~harness.mount.experiment`: images written by the model, mounted cold on a target
  with ftrace on, every sample judged against the prediction (:class:`MountResult`);
- :mod:`~harness.mount.guest`: the tracing set-up and the per-mount script run on the target;
- :mod:`~harness.mount.trace`: the parser of the function_graph trace of one mount;
- :mod:`~harness.mount.verdict`: the acceptance verdicts on a result;
- :mod:`~harness.mount.render`: ``report.md`` and ``mount.png``;
- :mod:`~harness.mount.seedtable`: the seed's table of blocks beside the model's, in memory
  (``fsoracle btrfs seed-table``);
- :mod:`~harness.mount.cli`: ``fsoracle bench mount``.
"""
