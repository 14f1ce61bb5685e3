"""The named sizes: v1 (named by Dense `untied` total parameters) and v2 (by Dense `tied` totals).

The sizes live in conf/model/<ladder>/<size>.yaml only (shape and the ladder's head/depth rule;
everything else is ModelConfig's default: o200k_base padded to 200,376, the paper's LEV).
Adding a size is adding a file (leviathan.config.ladder_config composes one); tests check
each Dense size is within 5% of its name and every v1 isoparametric pair within 2%.
"""

from __future__ import annotations


def ladder_sizes(ladder: str) -> list[str]:
    """The size names of a ladder, from conf/model/<ladder>/*.yaml, smallest first."""
    from leviathan.typed_config import conf_dir

    names = [p.stem for p in (conf_dir() / "model" / ladder).glob("*.yaml")]
    return sorted(names, key=size_in_params)


def size_in_params(name: str) -> float:
    """'109M' -> 109e6, '1.2B' -> 1.2e9."""
    scale = {"K": 1e3, "M": 1e6, "B": 1e9}[name[-1].upper()]
    return float(name[:-1]) * scale
