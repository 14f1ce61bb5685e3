"""Scaling-law analysis: fits, multipliers, bootstrap intervals, plots, tables."""
