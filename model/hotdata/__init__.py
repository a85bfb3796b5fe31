"""Hot data tracking and relocation: the 2010 btrfs RFC's design as specified by the
2012-2013 "VFS hot tracking" series and its btrfs relocation port (constants and their
provenance in :mod:`model.hotdata.constants`)."""
