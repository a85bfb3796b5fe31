"""Experiments that drive vm/ and model/ and compare them, and the fsoracle CLI."""
