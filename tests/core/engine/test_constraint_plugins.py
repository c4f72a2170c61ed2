"""A constraint kind registered as a plugin (``plugin_kind``, one module) gets what a
built-in kind gets, with no change to the engine: every method, packing, exact resume and
the ``constraint/*``, ``dual/*`` metrics."""

import copy
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from torch import nn

from dualtune import register_constraint_kind
from dualtune.core.catalog import CONSTRAINT_KINDS, TASKS, ConstraintKindInfo
from dualtune.core.engine.build import build_constraint_kind
from dualtune.core.engine.fit import fit, fit_unit
from dualtune.core.engine.pack_trainer import NotPackable, PackTrainer
from dualtune.core.engine.result import EvalReport
from dualtune.core.engine.trainer import Trainer
from dualtune.core.spec import SweepSpec, TrialConfig, metric_names_for
from dualtune.core.spec.packs import pack_groups
from dualtune.core.tasks import load_task
from tests.core.engine import plugin_kind
from tests.core.engine.plugin_kind import GroupMeanLoss, GroupMeanLossParams
from tests.core.engine.test_pack_trainer import assert_same_metrics

DUAL_METRICS = ("dual/lambda_mean", "dual/lambda_max", "dual/lambda_active_frac")
CONSTRAINT_METRICS = ("constraint/violation_max", "constraint/violation_mean")


@pytest.fixture(autouse=True)
def registered() -> Iterator[None]:
    register_constraint_kind(plugin_kind.INFO)
    register_constraint_kind(plugin_kind.UNPACKABLE)
    yield
    CONSTRAINT_KINDS.unregister(plugin_kind.NAME)
    CONSTRAINT_KINDS.unregister(plugin_kind.UNPACKABLE_NAME)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def group_loss_trials(
    method: str, grid: dict[str, Any], kind: str = plugin_kind.NAME, **overrides: Any
) -> list[TrialConfig]:
    doc: dict[str, Any] = {
        "name": "plugin",
        "task": {"name": "two_moons"},
        "constraint": {"kind": kind, "attribute": "side", "weight": 2.0},
        "methods": [method],
        "grid": {**grid, "seed": 0},
        "train": {"epochs": 4, "batch_size": 128, "optimizer": {"name": "adam", "lr": 0.01}},
    }
    doc.update(overrides)
    return SweepSpec.model_validate(doc).trials()


def test_the_trial_builds_the_registered_builder_from_its_section() -> None:
    [trial] = group_loss_trials("fl", {"epsilon": 0.3})
    assert isinstance(trial.constraint, GroupMeanLossParams)
    task = load_task(trial.task.name, trial.task.params)
    data = task.load()
    kind = build_constraint_kind(trial, data, task.make_model(data), task=task)
    assert isinstance(kind, GroupMeanLoss)
    assert (kind.attribute, kind.num_groups, kind.weight) == ("side", 2, 2.0)


@pytest.mark.parametrize("method", ["fl", "rfl", "alm"])
def test_every_constrained_method_trains_the_plugin_kind_and_reports_its_metrics(
    method: str,
) -> None:
    # ε below the ERM group losses (×2): the constraints bind, the multipliers rise.
    [trial] = group_loss_trials(method, {"epsilon": 0.2, "dual_lr": 0.5})
    result = fit(trial)
    final = result.final
    assert len(result.history) == 4
    for name in (*DUAL_METRICS, *CONSTRAINT_METRICS, "train/group_loss_gap", "val/eo_gap"):
        assert np.isfinite(final[name]), name  # two_moons has a group attribute: eo_gap
    assert final["dual/lambda_max"] > 0
    reported = metric_names_for(
        "classification", plugin_kind.NAME, TASKS["two_moons"].extra_metrics, groups=True
    )
    assert set(reported) <= set(final)  # what a spec may select on is what a trial reports
    assert result.multipliers.shape == (2,)  # one per group
    assert "multiplier" not in result.per_sample  # a dense kind: no per-sample multipliers


