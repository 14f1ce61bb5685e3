"""The laws and how they are fitted: power laws, the joint L(N, D), the one solver, bootstrap,
extrapolation."""
