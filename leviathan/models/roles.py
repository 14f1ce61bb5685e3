"""One weight-decay rule for every arm, by parameter role (issue 11, SCIENCE.md section 1).

Every parameter of a LanguageModel has exactly one role (LanguageModel.param_roles):

    role          what                                                       decayed
    head          the output head: untied V x D, or the Dense tied table     yes
    weight        matrices applied densely to every input: attention, MLP,   yes
                  LEV's W_s / W_o / W_r / W_seed / W_out, factorized P
    table         rows selected by an index: Dense input table (untied),     no
                  factorized T, LEV codebooks
    coefficients  spline coefficients selected by (coordinate, spline cell): no
                  LEV Theta (blocks), S or Delta (khronos)
    gain, bias    RMSNorm / LayerNorm gains, biases                          no

Why: decoupled weight decay shrinks every parameter every step, but a row reached only through an
index (a token id, a coordinate digit, a spline cell) receives gradient only when that index
occurs; decaying it pulls rare rows to zero whatever the data say, a prior that depends on
frequency and would differ between arms with different tables. A matrix applied to every input
(every weight, and the head, which scores every id at every position) gets gradient every step,
so decay is the usual L2-style regulariser there. The tied Dense table is scored as the head at
every position, so it is the head and is decayed, exactly like an untied head; the untied Dense
input table, factorized T and the LEV codebooks are tables and are not. Gains and biases are
never decayed (standard practice: decay would pull a gain to 0, not to its neutral 1).
With one_plus_delta the khronos coefficients are Delta around 1, but they are coefficients
either way: not decayed, so both parameterisations train alike.
"""

from __future__ import annotations

ROLES = ("head", "weight", "table", "coefficients", "gain", "bias")
DECAYED = frozenset({"head", "weight"})


def decayed(role: str) -> bool:
    if role not in ROLES:
        raise ValueError(f"unknown parameter role {role!r}; allowed: {', '.join(ROLES)}")
    return role in DECAYED


def optim_groups(named_params, roles: dict[str, str], weight_decay: float) -> list[dict]:
    """AdamW groups [decay, no_decay] from (name, parameter) pairs and name -> role."""
    decay, no_decay = [], []
    for name, p in named_params:
        if p.requires_grad:
            (decay if decayed(roles[name]) else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
            {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]
