"""Every validation message names the field and, where there is a choice, the valid choices."""

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dualtune.core.catalog import CONSTRAINT_KINDS, TASKS
from dualtune.core.spec import SpecError, SweepSpec, load_spec

BASE: dict[str, Any] = {
    "name": "s",
    "task": {"name": "two_moons"},
    "constraint": {"kind": "sample_loss"},
    "methods": ["fl"],
}


def errors_of(**overrides: Any) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as info:
        load_spec({**BASE, **overrides})
    return [(e["field"], e["message"]) for e in info.value.errors]


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        (
            {"task": {"name": "mnist"}},
            "task.name",
            # Every registered task: the built-in ones, and plugins' where installed (CI
            # installs examples/plugins/dualtune-credit).
            f"unknown task 'mnist'; valid tasks: {', '.join(sorted(TASKS))}",
        ),
        (
            {"task": {"name": "two_moons", "params": {"bogus": 1}}},
            "task.params.bogus",
            "unknown parameter of task 'two_moons'; valid parameters: "
            "n_train, n_val, noise, hidden, data_seed",
        ),
        (
            {"constraint": {"kind": "fairness"}},
            "constraint.kind",
            f"unknown constraint kind 'fairness'; valid kinds: {', '.join(CONSTRAINT_KINDS)}",
        ),
        (
            {"methods": ["fl", "sgd"]},
            "methods.1",
            "unknown method 'sgd'; valid methods: erm, penalty, cserm, fl, rfl, alm, sal",
        ),
        (
            {"methods": ["sal"]},
            "methods.0",
            "method 'sal' does not apply to constraint kind 'sample_loss'; "
            "methods for sample_loss: erm, penalty, cserm, fl, rfl, alm",
        ),
        (
            {"grid": {"epsilon": [0.1 * i for i in range(1, 41)], "dual_lr": [1, 2, 3]}},
            "grid",
            "grid expands to 120 trials, more than limits.max_trials = 100; "
            "shrink the grid or raise limits.max_trials",
        ),
        (
            {"grid": {"epsilom": 0.1}},
            "grid.epsilom",
            "unknown grid key; valid keys: epsilon, alpha, dual_lr, rho, rho_growth, rho_max, "
            "penalty, kp, nu, lr, seed",
        ),
        ({"grid": {"dual_lr": -1}}, "grid.dual_lr", "values must be > 0, got -1"),
        ({"grid": {"epsilon": "a"}}, "grid.epsilon", "values must be numbers, got 'a'"),
        ({"grid": {"epsilon": [0.1, 0.1]}}, "grid.epsilon", "duplicate values in [0.1, 0.1]"),
        ({"grid": {"seed": [0.5]}}, "grid.seed", "values must be integers, got 0.5"),
        (
            {"constraint": {"kind": "group_rate", "attribute": "sex"}},
            "constraint.attribute",
            "unknown attribute 'sex'; valid attributes: side",
        ),
        (
            {"task": {"name": "digits"}, "constraint": {"kind": "group_rate", "attribute": "a"}},
            "constraint.attribute",
            "task 'digits' has no group attributes; tasks with groups: "
            + ", ".join(t.name for t in TASKS.values() if t.group_attributes),
        ),
        (
            {"task": {"name": "polyfit"}, "constraint": {"kind": "class_loss"}},
            "constraint.kind",
            "class_loss needs a classification task; 'polyfit' is a regression task",
        ),
        (
            {"epochs": 3},
            "epochs",
            "unknown field; remove it (see the spec reference in ARCHITECTURE §3.1)",
        ),
        (
            {"grid": {"kp": 1.0}},
            "grid.kp",
            "kp is a νPI gain; set dual.optimizer: {name: nupi} to sweep it",
        ),
        ({"methods": ["fl", "fl"]}, "methods", "each method may appear once"),
    ],
)
def test_invalid_specs_name_the_field_and_the_fix(
    overrides: dict[str, Any], field: str, message: str
) -> None:
    if field == "grid" and "limits" not in overrides:
        overrides = {**overrides, "limits": {"max_trials": 100}}
    assert (field, message) in errors_of(**overrides)


def test_the_built_in_tasks_and_kinds_come_first_in_their_own_order() -> None:
    assert list(TASKS)[:11] == [
        "two_moons",
        "digits",
        "iris_svm",
        "polyfit",
        "fashion_mnist",
        "cifar10",
        "adult",
        "compas",
        "cps_wages",
        "convection",
        "fashion_denoise",
    ]
    assert list(CONSTRAINT_KINDS)[:9] == [
        "sample_loss",
        "group_rate",
        "equalized_odds",
        "bounded_group_loss",
        "class_loss",
        "weight_norm",
        "orthogonality",
        "layer_descent",
        "pinn_residual",
    ]


