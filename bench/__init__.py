"""localgpt's benchmarks, each run as ``python -m bench.<name>`` from the repository root."""
