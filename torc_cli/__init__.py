"""torc_cli: the `torc-trio` command, the standalone lifecycle and the Trio job runner."""

__version__ = "0.1.0"