@pytest.mark.parametrize(
    ("method", "grid"),
    [
        ("fl", {"epsilon": [0.2, 0.4], "dual_lr": [0.05, 0.5]}),
        ("rfl", {"epsilon": [0.2, 0.4], "alpha": [0.5, 2.0], "dual_lr": [0.5]}),
        ("alm", {"epsilon": [0.2, 0.4], "rho": [0.5, 2.0], "dual_lr": [1.0]}),
    ],
)
def test_packed_members_report_their_unpacked_trials_metrics(
    method: str, grid: dict[str, Any]
) -> None:
    trials = group_loss_trials(method, grid)
    assert len(trials) == 4
    [group] = pack_groups(trials)
    assert len(group) == 4
    packed = fit_unit(trials)
    assert not packed.diverged
    for trial in trials:
        single = fit(trial)
        history = packed.results[trial.trial_id].history
        assert len(history) == len(single.history) == 4
        for at_epoch, reference in zip(history, single.history, strict=True):
            assert_same_metrics(at_epoch, reference, rel=1e-4)
        assert packed.results[trial.trial_id].multipliers.shape == (2,)  # one per group
        assert packed.results[trial.trial_id].multipliers == pytest.approx(
            single.multipliers, rel=1e-4, abs=1e-6
        )


def test_a_trial_resumed_from_its_state_dict_ends_exactly_as_an_uninterrupted_one() -> None:
    [trial] = group_loss_trials("fl", {"epsilon": 0.2, "dual_lr": 0.5})
    saved: list[dict[str, Any]] = []

    def keep_epoch_two(report: EvalReport) -> None:
        if report.epoch == 2:  # as a checkpoint holds it: a copy, not the live tensors
            saved.append(copy.deepcopy(report.state_dict()))

    straight = fit(trial, reporter=keep_epoch_two)
    resumed = fit(trial, resume=saved[0])
    assert len(resumed.history) == len(straight.history)
    for got, expected in zip(resumed.history, straight.history, strict=True):
        assert_same_metrics(got, expected, rel=0.0)
    assert resumed.multipliers.shape == (2,)
    np.testing.assert_array_equal(resumed.multipliers, straight.multipliers)


def test_an_interrupted_pack_of_the_plugin_kind_resumes_exactly() -> None:
    trials = group_loss_trials("alm", {"epsilon": [0.2, 0.4], "rho": [1.0], "dual_lr": [1.0]})
    straight = PackTrainer(trials)
    for _ in range(3):
        straight.train_epoch()
    first = PackTrainer(trials)
    first.train_epoch()
    resumed = PackTrainer(trials)
    resumed.load_state_dict(first.state_dict())
    resumed.train_epoch()
    resumed.train_epoch()
    assert resumed.multipliers.value.shape == (2, 2)  # members × groups
    expected, got = straight.evaluate(), resumed.evaluate()
    for trial in trials:
        assert_same_metrics(got[trial.trial_id], expected[trial.trial_id], rel=0.0)


def test_a_kind_that_is_not_vmap_safe_is_refused_by_packing_and_trains_alone() -> None:
    trials = group_loss_trials(
        "fl", {"epsilon": [0.2, 0.4], "dual_lr": [0.5]}, kind=plugin_kind.UNPACKABLE_NAME
    )
    assert [len(g) for g in pack_groups(trials)] == [1, 1]
    with pytest.raises(NotPackable, match="'group_mean_loss_unpacked' cannot be packed"):
        PackTrainer(trials)
    with pytest.raises(NotPackable, match="not vmap-safe"):
        fit_unit(trials)
    assert np.isfinite(fit(trials[0]).final["constraint/violation_max"])


def test_a_builder_that_does_not_import_or_is_no_constraint_kind_is_named() -> None:
    [trial] = group_loss_trials("fl", {"epsilon": 0.2})
    task = load_task(trial.task.name, trial.task.params)
    data = task.load()
    model = task.make_model(data)
    for builder, error, message in (
        ("tests.core.engine.no_such_module:Kind", ValueError, "cannot import its builder"),
        ("tests.core.engine.plugin_kind:INFO", TypeError, "not a dualtune.ConstraintKind"),
    ):
        CONSTRAINT_KINDS.unregister(plugin_kind.NAME)
        info = ConstraintKindInfo(plugin_kind.NAME, "broken", "none", GroupMeanLossParams, builder)
        register_constraint_kind(info)
        with pytest.raises(error, match=message):
            build_constraint_kind(trial, data, model, task=task)


def test_the_model_is_what_the_builder_sees() -> None:
    [trial] = group_loss_trials("fl", {"epsilon": 0.2})
    seen: list[nn.Module] = []
    original = GroupMeanLoss.from_spec.__func__  # type: ignore[attr-defined]

    def spy(cls: type[GroupMeanLoss], params: GroupMeanLossParams, context: Any) -> Any:
        seen.append(context.model)
        assert context.epsilon == 0.2
        assert context.config is trial
        return original(cls, params, context)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(GroupMeanLoss, "from_spec", classmethod(spy))
        trainer = Trainer(trial)
    assert seen == [trainer.model]
