"""Experiment binaries (`python -m experiments.<name>`): flags in, a library call out."""
