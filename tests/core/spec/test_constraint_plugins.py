"""The spec reads constraint kinds from the registry: a kind registered in-process is
validated, expanded, matched with methods and packed like a built-in one."""

import dataclasses
import re
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import pytest

from dualtune import ConstraintKindInfo, ConstraintParams, TaskInfo, register_constraint_kind
from dualtune.core.catalog import CONSTRAINT_KINDS, METHODS, kinds_for, method_applies
from dualtune.core.spec import SpecError, SweepSpec, TrialConfig, UnregisteredConstraint, load_spec
from dualtune.core.spec.packs import kind_pack_blocker, pack_groups, pack_key
from tests.core.engine import plugin_kind
from tests.core.engine.plugin_kind import GroupMeanLossParams

BUILDER = "tests.core.engine.plugin_kind:GroupMeanLoss"


class SampleMarginParams(ConstraintParams):
    kind: Literal["sample_margin"]


class FixedTargetParams(ConstraintParams):
    kind: Literal["fixed_target"]

    @property
    def uses_epsilon(self) -> bool:
        return False


class EpsilonFoldedParams(ConstraintParams):
    kind: Literal["epsilon_folded"]

    def problems(
        self, task: TaskInfo, task_params: Mapping[str, Any], epsilon: tuple[float, ...] | None
    ) -> list[tuple[str, str]]:
        bad = [e for e in epsilon or () if e > 0.5]
        return [("grid.epsilon", f"{task.name} needs ε ≤ 0.5, got {bad}")] if bad else []


EXTRA_KINDS = (
    plugin_kind.INFO,
    plugin_kind.UNPACKABLE,
    ConstraintKindInfo(
        "sample_margin", "ℓ_i ≤ ε", "one per sample", SampleMarginParams, BUILDER, per_sample=True
    ),
    ConstraintKindInfo(
        "fixed_target", "h = 0", "one", FixedTargetParams, BUILDER, methods=("fl", "alm")
    ),
    ConstraintKindInfo(
        "epsilon_folded", "g(ε) ≤ 0", "one", EpsilonFoldedParams, BUILDER, epsilon_in_kind=True
    ),
)

BASE: dict[str, Any] = {
    "name": "plugin",
    "task": {"name": "two_moons"},
    "constraint": {"kind": plugin_kind.NAME, "attribute": "side"},
    "methods": ["fl"],
}


@pytest.fixture(autouse=True)
def registered() -> Iterator[None]:
    for info in EXTRA_KINDS:
        register_constraint_kind(info)
    yield
    for info in EXTRA_KINDS:
        CONSTRAINT_KINDS.unregister(info.name)


def errors_of(**overrides: Any) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as info:
        load_spec({**BASE, **overrides})
    return [(e["field"], e["message"]) for e in info.value.errors]


def test_the_section_is_the_kinds_own_params_and_survives_a_round_trip() -> None:
    spec = load_spec(
        {**BASE, "constraint": {**BASE["constraint"], "weight": 2.0}, "grid": {"epsilon": 0.1}}
    )
    assert isinstance(spec.constraint, GroupMeanLossParams)
    assert spec.constraint.weight == 2.0
    dumped = spec.model_dump(mode="json")["constraint"]
    assert dumped == {"kind": plugin_kind.NAME, "attribute": "side", "weight": 2.0}
    assert SweepSpec.model_validate_json(spec.model_dump_json()) == spec
    [trial] = spec.trials()
    assert isinstance(trial.constraint, GroupMeanLossParams)
    assert TrialConfig.model_validate_json(trial.model_dump_json()) == trial
    assert trial.flat_params()["constraint.weight"] == "2.0"


@pytest.mark.parametrize(
    ("constraint", "field", "message"),
    [
        ({"weight": -1}, "constraint.weight", "Input should be greater than 0"),
        ({"weight": "heavy"}, "constraint.weight", "Input should be a valid number"),
        (
            {"bogus": 1},
            "constraint.bogus",
            "unknown field of constraint kind 'group_mean_loss'; valid fields: "
            "kind, attribute, weight",
        ),
        ({"attribute": None}, "constraint.attribute", "Input should be a valid string"),
        (
            {"attribute": "age"},
            "constraint.attribute",
            "unknown attribute 'age'; valid attributes: side",
        ),
    ],
)
def test_a_bad_parameter_of_the_plugin_kind_names_its_field(
    constraint: dict[str, Any], field: str, message: str
) -> None:
    errors = errors_of(constraint={**BASE["constraint"], **constraint})
    assert any(f == field and m.startswith(message) for f, m in errors), errors


