"""``fsoracle report``: one page per patch series for reviewers.

The claims, experiments, invariants and known gaps of a series are data in
``patches/SERIES/series.yaml`` (:mod:`harness.series` reads and checks them). The
report runs the experiments it needs (:mod:`harness.report.runner`) or reuses results
given with ``--from``, pulls the measured values out of their JSON
(:mod:`harness.report.extract`), compares them with the seed's numbers
(:mod:`harness.report.verdict`) and writes Markdown and a self-contained HTML page
(:mod:`harness.report.render`)."""
