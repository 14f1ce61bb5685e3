"""analysis.readings: what the fits say, one reading a module, each returning its own result (none
fills in another's; analysis.scaling assembles them per family).

lr_selection.py (each arm's best LR), noise.py (run-to-run noise per arm and size), paper_view.py
(Dense L(N) and every Leviathan run's N_eff), matchings.py (the three matchings), controls.py (LEV
over its control, and the trend of each number with size), trajectory.py (the multiplier against
tokens seen), tokens.py (the token multiplier), buckets.py (perplexity ratios by token frequency),
b_check.py (b fitted freely beside the b used), data_multipliers.py (L(D) per size, the joint law,
D_eff / D).
"""

from leviathan.lazy import lazy_exports

_EXPORTS = {
    "power_text": "b_check",
    "interval_label": "b_check",
    "LABELS": "noise",
    "FALSE_ALARM": "b_check",
    "keep_batch": "lr_selection", "mean_over": "lr_selection", "pooled_choice": "lr_selection",
    "select_lr": "lr_selection",
    "FIT_ONLY": "noise", "Noise": "noise", "arm_levels": "noise", "batch_replicates": "noise",
    "paper_view": "paper_view", "with_joint": "paper_view", "with_off_ladder": "paper_view",
    "BASES": "matchings", "COLUMN": "matchings", "LABEL": "matchings", "Matching": "matchings",
    "ROW_COLUMNS": "matchings", "match_all": "matchings",
    "RATIO_COLUMNS": "controls", "lev_vs_control": "controls", "pooled_vs_control": "controls",
    "TREND_COLUMNS": "controls", "trend": "controls", "trends": "controls",
    "curve_points": "trajectory", "marks_cooled": "trajectory",
    "multiplier_vs_tokens": "trajectory", "uncooled": "trajectory",
    "token_multipliers": "tokens",
    "SCHEMES": "buckets", "bucket_ratios": "buckets",
    "MIN_SIZES": "b_check", "check_b": "b_check", "warning_text": "b_check",
    "JointReading": "data_multipliers", "data_multipliers": "data_multipliers",
    "joint_law": "data_multipliers", "size_laws": "data_multipliers",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
