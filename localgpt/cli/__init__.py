"""The `localgpt` command line (kept light: heavy modules load inside the commands)."""

from localgpt.cli.commands import main

__all__ = ["main"]
