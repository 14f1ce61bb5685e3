"""Leviathan scaling-law experiment platform: models, data, training, sweeps."""

__version__ = "0.1.0"
