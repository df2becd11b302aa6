"""Benchmarks (``python -m benchmarks.X``); helpers for their JSON in ``common``."""
