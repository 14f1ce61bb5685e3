"""analysis.power: before launch, whether a grid will answer its question.

model.py (the stated truth: PowerModel, the cells of a design), simulate.py (the one simulator:
ladders through the analysis for the power table; a toy world's runs), worlds.py (the toy worlds and
their ladders, read from conf/; a plan's runs drawn from a stated world, plan_runs), design.py (the
design search of a GPU-hour budget).
"""

from leviathan.lazy import lazy_exports

_EXPORTS = {
    "CONTROL_ARMS": "model", "Cell": "model", "PowerModel": "model",
    "cells_from_plan": "model", "design_cost": "model",
    "model_from_grid": "model",
    "simulate": "simulate", "toy_world": "simulate", "data_world": "simulate",
    "DATA_WORLDS": "worlds", "WORLDS": "worlds", "WORLD_LADDER": "worlds", "shapes": "worlds",
    "plan_runs": "worlds", "worth": "worlds",
    "Candidate": "design", "DesignError": "design", "designed_grid": "design",
    "search_design": "design",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
