"""Which trials may share a pack: the same everything but the per-member scalar keys."""

from typing import Any

import pytest

from dualtune.core.spec import SweepSpec, TrialConfig
from dualtune.core.spec.packs import pack_groups, pack_key, split_group


def trials(**overrides: Any) -> list[TrialConfig]:
    doc: dict[str, Any] = {
        "name": "packs",
        "task": {"name": "digits", "params": {}},
        "constraint": {"kind": "sample_loss"},
        "methods": ["erm", "fl", "rfl"],
        "grid": {"epsilon": [0.1, 0.2], "alpha": [1.0, 2.0], "dual_lr": [0.1], "lr": [0.1, 0.01]},
    }
    doc.update(overrides)
    return SweepSpec.model_validate(doc).trials()


def test_trials_of_one_method_that_differ_in_scalar_settings_share_a_group() -> None:
    groups = pack_groups(trials())
    assert [(g[0].method, len(g)) for g in groups] == [("erm", 2), ("fl", 4), ("rfl", 8)]


def test_seeds_and_methods_split_groups() -> None:
    groups = pack_groups(trials(grid={"epsilon": [0.1, 0.2], "seed": [0, 1]}))
    for group in groups:
        assert len({(t.method, t.value("seed")) for t in group}) == 1
    assert len(groups) == 6  # erm, fl, rfl × two seeds


def test_a_kind_that_folds_epsilon_into_its_constraint_keeps_epsilon_shared() -> None:
    found = trials(
        task={"name": "digits", "params": {"model": "resmlp", "blocks": 3}},
        constraint={"kind": "layer_descent"},
        methods=["fl"],
        grid={"epsilon": [0.0, 0.1], "dual_lr": [0.1, 1.0]},
    )
    keys = {pack_key(t) for t in found}
    assert len(keys) == 2  # one per ε; the dual lr may differ within a pack


@pytest.mark.parametrize(
    ("n", "size", "sizes"), [(27, 14, [14, 13]), (27, 8, [7, 7, 7, 6]), (3, 5, [3])]
)
def test_groups_split_into_packs_of_even_size_under_the_cap(
    n: int, size: int, sizes: list[int]
) -> None:
    group = trials(methods=["fl"], grid={"epsilon": [0.01 * (i + 1) for i in range(n)]})
    packs = split_group(group, size)
    assert [len(p) for p in packs] == sizes
    assert [t.trial_id for p in packs for t in p] == [t.trial_id for t in group]
