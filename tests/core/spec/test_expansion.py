"""Method-aware grid expansion: counts, no duplicates, stable order and ids."""

from typing import Any

import pytest

from dualtune.core.spec import SweepSpec


def spec(**overrides: Any) -> SweepSpec:
    data: dict[str, Any] = {
        "name": "s",
        "task": {"name": "two_moons"},
        "constraint": {"kind": "sample_loss"},
        "methods": ["erm", "fl", "rfl"],
        "grid": {"epsilon": [0.1, 0.2, 0.3], "alpha": [0.5, 1.0], "dual_lr": [0.01, 0.1]},
    }
    data.update(overrides)
    return SweepSpec.model_validate(data)


def test_erm_is_not_multiplied_by_epsilon_alpha_or_dual_lr() -> None:
    trials = spec().trials()
    by_method: dict[str, int] = {}
    for t in trials:
        by_method[t.method] = by_method.get(t.method, 0) + 1
    # erm: 1; fl: ε × dual_lr = 6 (α is RFL's); rfl: ε × α × dual_lr = 12.
    assert by_method == {"erm": 1, "fl": 6, "rfl": 12}
    assert spec().count_trials() == len(trials) == 19


def test_erm_is_multiplied_by_the_keys_it_reads() -> None:
    s = spec(methods=["erm"], grid={"epsilon": [0.1, 0.2], "seed": [0, 1, 2], "lr": [0.1, 0.01]})
    assert [t.params for t in s.trials()] == [
        {"lr": lr, "seed": seed} for lr in (0.1, 0.01) for seed in (0, 1, 2)
    ]


def test_each_trial_carries_only_the_keys_its_method_reads() -> None:
    for t in spec().trials():
        expected = {"erm": set(), "fl": {"epsilon", "dual_lr"}}.get(
            t.method, {"epsilon", "alpha", "dual_lr"}
        )
        assert set(t.params) == expected


def test_equality_group_rate_does_not_multiply_by_epsilon() -> None:
    s = spec(
        constraint={"kind": "group_rate", "attribute": "side", "equality": True},
        methods=["fl"],
        grid={"epsilon": [0.1, 0.2], "dual_lr": [0.1, 1.0]},
    )
    assert [t.params for t in s.trials()] == [{"dual_lr": 0.1}, {"dual_lr": 1.0}]


def test_order_is_methods_in_spec_order_then_grid_in_catalog_key_order() -> None:
    trials = spec(methods=["rfl", "erm"]).trials()
    assert [t.method for t in trials] == ["rfl"] * 12 + ["erm"]
    assert [t.index for t in trials] == list(range(13))
    first = trials[:4]
    assert [(t.params["epsilon"], t.params["alpha"], t.params["dual_lr"]) for t in first] == [
        (0.1, 0.5, 0.01),
        (0.1, 0.5, 0.1),
        (0.1, 1.0, 0.01),
        (0.1, 1.0, 0.1),
    ]


def test_ids_are_unique_and_depend_only_on_method_and_params() -> None:
    a = spec().trials()
    assert len({t.trial_id for t in a}) == len(a)
    # Reordering grid keys and methods changes neither any id nor the set of ids.
    b = spec(
        methods=["rfl", "fl", "erm"],
        grid={"dual_lr": [0.01, 0.1], "alpha": [0.5, 1.0], "epsilon": [0.1, 0.2, 0.3]},
    ).trials()
    assert {t.trial_id: t.params for t in a} == {t.trial_id: t.params for t in b}
    assert all(t.trial_id.startswith(f"{t.method}-") for t in a)


def test_scalar_grid_values_are_one_value_lists() -> None:
    s = spec(methods=["fl"], grid={"epsilon": 0.2, "dual_lr": [0.1]})
    assert s.grid.epsilon == (0.2,)
    assert [t.params for t in s.trials()] == [{"epsilon": 0.2, "dual_lr": 0.1}]


def test_integer_keys_come_back_as_integers() -> None:
    s = spec(methods=["erm"], grid={"seed": [0, 1.0]})
    assert [t.params["seed"] for t in s.trials()] == [0, 1]
    assert all(isinstance(t.params["seed"], int) for t in s.trials())


@pytest.mark.parametrize(
    ("method", "key", "expected"),
    [
        ("alm", "dual_lr", 1.0),  # ALM's own default: the ρ-scaled step of the method
        ("fl", "lr", 0.001),  # lr defaults to train.optimizer.lr
        ("fl", "kp", 0.0),  # gradient ascent has no proportional term
    ],
)
def test_trial_values_fall_back_to_defaults(method: str, key: str, expected: float) -> None:
    s = spec(methods=[method], grid={}, train={"optimizer": {"name": "adam", "lr": 0.001}})
    (t,) = s.trials()
    assert t.value(key) == pytest.approx(expected)


def test_trial_config_round_trips_through_json() -> None:
    from dualtune.core.spec import TrialConfig

    for t in spec().trials():
        assert TrialConfig.model_validate_json(t.model_dump_json()) == t


def test_erm_is_measured_at_the_strictest_grid_epsilon() -> None:
    trials = spec().trials()
    erm = next(t for t in trials if t.method == "erm")
    assert erm.value("epsilon") == 0.1
    assert "epsilon" not in erm.params  # it does not multiply ERM's trials
    fl = [t for t in trials if t.method == "fl"]
    assert sorted({t.value("epsilon") for t in fl}) == [0.1, 0.2, 0.3]
