"""A child run's name, what the MLflow runs table shows: the method and the grid values that
set it apart (``fl ε=0.05 η=0.01 seed=0``). The trial's id stays in its
``dualtune.trial_id`` tag, so the name is free to be read rather than decoded."""

from __future__ import annotations

from collections.abc import Mapping

from dualtune.core.catalog import GRID_KEYS

MAX_RUN_NAME = 250
"""MLflow refuses longer run names."""

SYMBOLS: Mapping[str, str] = {
    "epsilon": "ε",
    "alpha": "α",
    "dual_lr": "η",
    "rho": "ρ",
    "rho_growth": "ρ_growth",
    "rho_max": "ρ_max",
    "penalty": "c",
    "kp": "kp",
    "nu": "ν",
    "lr": "lr",
    "seed": "seed",
}
"""How each grid key reads in a name: the symbol the papers and ``GRID_KEYS`` use."""


def _value(value: object) -> str:
    # ``bool`` is an ``int``: spelt as itself, not as 1 or 0.
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def grid_key_order(key: str) -> tuple[int, str]:
    """Sort key: grid keys in ``GRID_KEYS``' order, then any other key alphabetically."""
    keys = list(GRID_KEYS)
    return (keys.index(key), "") if key in GRID_KEYS else (len(keys), key)


def child_run_name(method: str, params: Mapping[str, object]) -> str:
    """``<method> <symbol>=<value> …`` over ``params`` (a trial's grid values), the keys in
    ``GRID_KEYS``' order, floats as ``:g``; at most ``MAX_RUN_NAME`` characters (cut with
    ``…``)."""
    parts = [
        method,
        *(f"{SYMBOLS.get(k, k)}={_value(params[k])}" for k in sorted(params, key=grid_key_order)),
    ]
    name = " ".join(parts)
    if len(name) > MAX_RUN_NAME:
        name = name[: MAX_RUN_NAME - 1] + "…"
    return name
