"""Methods: what each solves, which grid keys it reads and which constraint kinds it fits."""

from __future__ import annotations

from dataclasses import dataclass, field

ALL_KINDS = ("sample_loss", "group_rate", "class_loss", "weight_norm", "orthogonality")


@dataclass(frozen=True)
class MethodInfo:
    name: str
    summary: str
    grid_keys: tuple[str, ...]
    """Every key the method reads; a grid key outside this set does not multiply its trials."""
    kinds: tuple[str, ...] = ALL_KINDS
    uses_multipliers: bool = True
    defaults: dict[str, float] = field(default_factory=dict)
    """Method-specific defaults that override the global grid-key defaults."""

    def keys_for(self, *, uses_epsilon: bool) -> tuple[str, ...]:
        """The grid keys that matter for a trial of this method on a given constraint.

        An equality constraint whose target is fixed (``group_rate`` with ``equality: true``
        constrains rate gaps to 0) does not read ε, so ε does not multiply its trials.
        """
        if uses_epsilon:
            return self.grid_keys
        return tuple(k for k in self.grid_keys if k != "epsilon")


METHODS: dict[str, MethodInfo] = {
    m.name: m
    for m in (
        MethodInfo(
            "erm",
            "mean training loss; constraints ignored (baseline, still measured)",
            ("lr", "seed"),
            kinds=(*ALL_KINDS, "layer_descent"),
            uses_multipliers=False,
        ),
        MethodInfo(
            "penalty",
            "objective + c·Σ violations₊ with a fixed coefficient c",
            ("epsilon", "penalty", "lr", "seed"),
            kinds=(*ALL_KINDS, "pinn_residual", "layer_descent"),
            uses_multipliers=False,
        ),
        MethodInfo(
            "cserm",
            "clamped squared ERM: mean([ℓ_i − ε]₊²)",
            ("epsilon", "lr", "seed"),
            kinds=("sample_loss",),
            uses_multipliers=False,
        ),
        MethodInfo(
            "fl",
            "Lagrangian primal-dual (GDA): λ ← Π[λ + η_λ(g − ε)], "
            "primal step on objective + Σλ(g − ε)",
            ("epsilon", "dual_lr", "kp", "nu", "lr", "seed"),
            kinds=(*ALL_KINDS, "pinn_residual", "layer_descent"),
        ),
        MethodInfo(
            "rfl",
            "resilient FL: slack cost α‖u‖²/2, λ ← Π[λ + η_λ(g − ε − λ/α)]",
            ("epsilon", "alpha", "dual_lr", "kp", "nu", "lr", "seed"),
            kinds=(*ALL_KINDS, "pinn_residual", "layer_descent"),
        ),
        MethodInfo(
            "alm",
            "augmented Lagrangian (method of multipliers): λ ← Π[λ + η_λ·ρ·(g − ε)]",
            ("epsilon", "rho", "dual_lr", "lr", "seed"),
            kinds=(*ALL_KINDS, "pinn_residual", "layer_descent"),
            defaults={"dual_lr": 1.0},
        ),
        MethodInfo(
            "sal",
            "stochastic augmented Lagrangian: ρ grows by rho_growth (≤ rho_max) when the "
            "violation does not decrease, else λ ← Π[λ + ρ(g − ε)]",
            ("epsilon", "rho", "rho_growth", "rho_max", "lr", "seed"),
            # The acceptance test compares violations between steps; per-sample constraints
            # observe a different batch each step, so the comparison would be noise.
            kinds=(
                "group_rate",
                "class_loss",
                "weight_norm",
                "orthogonality",
                "pinn_residual",
                "layer_descent",
            ),
        ),
    )
}
