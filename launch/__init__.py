"""Launchers: presets, ray job submit, Slurm, sweeps (docs/launching.md)."""
