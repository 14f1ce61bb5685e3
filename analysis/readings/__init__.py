"""What the fits say, one reading a module: LR choice, noise, the paper's view, matchings, controls,
trajectory, tokens, buckets, b check, data."""
