"""analysis.laws: the laws and how they are fitted, below every reading.

powerlaw.py (L(x) = A·x^-alpha + b, robust in log space; the shared exponent; effective sizes),
joint.py (L(N, D), Epoch AI's procedure), lm.py (the one batched Levenberg-Marquardt solver),
bootstrap.py (resampling, seed-noise replicates, percentile intervals, Dense refits over
replicates), extrapolation.py (how far a reading lies outside the Dense points).
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
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
