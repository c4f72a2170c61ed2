"""``core.fit`` end to end: metrics contract, exact resume, divergence, every method × kind."""

import functools
import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from dualtune import core
from dualtune.core.catalog import METHODS
from dualtune.core.engine.multipliers import Multipliers
from dualtune.core.engine.result import EvalReport
from dualtune.core.spec import TrialConfig
from tests.core.engine.conftest import make_trial

SPLIT_METRICS = (
    "loss_mean",
    "loss_max",
    "loss_q50",
    "loss_q90",
    "loss_q99",
    "cvar_0.01",
    "cvar_0.05",
    "cvar_0.1",
    "feasible_frac",
)
OTHER_METRICS = (
    "dual/lambda_mean",
    "dual/lambda_max",
    "dual/lambda_active_frac",
    "constraint/violation_max",
    "constraint/violation_mean",
    "time/epoch_s",
    "time/samples_per_s",
    "time/epochs",  # epochs trained: what early stopping saved is read from it
    "epoch",
)
MakeTrial = Callable[..., TrialConfig]


GROUP_METRICS = ("dp_gap", "tpr_gap", "fpr_gap", "eo_gap", "error_gap", "group_loss_max")
"""§3.4: reported by every task with a group attribute (two_moons has ``side``)."""


def expected_metrics(classification: bool, groups: bool = False) -> set[str]:
    names = {f"{s}/{m}" for s in ("train", "val") for m in SPLIT_METRICS} | set(OTHER_METRICS)
    if classification:
        names |= {"train/accuracy", "val/accuracy"}
    if groups:
        names |= {f"{s}/{m}" for s in ("train", "val") for m in GROUP_METRICS}
    return names


def test_every_evaluation_reports_the_metric_contract(trial: MakeTrial) -> None:
    config = trial(
        "rfl",
        grid={"epsilon": 0.3, "alpha": 1.0, "dual_lr": 0.1},
        train={"epochs": 4, "batch_size": 128, "eval_every": 2},
    )
    seen: list[EvalReport] = []
    result = core.fit(config, reporter=seen.append)
    assert [r.epoch for r in seen] == [2, 4]
    assert [r.is_last for r in seen] == [False, True]
    for h in result.history:
        assert set(h) == expected_metrics(classification=True, groups=True)
        assert all(np.isfinite(v) for v in h.values())
    assert result.final == result.history[-1]
    assert result.per_sample["multiplier"].shape == (512,)
    assert result.per_sample["train_loss"].shape == (512,)
    assert result.per_sample["val_loss"].shape == (128,)
    assert np.array_equal(result.per_sample["multiplier"], result.multipliers)
    # The reported multiplier statistics are those of the final table.
    lam = result.multipliers
    assert result.final["dual/lambda_max"] == pytest.approx(lam.max())
    assert result.final["dual/lambda_active_frac"] == pytest.approx((lam > 0).mean())


def _snapshot(state: dict[str, Any]) -> dict[str, Any]:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded: dict[str, Any] = torch.load(buffer, weights_only=False)
    return loaded


@pytest.mark.parametrize(
    ("method", "grid", "constraint", "dual"),
    [
        ("fl", {"epsilon": 0.2, "dual_lr": 0.05}, None, None),
        (
            "rfl",
            {"epsilon": 0.2, "alpha": 0.5, "dual_lr": 0.05, "kp": 2.0, "nu": 0.3},
            None,
            {"optimizer": {"name": "nupi"}},
        ),
        ("alm", {"epsilon": 0.2, "rho": 0.5, "dual_lr": 0.1}, None, None),
        # minibatch estimates of group rates: the penalty slope's running estimate resumes
        (
            "alm",
            {"epsilon": 0.02, "rho": 2.0, "dual_lr": 0.1},
            {"kind": "equalized_odds", "attribute": "side"},
            None,
        ),
        (
            "sal",
            {"epsilon": 2.0, "rho": 0.5, "rho_growth": 1.5, "rho_max": 5.0},
            {"kind": "weight_norm"},
            None,
        ),
    ],
)
def test_resume_is_bitwise_identical_to_an_uninterrupted_run(
    trial: MakeTrial,
    method: str,
    grid: dict[str, Any],
    constraint: dict[str, Any] | None,
    dual: dict[str, Any] | None,
) -> None:
    config = trial(
        method,
        grid=grid,
        constraint=constraint,
        dual=dual,
        train={"epochs": 6, "batch_size": 96, "optimizer": {"name": "adam", "lr": 0.01}},
    )
    uninterrupted = core.fit(config)

    saved: dict[str, Any] = {}

    class StopTrainingError(Exception):
        pass

    def stop_after_three(report: EvalReport) -> None:
        if report.epoch == 3:
            saved.update(_snapshot(report.state_dict()))
            raise StopTrainingError

    with pytest.raises(StopTrainingError):
        core.fit(config, reporter=stop_after_three)
    resumed = core.fit(config, resume=saved)

    assert len(resumed.history) == 6
    for a, b in zip(uninterrupted.history, resumed.history, strict=True):
        assert {k: v for k, v in a.items() if not k.startswith("time/")} == {
            k: v for k, v in b.items() if not k.startswith("time/")
        }
    assert np.array_equal(uninterrupted.multipliers, resumed.multipliers)
    assert np.array_equal(uninterrupted.per_sample["train_loss"], resumed.per_sample["train_loss"])


def test_resume_refuses_another_trials_state(trial: MakeTrial) -> None:
    a = trial("fl", grid={"epsilon": 0.2})
    b = trial("fl", grid={"epsilon": 0.3})
    states: list[dict[str, Any]] = []
    core.fit(a, reporter=lambda r: states.append(r.state_dict()))
    with pytest.raises(ValueError, match="state is for trial"):
        core.fit(b, resume=states[-1])


