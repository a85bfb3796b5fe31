"""Kernels for the targets: the ``fsoracle kernel`` commands (list, fetch and build kernels
by spec) and the bridge that hands the series of ``patches/`` to the builder in ``vm/``
(:mod:`harness.kernel.patchsets`)."""
