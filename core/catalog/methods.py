"""Methods: what each solves, which grid keys it reads and which constraint kinds it fits.

Which kinds a method fits is read from the constraint-kind registry, so a plugin kind gets
every method that fits it: a kind names its methods (``ConstraintKindInfo.methods``), else
each method that fits constraints of its shape (``MethodInfo.per_sample_kinds``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from dualtune.core.catalog.registry import CONSTRAINT_KINDS


@dataclass(frozen=True)
class MethodInfo:
    name: str
    summary: str
    grid_keys: tuple[str, ...]
    """Every key the method reads; a grid key outside this set does not multiply its trials."""
    uses_multipliers: bool = True
    defaults: dict[str, float] = field(default_factory=dict)
    """Method-specific defaults that override the global grid-key defaults."""
    per_sample_kinds: Literal["any", "only", "never"] = "any"
    """Which kinds the method fits when a kind does not name its methods: any kind, only
    per-sample kinds (``ConstraintKindInfo.per_sample``) or never those."""

    @property
    def kinds(self) -> tuple[str, ...]:
        """The registered constraint kinds this method applies to (``kinds_for``)."""
        return kinds_for(self.name)

    def fits(self, *, per_sample: bool) -> bool:
        """Whether the method fits a kind that does not name its methods."""
        if self.per_sample_kinds == "only":
            return per_sample
        if self.per_sample_kinds == "never":
            return not per_sample
        return True

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
            uses_multipliers=False,
        ),
        MethodInfo(
            "penalty",
            "objective + c·Σ violations₊ with a fixed coefficient c",
            ("epsilon", "penalty", "lr", "seed"),
            uses_multipliers=False,
        ),
        MethodInfo(
            "cserm",
            "clamped squared ERM: mean([ℓ_i − ε]₊²)",
            ("epsilon", "lr", "seed"),
            uses_multipliers=False,
            per_sample_kinds="only",
        ),
        MethodInfo(
            "fl",
            "Lagrangian primal-dual (GDA): λ ← Π[λ + η_λ(g − ε)], "
            "primal step on objective + Σλ(g − ε)",
            ("epsilon", "dual_lr", "kp", "nu", "lr", "seed"),
        ),
        MethodInfo(
            "rfl",
            "resilient FL: slack cost α‖u‖²/2, λ ← Π[λ + η_λ(g − ε − λ/α)]",
            ("epsilon", "alpha", "dual_lr", "kp", "nu", "lr", "seed"),
        ),
        MethodInfo(
            "alm",
            "augmented Lagrangian (method of multipliers): λ ← Π[λ + η_λ·ρ·(g − ε)]; with "
            "rho_growth > 1 each constraint's ρ grows by it (≤ rho_max) when its violation "
            "is above its running average",
            ("epsilon", "rho", "rho_growth", "rho_max", "dual_lr", "lr", "seed"),
            # ρ stays fixed unless a growth factor is asked for (ALM-GDA).
            defaults={"dual_lr": 1.0, "rho_growth": 1.0},
        ),
        MethodInfo(
            "sal",
            "stochastic augmented Lagrangian, per constraint: when its violation is above "
            "its running average (EMA 0.9) ρ grows by rho_growth (≤ rho_max), "
            "else λ ← Π[λ + ρ(g − ε)]",
            ("epsilon", "rho", "rho_growth", "rho_max", "lr", "seed"),
            # The acceptance test compares violations between steps; per-sample constraints
            # observe a different batch each step, so the comparison would be noise.
            per_sample_kinds="never",
        ),
    )
}


def method_applies(method: str, kind: str) -> bool:
    """Whether ``method`` applies to constraint kind ``kind`` (false for unknown names)."""
    info, kind_info = METHODS.get(method), CONSTRAINT_KINDS.get(kind)
    if info is None or kind_info is None:
        return False
    if kind_info.methods is not None:
        return method in kind_info.methods
    return info.fits(per_sample=kind_info.per_sample)


def kinds_for(method: str) -> tuple[str, ...]:
    """The registered constraint kinds ``method`` applies to, in registry order."""
    if method not in METHODS:
        raise KeyError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
    return tuple(kind for kind in CONSTRAINT_KINDS if method_applies(method, kind))


def methods_for(kind: str) -> tuple[str, ...]:
    """The methods that apply to constraint kind ``kind``, in catalog order."""
    return tuple(method for method in METHODS if method_applies(method, kind))
