"""Hot data tracking and relocation to a fast disk (the 2010 btrfs RFC and its 2013 series).

The model (:mod:`model.hotdata`) keeps per-inode and per-1-MiB-range access records and
temperatures; this study feeds it traces and checks its claim, "about 5x the random-read
throughput with an SSD of about 20 % of the capacity":

- :mod:`~harness.hot.config`: the presets (fixed before any measurement) and their variants;
- :mod:`~harness.hot.sim`: the tiered-storage simulator (``fsoracle hot sim``, ``hot synth``);
- :mod:`~harness.hot.temp`: records and temperatures of a trace (``fsoracle hot temp``);
- :mod:`~harness.hot.trace`: access traces recorded with kprobe events in a guest kernel
  (``fsoracle hot trace``);
- :mod:`~harness.hot.experiment`: the bench on a real kernel (``fsoracle hot bench``): reads
  before and after moving the files the model ranks hottest from a slow disk to a fast one;
- :mod:`~harness.hot.guest`: the standard-library driver run on the target;
- :mod:`~harness.hot.render`: Markdown and PNG; :mod:`~harness.hot.cli`: the commands.
"""
