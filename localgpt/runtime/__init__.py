"""Stages 2-4, running a plan: model selection, the DAG executor and its expert pool, produced
files and run folders, the responder."""
