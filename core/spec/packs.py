"""Which trials of a sweep can train together as one pack (ARCHITECTURE §3.1 ``pack``).

Trials pack together when they share everything — task, model, data, constraint, method,
batching, optimizer settings, seed — and differ only in scalar hyperparameters the engine
can hold per member (ε, α, dual_lr, ρ, rho_growth, rho_max, penalty, kp, nu, lr). Sharing the
seed means they share the initial model and the batch order, so a packed member trains on
exactly the batches its unpacked trial would. A constraint kind whose builder is not
vmap-safe (``ConstraintKindInfo.packable`` false) never packs. Pure: the service may use it
without torch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from dualtune.core.catalog import CONSTRAINT_KINDS
from dualtune.core.spec.trial import TrialConfig

PER_MEMBER_KEYS = frozenset(
    {"epsilon", "alpha", "dual_lr", "rho", "rho_growth", "rho_max", "penalty", "kp", "nu", "lr"}
)
"""Grid keys whose values may differ between the members of one pack."""


def kind_pack_blocker(trial: TrialConfig) -> str | None:
    """Why ``trial``'s constraint kind cannot be packed (its builder is not vmap-safe),
    else ``None``."""
    info = CONSTRAINT_KINDS.get(trial.constraint.kind)
    if info is None or info.packable:
        return None
    return (
        f"constraint kind {info.name!r} cannot be packed: its builder is not vmap-safe "
        "(packable=False); its trials train one by one"
    )


def pack_key(trial: TrialConfig) -> str:
    """Equal for two trials exactly when they may share a pack: never for a kind that
    cannot be packed. A kind that folds ε into its constraint (``epsilon_in_kind``, e.g.
    g = ℓ̄_{l+1} − (1 − ε)ℓ̄_l) serves a whole pack, so its members must share ε."""
    shared = trial.model_dump(mode="json", exclude={"trial_id", "index", "params"})
    info = CONSTRAINT_KINDS.get(trial.constraint.kind)
    if info is not None and not info.packable:
        shared["trial_id"] = trial.trial_id
    per_member = PER_MEMBER_KEYS
    if info is not None and info.epsilon_in_kind:
        per_member = per_member - {"epsilon"}
    shared["params"] = {k: v for k, v in trial.params.items() if k not in per_member}
    return json.dumps(shared, sort_keys=True)


def pack_groups(trials: Sequence[TrialConfig]) -> list[list[TrialConfig]]:
    """The trials grouped by ``pack_key``, groups and members in expansion order."""
    groups: dict[str, list[TrialConfig]] = {}
    for trial in trials:
        groups.setdefault(pack_key(trial), []).append(trial)
    return list(groups.values())


def split_group(group: Sequence[TrialConfig], size: int) -> list[list[TrialConfig]]:
    """A group cut into packs of at most ``size`` members, as even as possible."""
    if size < 1:
        raise ValueError(f"pack size must be ≥ 1, got {size}")
    count = -(-len(group) // size)
    base, extra = divmod(len(group), count)
    packs, start = [], 0
    for i in range(count):
        end = start + base + (1 if i < extra else 0)
        packs.append(list(group[start:end]))
        start = end
    return packs
