"""ITS Camera AI: the `its` command line and the one settings object every component reads."""

__version__ = "0.1.0"
