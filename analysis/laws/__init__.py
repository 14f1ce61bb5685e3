"""analysis.laws: the laws and how they are fitted, below every reading.

powerlaw.py (L(x) = A·x^-alpha + b, robust in log space; the shared exponent; effective sizes),
joint.py (L(N, D), Epoch AI's procedure), lm.py (the one batched Levenberg-Marquardt solver),
bootstrap.py (resampling, seed-noise replicates, percentile intervals, Dense refits over
replicates), extrapolation.py (how far a reading lies outside the Dense points), lr_curve.py
(the quadratic LR law of an arm and a size's miss of its optimum), lr_miss.py (the LR model of a
sweep: each group's loss at its optimum, its replicates' draws), lr_edge.py (an optimum beyond
the LRs swept).
"""

from leviathan.lazy import lazy_exports

_EXPORTS = {
    "ALPHA_BOUNDS": "powerlaw", "FitError": "powerlaw", "PowerLaw": "powerlaw",
    "SharedExponent": "powerlaw", "degenerate": "powerlaw", "effective_size": "powerlaw",
    "fit_power_law": "powerlaw", "fit_shared_exponent": "powerlaw", "refit_batch": "powerlaw",
    "refit_free_b": "powerlaw", "shared_lack_of_fit": "powerlaw", "x_eff": "powerlaw",
    "EPOCH_CHINCHILLA": "joint", "HUBER_DELTA": "joint", "JointFit": "joint",
    "bootstrap_joint": "joint", "fit_joint": "joint", "refit_joint": "joint",
    "dense_draws": "bootstrap", "interval_bounds": "bootstrap", "percentile_interval": "bootstrap",
    "resample_counts": "bootstrap", "seed_deviations": "bootstrap",
    "seed_noise_replicates": "bootstrap",
    "EXTRAPOLATION": "extrapolation", "factor": "extrapolation", "outside": "extrapolation",
    "ArmFit": "lr_curve", "Point": "lr_curve", "correct_batch": "lr_curve", "fit_arm": "lr_curve",
    "miss": "lr_curve", "run_factors": "lr_curve",
    "edge_readings": "lr_edge", "mean_over": "lr_edge",
    "LrMiss": "lr_miss", "estimate": "lr_miss", "refuse_pooled": "lr_miss",
    "unswept_miss": "lr_miss",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
