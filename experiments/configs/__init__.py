"""Experiment configs as code: one module per experiment, each with named presets and command-line overrides."""
