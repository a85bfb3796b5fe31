"""The compression study: btrfs's compressed writeback (compression delayed to bio
submission, and the stock kernels' async path) against the model's prediction.

A table of cases (:mod:`.config`: mount options, a sequence of writes and syncs, the data
written) runs on a target, each case on its own small btrfs image: :mod:`.experiment` on
any target (one VM boot per kernel for the whole table; the program :mod:`.guest` does the
writes and traces the file's ordered extents), :mod:`.host` through the host kernel on a
loop mount. :mod:`.readback` reads what each image holds for the file (our reader and
``dump-tree``), :mod:`.compare` sets it beside ``model.btrfs.compress_predict``'s
prediction, with zstd frames made by each kernel's own zstd version
(:mod:`.kernel_zstd`), and :mod:`.render` writes the Markdown. :mod:`.cli` is
``fsoracle compress predict``.
"""
