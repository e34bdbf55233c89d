"""The command lines of ``python -m bench``, one module per command (``add_parser``, ``run``)."""

COMMANDS = ("sweep", "compare", "ray", "correlate", "steer", "auroc")
