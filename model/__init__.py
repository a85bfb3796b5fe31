"""fsoracle's executable specification: pure functions and dataclasses over bytes.

Nothing under ``model`` starts a process, opens a socket or touches a file except through
the :mod:`model.blocksource` seam.
"""
