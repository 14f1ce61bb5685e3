"""analysis.report: the fit's files and every markdown renderer, on top of the readings.

files.py (fit.json, the tables, where a fit's artifacts go), summary.py (summary.md and
headline.md), headline.py (the headline table), tables.py (the supporting tables of each
reading), plots.py, power.py (the dry run's power table, the design search's best designs),
downstream.py (the downstream table), format.py (the one home of each number formatter).
"""

from leviathan.lazy import lazy_exports

_EXPORTS = {
    "HEADLINE": "files", "chinchilla_line": "files", "fit_folder": "files",
    "write_outputs": "files",
    "headline_note": "summary", "summary_md": "summary",
    "plot_data_scaling": "plots", "plot_multiplier_vs_tokens": "plots",
    "plot_rare_tokens": "plots", "plot_scaling": "plots",
    "design_md": "power", "power_md": "power", "failed_checks": "power",
    "downstream_md": "downstream", "downstream_section": "downstream",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
