"""Versions outside the repository: load, export, merge, GGUF, model cards."""
