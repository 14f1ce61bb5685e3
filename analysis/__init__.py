"""Scaling-law analysis: fits, multipliers, bootstrap intervals, plots, tables, in stages that
import only downward: inputs/ (the runs, the ledger of excluded runs) -> laws/ -> readings/ ->
power/ (before launch) and scaling.py (each family's result, assembled) -> report/ ->
fit_scaling.py and toyworld.py (the commands); config.py holds the fit's settings."""