def test_the_kinds_flags_are_checked_against_the_task() -> None:
    [(field, message)] = errors_of(task={"name": "polyfit"})
    assert field == "constraint.attribute"
    assert message.startswith("task 'polyfit' has no group attributes; tasks with groups: ")


def test_an_unknown_kind_lists_the_registered_ones_and_an_unregistered_one_is_unknown() -> None:
    [(field, message)] = errors_of(constraint={"kind": "fairness"})
    assert field == "constraint.kind"
    assert message.startswith("unknown constraint kind 'fairness'; valid kinds: sample_loss, ")
    assert f", {plugin_kind.NAME}, " in message
    CONSTRAINT_KINDS.unregister(plugin_kind.NAME)
    [(field, message)] = errors_of()
    assert (field, message.split(";")[0]) == (
        "constraint.kind",
        f"unknown constraint kind {plugin_kind.NAME!r}",
    )
    register_constraint_kind(plugin_kind.INFO)


def test_a_missing_kind_is_named() -> None:
    [(field, message)] = errors_of(constraint={"attribute": "side"})
    assert field == "constraint.kind"
    assert message.startswith("Field required; valid kinds: sample_loss, group_rate")


def test_every_method_that_fits_applies_to_a_plugin_kind() -> None:
    # A dense kind: every method but cserm (per-sample only).
    assert [m for m in METHODS if method_applies(m, plugin_kind.NAME)] == [
        "erm", "penalty", "fl", "rfl", "alm", "sal",
    ]  # fmt: skip
    assert plugin_kind.NAME in kinds_for("sal")
    assert plugin_kind.NAME in METHODS["fl"].kinds
    assert plugin_kind.NAME not in kinds_for("cserm")
    load_spec({**BASE, "methods": ["erm", "penalty", "fl", "rfl", "alm", "sal"]})
    assert (
        "methods.0",
        "method 'cserm' does not apply to constraint kind 'group_mean_loss'; "
        "methods for group_mean_loss: erm, penalty, fl, rfl, alm, sal",
    ) in errors_of(methods=["cserm"])


def test_a_per_sample_kind_gets_cserm_but_not_sal_and_a_kind_may_name_its_methods() -> None:
    assert method_applies("cserm", "sample_margin")
    assert not method_applies("sal", "sample_margin")
    assert "sample_margin" in kinds_for("cserm")
    assert [m for m in METHODS if method_applies(m, "fixed_target")] == ["fl", "alm"]
    [(field, message)] = errors_of(constraint={"kind": "fixed_target"}, methods=["rfl"])
    assert (field, message) == (
        "methods.0",
        "method 'rfl' does not apply to constraint kind 'fixed_target'; "
        "methods for fixed_target: fl, alm",
    )
    assert not method_applies("fl", "no_such_kind")
    with pytest.raises(KeyError, match="unknown method 'sgd'"):
        kinds_for("sgd")


def test_a_kind_without_epsilon_does_not_multiply_trials_by_it() -> None:
    spec = load_spec(
        {**BASE, "constraint": {"kind": "fixed_target"}, "grid": {"epsilon": [0.1, 0.2]}}
    )
    assert spec.count_trials() == 1
    assert "epsilon" not in spec.trials()[0].params


def test_a_kinds_own_checks_name_their_fields() -> None:
    assert (
        "grid.epsilon",
        "two_moons needs ε ≤ 0.5, got [0.9]",
    ) in errors_of(constraint={"kind": "epsilon_folded"}, grid={"epsilon": [0.1, 0.9]})


def test_selection_may_use_the_kinds_metrics_and_the_group_metrics_of_a_task_with_groups() -> None:
    load_spec({**BASE, "selection": {"metric": "val/group_loss_gap"}})
    load_spec({**BASE, "selection": {"metric": "val/dp_gap"}})  # two_moons has ``side``
    [(field, message)] = errors_of(
        task={"name": "digits"},
        constraint={"kind": "class_loss"},
        selection={"metric": "val/eo_gap"},
    )
    assert field == "selection.metric"
    assert message.startswith("unknown metric 'val/eo_gap'")  # digits has no group attribute
    [(field, message)] = errors_of(
        task={"name": "cps_wages"},
        constraint={"kind": "sample_loss"},
        selection={"metric": "val/dp_gap"},
    )
    assert message.startswith("unknown metric 'val/dp_gap'")  # a regression task: no rates
    load_spec(
        {
            **BASE,
            "task": {"name": "cps_wages"},
            "constraint": {"kind": "bounded_group_loss", "attribute": "ethnicity"},
            "selection": {"metric": "val/group_loss_max"},
        }
    )


