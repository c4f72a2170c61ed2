"""The hyperparameters a sweep grid may range over, with their meaning and defaults."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GridKeyInfo:
    name: str
    summary: str
    default: float | int | None
    """Value a trial uses when the grid does not set the key; ``None`` means "from the spec"
    (``lr`` from ``train.optimizer.lr``, ``kp``/``nu`` from ``dual.optimizer``)."""
    integer: bool = False
    minimum: float | None = None
    exclusive_minimum: bool = False


GRID_KEYS: dict[str, GridKeyInfo] = {
    k.name: k
    for k in (
        GridKeyInfo("epsilon", "constraint level ε in g(θ) ≤ ε (or h(θ) = ε)", 0.0),
        GridKeyInfo(
            "alpha", "RFL slack cost α (dual decay 1/α)", 1.0, minimum=0.0, exclusive_minimum=True
        ),
        GridKeyInfo("dual_lr", "dual step size η_λ", 0.01, minimum=0.0, exclusive_minimum=True),
        GridKeyInfo("rho", "ALM/SAL penalty ρ", 1.0, minimum=0.0),
        GridKeyInfo(
            "rho_growth",
            "ALM/SAL: factor a constraint's ρ grows by when its violation does not "
            "decrease (ALM's default 1: ρ fixed)",
            1.1,
            minimum=1.0,
        ),
        GridKeyInfo("rho_max", "ALM/SAL: cap on ρ", 10.0, minimum=0.0),
        GridKeyInfo("penalty", "fixed penalty coefficient c", 1.0, minimum=0.0),
        GridKeyInfo("kp", "νPI proportional gain K_P", None),
        GridKeyInfo("nu", "νPI EMA coefficient ν", None),
        GridKeyInfo("lr", "primal learning rate", None, minimum=0.0, exclusive_minimum=True),
        GridKeyInfo(
            "seed", "random seed (model init and batch order)", 0, integer=True, minimum=0
        ),
    )
}

GRID_KEY_DEFAULTS: dict[str, float | int | None] = {k: v.default for k, v in GRID_KEYS.items()}