def test_unknown_selection_metric_lists_the_valid_metrics() -> None:
    [(field, message)] = errors_of(selection={"metric": "val/acc"})
    assert field == "selection.metric"
    assert message.startswith("unknown metric 'val/acc'; valid metrics: ")
    assert "val/cvar_0.1" in message
    assert "val/accuracy" in message


def test_out_of_range_task_parameters_are_rejected() -> None:
    errors = errors_of(task={"name": "two_moons", "params": {"noise": 5}})
    assert errors == [("task.params.noise", "Input should be less than or equal to 1")]


def test_all_problems_are_reported_at_once() -> None:
    errors = errors_of(grid={"epsilom": 1, "dual_lr": 0}, methods=["fl", "nope"])
    fields = {f for f, _ in errors}
    assert {"grid.epsilom", "grid.dual_lr"} <= fields or "methods.1" in fields


def test_missing_fields_are_named() -> None:
    with pytest.raises(SpecError) as info:
        load_spec({"name": "s"})
    assert [e["field"] for e in info.value.errors] == ["task", "constraint", "methods"]


def test_a_grid_at_the_limit_is_accepted() -> None:
    spec = load_spec(
        {**BASE, "grid": {"epsilon": [0.1, 0.2], "dual_lr": [1, 2]}, "limits": {"max_trials": 4}}
    )
    assert spec.count_trials() == 4


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("name: [", "spec is not valid YAML at line 1, column 8"),
        ("- a", "a spec is a mapping with keys name, task, constraint, methods, grid, …"),
        ("/nonexistent/spec.yaml", "cannot read /nonexistent/spec.yaml: No such file"),
    ],
)
def test_unreadable_sources_say_why(source: str, message: str) -> None:
    with pytest.raises(SpecError, match="^" + message.replace("[", r"\[")):
        load_spec(source)


def test_a_spec_loads_from_a_file_from_yaml_text_and_from_a_mapping(tmp_path: Path) -> None:
    text = "name: s\ntask: {name: two_moons}\nconstraint: {kind: sample_loss}\nmethods: [fl]\n"
    path = tmp_path / "s.yaml"
    path.write_text(text)
    assert load_spec(path) == load_spec(str(path)) == load_spec(text) == load_spec(BASE)


def test_a_spec_round_trips_through_json() -> None:
    spec = load_spec({**BASE, "grid": {"epsilon": [0.1, 0.2]}})
    assert SweepSpec.model_validate_json(spec.model_dump_json()) == spec


@pytest.mark.parametrize("path", sorted(Path("examples").glob("**/*.yaml")))
def test_the_examples_are_valid(path: Path) -> None:
    assert load_spec(path).count_trials() >= 1


def test_the_spec_imports_without_torch() -> None:
    code = (
        "import sys; import dualtune.core.spec; "
        "dualtune.core.spec.load_spec({'name': 's', 'task': {'name': 'digits'}, "
        "'constraint': {'kind': 'sample_loss'}, 'methods': ['fl']}).trials(); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("early_stopping", "field", "message"),
    [
        ({"metric": "val/cvar_0.2"}, "early_stopping.metric", "unknown metric 'val/cvar_0.2'"),
        (
            {"subject_to": {"train/feasible": {"min": 0.9}}},
            "early_stopping.subject_to.train/feasible",
            "valid metrics: train/loss_mean",
        ),
        ({"grace_epochs": 20}, "early_stopping.grace_epochs", "not below train.epochs (20)"),
        ({"reduction_factor": 1}, "early_stopping.reduction_factor", "greater than 1"),
        ({"grace_epochs": 0}, "early_stopping.grace_epochs", "greater than or equal to 1"),
        ({"patience": 3}, "early_stopping.patience", ""),
    ],
)
def test_early_stopping_is_refused_by_field(
    early_stopping: dict[str, Any], field: str, message: str
) -> None:
    found = errors_of(train={"epochs": 20}, early_stopping=early_stopping)
    assert any(f == field and message in m for f, m in found), found


def test_early_stopping_defaults_rank_by_the_selection() -> None:
    spec = load_spec(
        {
            **BASE,
            "selection": {"metric": "val/accuracy", "mode": "max"},
            "early_stopping": {"grace_epochs": 2},
        }
    )
    assert spec.early_stopping is not None
    assert spec.early_stopping.reduction_factor == 3
    assert spec.early_stopping.rule(spec.selection) == spec.selection
    assert load_spec(BASE).early_stopping is None  # off unless asked for