def test_a_huge_learning_rate_diverges_naming_the_epoch(trial: MakeTrial) -> None:
    config = trial(
        "erm",
        task={"name": "polyfit"},
        train={"epochs": 5, "batch_size": 30, "optimizer": {"name": "sgd", "lr": 1e6}},
    )
    with pytest.raises(core.Diverged, match=r"diverged at epoch \d") as info:
        core.fit(config)
    assert 1 <= info.value.epoch <= 5


APPLICABLE = [
    (method, kind)
    for method, info in METHODS.items()
    for kind in ("sample_loss", "class_loss", "weight_norm", "orthogonality")
    if kind in info.kinds
]


# Levels the digits MLP can meet but ERM violates after three epochs, so the constraints
# are active during training. weight_norm's is below ‖W₁‖²_F ≈ 21 at init, violated from
# the first step: at 30 the start is feasible and SAL's acceptance test (λ moves only
# while the violation has not grown since its best, 0) never let its multipliers move.
KIND_EPSILON = {"sample_loss": 0.3, "class_loss": 0.3, "weight_norm": 15.0, "orthogonality": 5.0}


def digits_trial(method: str, kind: str) -> TrialConfig:
    grid = {"epsilon": KIND_EPSILON[kind]} if "epsilon" in METHODS[method].grid_keys else {}
    return make_trial(
        method,
        task={"name": "digits"},
        constraint={"kind": kind},
        grid=grid,
        train={"epochs": 3, "batch_size": 128, "optimizer": {"name": "adam", "lr": 0.01}},
    )


@functools.cache
def erm_violation(kind: str) -> float:
    """ERM's final mean train violation under ``kind`` (one run per kind and process)."""
    return core.fit(digits_trial("erm", kind)).final["constraint/violation_mean"]


@pytest.fixture
def peak_multiplier(monkeypatch: pytest.MonkeyPatch) -> Callable[[], float]:
    """The largest |λ| any dual step wrote during the test. Multipliers oscillate into the
    projection under Adam (the weight kinds' λ is often 0 at every epoch's end), so what
    training did is read at every write of the table, not from the last evaluation."""
    peak = [0.0]
    scatter = Multipliers.scatter_

    def recording_scatter(
        self: Multipliers, index: torch.Tensor | None, values: torch.Tensor
    ) -> torch.Tensor:
        written = scatter(self, index, values)
        if written.numel():
            peak[0] = max(peak[0], float(written.detach().abs().max()))
        return written

    monkeypatch.setattr(Multipliers, "scatter_", recording_scatter)
    return lambda: peak[0]


@pytest.mark.parametrize(("method", "kind"), APPLICABLE)
def test_every_method_trains_under_every_applicable_kind(
    method: str, kind: str, peak_multiplier: Callable[[], float]
) -> None:
    result = core.fit(digits_trial(method, kind))
    assert set(result.final) == expected_metrics(classification=True)
    assert result.final["val/accuracy"] > 0.3  # learned something in three epochs
    if not METHODS[method].uses_multipliers:
        assert peak_multiplier() == 0.0
        return
    # The dual step acted: the multipliers left their initial 0 while the constraint was
    # violated, and the method ends with less violation than ERM, which ignores it (a
    # switched-off dual step leaves fl and rfl training exactly as ERM does, or not at all
    # under sample_loss's zero objective).
    assert peak_multiplier() > 1e-3
    erm = erm_violation(kind)
    assert erm > 0.1 * KIND_EPSILON[kind]  # the constraint is active: ERM breaks it
    assert result.final["constraint/violation_mean"] < 0.7 * erm


def test_constrained_training_satisfies_class_loss_bounds_erm_does_not_target(
    trial: MakeTrial,
) -> None:
    """On digits, FL with per-class loss ≤ ε ends with every class under ε on train."""
    config = trial(
        "fl",
        task={"name": "digits"},
        constraint={"kind": "class_loss"},
        grid={"epsilon": 0.05, "dual_lr": 0.5},
        train={"epochs": 40, "batch_size": 256, "optimizer": {"name": "adam", "lr": 0.01}},
    )
    result = core.fit(config)
    assert result.final["train/feasible_frac"] == 1.0


@pytest.mark.parametrize("equality", [True, False])
def test_demographic_parity_constraint_closes_the_gap_erm_leaves_open(
    trial: MakeTrial, equality: bool
) -> None:
    """On two moons, the sides' positive rates differ by ≈0.5 under ERM; FL with a
    group_rate constraint on ``side`` brings the gap down, and reports dp_gap."""
    constraint = {"kind": "group_rate", "attribute": "side", "equality": equality}
    # Under proxy constraints (the default) the multipliers ascend on hard rates, which
    # move in jumps on 512 samples: measured, the gap oscillates (60 steps: 0.11 / 0.29 for
    # = / ≤) and is 0.12 / 0.14 after 150 (ERM 0.34).
    train = {"epochs": 150, "batch_size": 512, "optimizer": {"name": "adam", "lr": 0.01}}
    erm = core.fit(trial("erm", constraint=constraint, train=train))
    grid = {"dual_lr": 0.5} if equality else {"epsilon": 0.05, "dual_lr": 0.5}
    fl = core.fit(trial("fl", constraint=constraint, grid=grid, train=train))
    assert set(fl.final) == expected_metrics(classification=True, groups=True)
    assert erm.final["train/dp_gap"] > 0.3
    assert fl.final["train/dp_gap"] < 0.5 * erm.final["train/dp_gap"]
    assert fl.multipliers.shape == ((2,) if equality else (4,))
