"""The `localgpt` command line (kept light: heavy modules load inside the commands)."""

from localgpt.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
