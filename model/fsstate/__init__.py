"""The namespace-and-contents model: op logs (:mod:`.oplog`), the model that replays them
(:mod:`.namespace`), the compared fields and each filesystem's rules (:mod:`.tree`), and the
comparison (:mod:`.compare`). Pure: no I/O; the guest-side driver that produces logs and
walks is ``harness/workload/driver.py``."""