def test_packing_follows_the_kinds_flags() -> None:
    folded = load_spec(
        {
            **BASE,
            "constraint": {"kind": "epsilon_folded"},
            "grid": {"epsilon": [0.1, 0.2], "dual_lr": [0.1, 1.0]},
        }
    ).trials()
    assert len({pack_key(t) for t in folded}) == 2  # one pack per ε

    dense = load_spec({**BASE, "grid": {"epsilon": [0.1, 0.2], "dual_lr": [0.1, 1.0]}}).trials()
    assert [len(g) for g in pack_groups(dense)] == [4]
    assert kind_pack_blocker(dense[0]) is None

    unpackable = load_spec(
        {
            **BASE,
            "constraint": {"kind": plugin_kind.UNPACKABLE_NAME, "attribute": "side"},
            "grid": {"epsilon": [0.1, 0.2], "dual_lr": [0.1, 1.0]},
        }
    ).trials()
    assert [len(g) for g in pack_groups(unpackable)] == [1, 1, 1, 1]
    blocker = kind_pack_blocker(unpackable[0])
    assert blocker is not None
    assert "'group_mean_loss_unpacked' cannot be packed: its builder is not vmap-safe" in blocker


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "other"}, "GroupMeanLossParams.kind accepts 'group_mean_loss', not 'other'"),
        ({"params": dict}, "params must be a dualtune.ConstraintParams subclass"),
        ({"builder": "no_colon"}, "builder must be 'module:Class'"),
        ({"params": SampleMarginParams, "name": "sample_margin"}, "must have an `attribute: str`"),
        ({"methods": ()}, "methods is empty"),
    ],
)
def test_a_malformed_kind_is_refused_when_it_is_described(
    change: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        dataclasses.replace(plugin_kind.INFO, **change)


def test_an_unknown_kind_passes_unchecked_only_when_runtime_pip_installs_it() -> None:
    doc = {
        **BASE,
        "task": {"name": "german_credit_elsewhere", "params": {"split_seed": 1}},
        "constraint": {"kind": "group_fnr_elsewhere", "attribute": "sex", "temperature": 4},
        "methods": ["erm", "fl", "sal"],
        "grid": {"epsilon": [0.05, 0.1]},
        "selection": {"metric": "val/fnr_max"},
    }
    [(field, message)] = [
        (f, m) for f, m in errors_of(**{**doc, "task": BASE["task"]}) if f.startswith("constr")
    ]
    assert (field, message.split(";")[0]) == (
        "constraint.kind",
        "unknown constraint kind 'group_fnr_elsewhere'",
    )
    spec = load_spec({**doc, "runtime": {"pip": ["dualtune-credit==0.1.0"]}})
    assert isinstance(spec.constraint, UnregisteredConstraint)
    assert spec.model_dump(mode="json")["constraint"] == doc["constraint"]
    assert SweepSpec.model_validate_json(spec.model_dump_json()) == spec
    trials = spec.trials()
    assert [t.method for t in trials] == ["erm", "fl", "fl", "sal", "sal"]  # ε swept
    assert trials[1].constraint == spec.constraint


def test_a_generic_plugin_kind_applies_to_every_task_that_takes_generic_kinds() -> None:
    # digits adds the task-specific layer_descent on top of the generic kinds, so a plugin's
    # generic kind fits it too; convection takes pinn_residual only.
    digits = {**BASE, "task": {"name": "digits"}, "constraint": {"kind": "sample_margin"}}
    assert load_spec(digits).constraint.kind == "sample_margin"
    resmlp = {"name": "digits", "params": {"model": "resmlp", "blocks": 2}}
    assert load_spec({**digits, "task": resmlp, "constraint": {"kind": "layer_descent"}})
    [(field, message)] = errors_of(
        task={"name": "convection"}, constraint={"kind": "sample_margin"}
    )
    assert field == "constraint.kind"
    assert message == (
        "task 'convection' does not support constraint kind 'sample_margin'; "
        "kinds for convection: pinn_residual"
    )
