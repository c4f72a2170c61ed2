"""Values no spec may hold, wherever they sit, and the bounds on every count a spec gives:
each refusal names its field and says what to do (issue 14, "bad input is a 4xx")."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytest

from dualtune.core.spec import SpecError, SweepSpec, hostile_values, load_spec, trial_cap
from dualtune.core.spec.expansion import method_points
from dualtune.core.spec.hostile import MAX_DEPTH

EXAMPLES = Path(__file__).parents[3] / "examples"

BASE: dict[str, Any] = {
    "name": "s",
    "task": {"name": "two_moons"},
    "constraint": {"kind": "sample_loss"},
    "methods": ["erm", "fl"],
    "grid": {"epsilon": [0.1, 0.2], "dual_lr": [0.01, 0.1]},
}


def fields_of(**overrides: Any) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        load_spec({**BASE, **overrides})
    return {e["field"]: e["message"] for e in info.value.errors}


def test_a_clean_document_has_no_hostile_values() -> None:
    assert (
        hostile_values({**BASE, "task": {"name": "x", "params": {"a": [1, 2.5, None, True]}}})
        == []
    )


def test_each_hostile_value_is_named_by_its_path() -> None:
    data = {
        "name": "a\x00b",
        "train": {"optimizer": {"lr": math.inf}},
        "grid": {"epsilon": [0.1, -math.inf, math.nan]},
        "task": {"params": {"k\x00": 1, "big": 2**63, "small": -(2**63), "fine": 2**63 - 1}},
    }
    found = dict(hostile_values(data, "spec"))
    assert set(found) == {
        "spec.name",
        "spec.train.optimizer.lr",
        "spec.grid.epsilon.1",
        "spec.grid.epsilon.2",
        "spec.task.params.k\\u0000",
        "spec.task.params.big",
    }
    assert "remove it" in found["spec.name"]
    assert "finite" in found["spec.train.optimizer.lr"]
    assert "2**63-1" in found["spec.task.params.big"]


def test_nesting_past_the_limit_is_refused_without_recursion() -> None:
    deep: Any = 1
    for _ in range(100_000):  # far past Python's recursion limit
        deep = [deep]
    assert hostile_values({"task": {"params": {"x": deep}}}) == [
        (
            "task.params.x" + ".0" * (MAX_DEPTH - 3),
            f"nested more than {MAX_DEPTH} levels deep; a spec's sections are far flatter",
        )
    ]


@pytest.mark.parametrize(
    ("overrides", "field", "hint"),
    [
        ({"name": "moons\x00"}, "name", "NUL"),
        ({"train": {"optimizer": {"lr": math.inf}}}, "train.optimizer.lr", "finite"),
        ({"dual": {"init": math.nan}}, "dual.init", "finite"),
        ({"grid": {"epsilon": [10**400]}}, "grid.epsilon.0", "2**63-1"),
        (
            {"task": {"name": "two_moons", "params": {"noise\x00": 0.1}}},
            "task.params.noise\\u0000",
            "key",
        ),
        ({"train": {"epochs": 10**20}}, "train.epochs", "2**63-1"),
        ({"train": {"epochs": 100_001}}, "train.epochs", "100000"),
        ({"train": {"batch_size": 10**9}}, "train.batch_size", "100000000"),
        ({"train": {"eval_every": 10**6}}, "train.eval_every", "100000"),
        ({"limits": {"max_trials": 10**8}}, "limits.max_trials", "10000000"),
        ({"limits": {"max_failures": 10**8}}, "limits.max_failures", "10000000"),
        ({"logging": {"per_sample_every": 10**6}}, "logging.per_sample_every", "100000"),
        ({"pack": 10**5}, "pack", "10000"),
        ({"resources": {"cpu": 10**6}}, "resources.cpu", "1024"),
        ({"grid": {"epsilon": [0.1], "seed": [2**32]}}, "grid.seed", "2**32-1"),
        ({"grid": {"epsilon": [i / 2000 for i in range(1001)]}}, "grid.epsilon", "at most 1000"),
        ({"methods": ["fl"] * 101}, "methods", "at most 100"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_hostile_values_and_counts_past_their_bounds_are_named(
    overrides: dict[str, Any], field: str, hint: str
) -> None:
    fields = fields_of(**overrides)
    assert field in fields, fields
    assert hint in fields[field]


def test_yaml_nan_and_infinity_are_refused_too() -> None:
    text = "name: s\ntask: {name: two_moons}\nconstraint: {kind: sample_loss}\nmethods: [fl]\n"
    with pytest.raises(SpecError) as info:
        load_spec(text + "grid: {epsilon: .nan}\ntrain: {optimizer: {lr: .inf}}\n")
    assert {e["field"] for e in info.value.errors} == {"grid.epsilon", "train.optimizer.lr"}


def test_the_seed_range_that_numpy_takes_is_accepted() -> None:
    spec = load_spec({**BASE, "grid": {"seed": [0, 2**32 - 1]}})
    assert spec.grid.seed == (0, 2**32 - 1)


def _specs() -> list[SweepSpec]:
    """Every example spec this checkout can validate, and grids whose keys only some
    methods read (ERM reads none of ε, α, dual_lr; an equality kind ignores ε; νPI gains)."""
    specs = []
    for path in sorted(EXAMPLES.glob("**/*.yaml")):
        try:
            specs.append(load_spec(path))
        except SpecError:
            continue  # a plugin's spec where the plugin is not installed, a non-spec file
    axes = {"epsilon": [0.1, 0.2, 0.3], "alpha": [0.5, 1.0], "dual_lr": [0.01, 0.1]}
    specs += [
        load_spec(
            {
                **BASE,
                "methods": ["erm", "penalty", "cserm", "fl", "rfl", "alm"],
                "grid": {
                    **axes,
                    "rho": [1.0, 2.0],
                    "rho_growth": [1.5],
                    "rho_max": [10.0, 20.0],
                    "penalty": [1.0, 5.0, 9.0],
                    "lr": [0.01, 0.001],
                    "seed": [0, 1, 2],
                },
            }
        ),
        load_spec(
            {
                **BASE,
                "constraint": {"kind": "group_rate", "attribute": "side", "equality": True},
                "methods": ["erm", "fl", "alm"],
                "grid": {**axes, "rho": [1.0, 3.0], "seed": [4, 5]},
            }
        ),
        load_spec(
            {
                **BASE,
                "methods": ["fl", "rfl"],
                "dual": {"optimizer": {"name": "nupi"}},
                "grid": {**axes, "kp": [0.0, 0.5], "nu": [0.0, 0.1, 0.5]},
            }
        ),
    ]
    return specs


def test_the_trial_count_is_the_expansions_on_real_specs() -> None:
    specs = _specs()
    assert len(specs) >= 10  # the examples validate here (they are tested as runnable elsewhere)
    for spec in specs:
        trials = spec.trials()
        assert spec.count_trials() == len(trials), spec.name
        for method in spec.methods:
            counted = sum(1 for t in trials if t.method == method)
            assert counted == len(method_points(spec, method)), (spec.name, method)
    # Method-specific: the grids above multiply differently per method, not by the product.
    mixed = specs[-3]
    per_method = {m: len(method_points(mixed, m)) for m in mixed.methods}
    assert per_method["erm"] == 3 * 2  # seed × lr only
    assert len(set(per_method.values())) > 2


def test_a_trillion_trials_are_counted_instantly_and_refused_by_the_cap() -> None:
    axis = [round(0.001 * (i + 1), 6) for i in range(1000)]
    grid = {"epsilon": axis, "dual_lr": axis, "rho": axis, "seed": list(range(1000))}
    started = time.perf_counter()
    with pytest.raises(SpecError) as info, trial_cap(10_000, "the server's setting"):
        load_spec(
            {**BASE, "methods": ["erm", "alm"], "grid": grid, "limits": {"max_trials": 10**7}}
        )
    assert time.perf_counter() - started < 2.0  # expanding would never return
    [error] = info.value.errors
    assert error["field"] == "grid"
    assert error["message"] == (
        "grid expands to 1000000001000 trials, more than limits.max_trials = 10000000 and "
        "this server's cap of 10000 trials (the server's setting); shrink the grid"
    )


def test_the_cap_alone_and_the_limit_alone_say_which_to_change() -> None:
    five = {**BASE, "limits": {"max_trials": 4}}  # erm 1 + fl 2 × 2
    with pytest.raises(SpecError) as over_limit:
        load_spec(five)
    assert over_limit.value.errors[0]["message"].endswith(
        "shrink the grid or raise limits.max_trials"
    )
    with pytest.raises(SpecError) as over_cap, trial_cap(4, "DUALTUNE_MAX_TRIALS"):
        load_spec(BASE)
    assert over_cap.value.errors[0]["message"] == (
        "grid expands to 5 trials, more than this server's cap of 4 trials "
        "(DUALTUNE_MAX_TRIALS); shrink the grid"
    )
    with trial_cap(5, "DUALTUNE_MAX_TRIALS"):
        assert load_spec(BASE).count_trials() == 5
    assert load_spec(BASE).count_trials() == 5  # outside the block: no cap
