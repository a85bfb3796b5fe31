"""Stress workloads, differential testing and their checks.

Layout:

- ``driver.py`` — the one file that runs where the kernel under test is (host or guest):
  standard library only. ``run`` (fsstress-style), ``fsx``, ``walk``, ``replay``,
  ``serve`` (a line protocol for long-lived sessions).
- ``hostmount.py`` — images (``mkfs.btrfs``, our writer, ``mke2fs``), loop mounts, the
  checkers (``fsoracle btrfs check``, ``btrfs check`` both modes, ``e2fsck -fn``) and the
  outside views (our btrfs reader: ``model/btrfs/fsview.py``; debugfs: ``ext4view.py``).
- ``stress.py`` — one run end to end; ``finish_run`` is everything after the workload.
- ``session.py`` — ``DriverSession`` over a line transport (a pipe; SSH in a guest).
- ``differential.py`` — hypothesis strategies, the example runner, search + shrink + save.
- ``replay.py``, ``fsx.py`` — ``fsoracle stress replay`` and ``fsoracle stress fsx``.

What the VM half calls (everything but booting and moving files is here):

1. Host: ``make_image(path, FsSpec(fs, maker, layout, size))``.
2. Push ``stress.DRIVER`` (this package's ``driver.py``) into the guest; mount the image's
   device at, say, ``/mnt/test``.
3. Guest: ``python3 driver.py run -d /mnt/test/run -n OPS -p PROCS -s SEED --fs FS
   --log /tmp/ops.log --walk /tmp/walk.jsonl`` (``--log -`` streams each line when its op
   returns, for crash runs). Exit status 0 unless a process died.
4. Pull ``ops.log`` and ``walk.jsonl``; unmount; stop the guest.
5. Host: ``rep = StressReport(kernel_label, spec.label(), seed, ops, procs)`` then
   ``finish_run(rep, fs, image, log_path, walk_path)`` — model vs kernel, checkers, outside
   view; ``rep.ok`` and ``rep.lines()``.

Differential in a guest: ``DriverSession(PipeTransport([... ssh ..., "python3",
"/root/driver.py", "serve", "--root", "/mnt/test"]))``, then
``search(DifferentialRunner(session, fs, faults), examples=N, seed=S, where=label)``.
"""
