"""Before launch: the power model, the one simulator, the design search."""
