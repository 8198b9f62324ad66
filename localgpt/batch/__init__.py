"""Batch runs: JSONL or a folder in, one structured result per line out (see localgpt.batch.runner)."""
