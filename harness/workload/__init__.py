"""The stress family: seeded stress runs, crash runs, replays, fsx runs and the
differential, each written once against the Target seam (:mod:`harness.target`), so the
same code runs on the host's kernel and in a guest on any kernel spec.

Layout:

- ``driver.py`` — the one file that runs where the kernel under test is (host or guest):
  standard library only. ``run`` (fsstress-style), ``fsx``, ``walk``, ``replay``,
  ``serve`` (a line protocol for long-lived sessions). Its ops are the op registry's
  (``model/fsstate/ops.py``), which it reads as a JSON table: the one built into it, or
  ``run --op-table FILE``; ``--plugin FILE`` adds guest handlers (``op_NAME``).
- ``opstable.py`` — the registry as that table: ``make ops-table`` rewrites the built-in
  one, ``write_table(path)`` writes one for ``--op-table`` (a registry with ops added at
  run time: push it beside the driver with the plugin file).
- ``ontarget.py`` — what every experiment does on a target: push the driver, run it, make
  a subvolume root, open a ``driver.py serve`` session (:class:`DriverSession` over the
  target's process, with plugins), mount for a block.
- ``hostmount.py`` — the host side: images (``mkfs.btrfs``, our writer, ``mke2fs``), the
  checkers (``fsoracle btrfs check``, ``btrfs check`` both modes, ``e2fsck -fn``), the
  kernel-fault verdict, and the outside views (our btrfs reader:
  ``model/btrfs/fsview.py``; debugfs: ``ext4view.py``; both return ``view.OutsideView``).
- ``stress.py`` — ``run(cfg, target)``: one run end to end; ``run_stress`` opens the
  target for a batch; ``finish_run`` is everything after the workload.
- ``crash.py`` — ``run_crashes(spec, jobs)``: power cut at op line K, recovery on a fresh
  target, the crash rules.
- ``replay.py`` — ``fsoracle stress replay``: against the model, or ``replay_on`` a target.
- ``fsx.py`` — ``fsoracle stress fsx``.
- ``differential.py`` — the differential as a hypothesis state machine (rules built from
  the registry), search + shrink + save; ``diffrun.py`` runs it on a target.
- ``session.py`` — ``DriverSession`` over any line transport.

Reports are dataclasses with ``to_json()`` (``"schema": 1``) and ``lines()``.
"""
