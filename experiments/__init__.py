"""Thin command-line entry points (``python -m experiments.X``) and flagfiles."""
