"""torc-trio as a Python library (a thin facade over torc_core, torc_net and torc_cli)."""
