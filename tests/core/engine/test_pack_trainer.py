"""A pack trains each member exactly as its own trial would: same metrics (to float32
round-off), same state format, members isolated from each other's divergence."""

from typing import Any

import pytest

from dualtune.core.engine.fit import fit, fit_unit
from dualtune.core.engine.pack_trainer import NotPackable, PackTrainer
from dualtune.core.engine.trainer import Trainer
from dualtune.core.spec import SweepSpec, TrialConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def digits_trials(method: str, grid: dict[str, Any], **overrides: Any) -> list[TrialConfig]:
    doc: dict[str, Any] = {
        "name": "pack",
        "task": {"name": "digits", "params": {"hidden": [32]}},
        "constraint": {"kind": "sample_loss"},
        "methods": [method],
        "grid": {**grid, "seed": 0},
        "train": {"epochs": 4, "batch_size": 128, "optimizer": {"name": "adam", "lr": 0.01}},
    }
    doc.update(overrides)
    return SweepSpec.model_validate(doc).trials()


def assert_same_metrics(packed: dict[str, float], single: dict[str, float], rel: float) -> None:
    assert packed.keys() == single.keys()
    for name, value in single.items():
        if not name.startswith("time/"):
            assert packed[name] == pytest.approx(value, rel=rel, abs=1e-6), name


@pytest.mark.parametrize(
    ("method", "grid"),
    [
        ("fl", {"epsilon": [0.1, 0.3], "dual_lr": [0.05, 0.5], "lr": [0.01, 0.003]}),
        ("rfl", {"epsilon": [0.1, 0.3], "alpha": [0.5, 2.0], "dual_lr": [0.05, 0.5]}),
        ("alm", {"epsilon": [0.1, 0.3], "rho": [0.5, 2.0], "dual_lr": [0.05, 1.0]}),
    ],
)
def test_every_member_reports_its_unpacked_trials_metrics_at_every_epoch(
    method: str, grid: dict[str, Any]
) -> None:
    trials = digits_trials(method, grid)
    assert len(trials) == 8
    packed = fit_unit(trials)
    assert not packed.diverged
    for trial in trials:
        single = fit(trial)
        history = packed.results[trial.trial_id].history
        assert len(history) == len(single.history) == 4
        for at_epoch, reference in zip(history, single.history, strict=True):
            assert_same_metrics(at_epoch, reference, rel=1e-4)
        assert packed.results[trial.trial_id].per_sample["multiplier"] == pytest.approx(
            single.per_sample["multiplier"], rel=1e-4, abs=1e-6
        )


def test_sgd_with_momentum_weight_decay_and_nupi_pack_like_single_trials() -> None:
    trials = digits_trials(
        "fl",
        {"epsilon": [0.1, 0.3], "dual_lr": [0.05], "kp": [0.0, 1.0], "lr": [0.02, 0.01]},
        train={
            "epochs": 3,
            "batch_size": 128,
            "optimizer": {"name": "sgd", "lr": 0.02, "momentum": 0.9, "weight_decay": 1e-4},
        },
        dual={"optimizer": {"name": "nupi", "nu": 0.5}},
    )
    packed = fit_unit(trials)
    for trial in trials:
        assert_same_metrics(packed.results[trial.trial_id].final, fit(trial).final, rel=1e-4)


@pytest.mark.parametrize(
    "dual",
    [
        {"scheme": "extragradient"},
        {"scheme": "extragradient", "optimizer": {"name": "nupi", "kp": 1.0}, "restart": True},
        {"scheme": "alternating_primal_first", "restart": True},
    ],
    ids=["extragradient", "extragradient-nupi-restart", "primal-first-restart"],
)
def test_schemes_and_restarts_pack_like_single_trials(dual: dict[str, Any]) -> None:
    trials = digits_trials(
        "rfl",
        {"epsilon": [1.5, 2.0], "alpha": [2.0], "dual_lr": [0.05, 0.5]},
        train={"epochs": 2, "batch_size": 128, "optimizer": {"name": "adam", "lr": 0.01}},
        dual=dual,
    )
    packed = fit_unit(trials)
    for trial in trials:
        single = fit(trial)
        assert_same_metrics(packed.results[trial.trial_id].final, single.final, rel=1e-4)
        lam = packed.results[trial.trial_id].per_sample["multiplier"]
        assert lam == pytest.approx(single.per_sample["multiplier"], rel=1e-4, abs=1e-6)
        if dual.get("restart"):
            # Restarts leave a satisfied sample's λ at 0: many are, after two epochs.
            assert 0 < int((lam > 0).sum()) < len(lam)


@pytest.mark.parametrize(
    ("constraint", "grid"),
    [
        # proxy constraints (the default): the dual step on the hard rates
        ({"kind": "group_rate", "attribute": "sex", "equality": True}, {}),
        ({"kind": "group_rate", "attribute": "race", "rate": "error"}, {"epsilon": [0.01]}),
        ({"kind": "equalized_odds", "attribute": "sex"}, {"epsilon": [0.005, 0.02]}),
        ({"kind": "bounded_group_loss", "attribute": "race"}, {"epsilon": [0.3]}),
    ],
    ids=["dp-equality", "error-rate", "equalized-odds", "bounded-group-loss"],
)
def test_group_constraints_pack_like_single_trials(
    constraint: dict[str, Any], grid: dict[str, Any]
) -> None:
    trials = SweepSpec.model_validate(
        {
            "name": "dp",
            "task": {"name": "adult", "params": {}},
            "constraint": constraint,
            "methods": ["fl", "alm"],
            "grid": {"dual_lr": [0.05, 0.5], "rho": [1.0], **grid},
            "train": {"epochs": 2, "batch_size": 4096},
        }
    ).trials()
    for method in ("fl", "alm"):
        members = [t for t in trials if t.method == method]
        assert len(members) >= 2
        packed = fit_unit(members)
        for trial in members:
            single = fit(trial)
            assert_same_metrics(packed.results[trial.trial_id].final, single.final, rel=1e-4)
            assert packed.results[trial.trial_id].multipliers == pytest.approx(
                single.multipliers, rel=1e-4, abs=1e-6
            )


def test_a_diverging_member_is_taken_out_and_the_others_train_as_without_it() -> None:
    trials = digits_trials("fl", {"epsilon": [0.2], "dual_lr": [0.1], "lr": [0.01, 1e9, 0.003]})
    exploding = next(t for t in trials if t.params["lr"] == 1e9)
    calm = [t for t in trials if t is not exploding]
    with_it = fit_unit(trials)
    without_it = fit_unit(calm)
    assert set(with_it.diverged) == {exploding.trial_id}
    assert "diverged at epoch 1" in str(with_it.diverged[exploding.trial_id])
    assert set(with_it.results) == {t.trial_id for t in calm}
    for trial in calm:
        ours, reference = with_it.results[trial.trial_id], without_it.results[trial.trial_id]
        for at_epoch, expected in zip(ours.history, reference.history, strict=True):
            assert_same_metrics(at_epoch, expected, rel=1e-6)


def test_a_members_state_is_its_trials_state_and_continues_unpacked() -> None:
    trials = digits_trials("rfl", {"epsilon": [0.1, 0.3], "alpha": [1.0], "dual_lr": [0.1]})
    pack = PackTrainer(trials)
    pack.train_epoch()
    pack.train_epoch()
    state = pack.member_state_dict(1)
    assert state.keys() == Trainer(trials[1]).state_dict().keys()

    alone = Trainer(trials[1])
    alone.load_state_dict(state)
    alone.train_epoch()
    pack.train_epoch()
    assert_same_metrics(pack.evaluate()[trials[1].trial_id], alone.evaluate(), rel=1e-4)


def test_an_interrupted_pack_resumes_exactly() -> None:
    trials = digits_trials("alm", {"epsilon": [0.1, 0.3], "rho": [1.0], "dual_lr": [0.1]})
    straight = PackTrainer(trials)
    for _ in range(3):
        straight.train_epoch()

    first = PackTrainer(trials)
    first.train_epoch()
    saved = first.state_dict()
    resumed = PackTrainer(trials)
    resumed.load_state_dict(saved)
    resumed.train_epoch()
    resumed.train_epoch()
    expected, got = straight.evaluate(), resumed.evaluate()
    for trial in trials:
        assert_same_metrics(got[trial.trial_id], expected[trial.trial_id], rel=0.0)


def test_trials_that_differ_in_more_than_scalar_settings_do_not_pack() -> None:
    seeds = SweepSpec.model_validate(
        {
            "name": "seeds",
            "task": {"name": "digits", "params": {}},
            "constraint": {"kind": "sample_loss"},
            "methods": ["fl"],
            "grid": {"seed": [0, 1]},
        }
    ).trials()
    with pytest.raises(NotPackable, match="differ in more than"):
        PackTrainer(seeds)


def test_a_pde_task_cannot_pack_and_says_why() -> None:
    trials = SweepSpec.model_validate(
        {
            "name": "pinn",
            "task": {"name": "convection", "params": {}},
            "constraint": {"kind": "pinn_residual"},
            "methods": ["fl"],
            "grid": {"dual_lr": [0.01, 0.1]},
        }
    ).trials()
    with pytest.raises(NotPackable, match="input derivatives"):
        PackTrainer(trials)


def test_alm_members_with_and_without_a_penalty_schedule_pack_like_single_trials() -> None:
    trials = digits_trials(
        "alm",
        {"epsilon": [0.3], "rho": [0.5, 2.0], "rho_growth": [1.0, 1.5], "rho_max": [10.0]},
        train={"epochs": 2, "batch_size": 128, "optimizer": {"name": "adam", "lr": 0.01}},
    )
    packed = fit_unit(trials)
    for trial in trials:
        single = fit(trial)
        assert_same_metrics(packed.results[trial.trial_id].final, single.final, rel=1e-4)
        assert packed.results[trial.trial_id].per_sample["multiplier"] == pytest.approx(
            single.per_sample["multiplier"], rel=1e-4, abs=1e-6
        )
    pack = PackTrainer(trials)
    pack.train_epoch()  # every sample's first look: accepted
    pack.train_epoch()
    grown = [float(pack.member_state_dict(i)["method"]["rho"].max()) for i in range(4)]
    rho = [t.params["rho"] for t in trials]
    growth = [t.params["rho_growth"] for t in trials]
    assert [g > r for g, r in zip(grown, rho, strict=True)] == [x > 1 for x in growth]


def test_sal_members_keep_their_own_penalty_schedule() -> None:
    trials = SweepSpec.model_validate(
        {
            "name": "sal",
            "task": {"name": "digits", "params": {"hidden": [32]}},
            "constraint": {"kind": "weight_norm"},
            "methods": ["sal"],
            "grid": {"epsilon": [1.0, 10.0], "rho": [0.1, 1.0], "rho_growth": [1.5]},
            "train": {"epochs": 3, "batch_size": 128},
        }
    ).trials()
    packed = fit_unit(trials)
    pack = PackTrainer(trials)
    pack.train_epoch()
    rhos = {tuple(pack.member_state_dict(i)["method"]["rho"].tolist()) for i in range(len(trials))}
    assert len(rhos) > 1  # the members' ρ schedules differ
    for trial in trials:
        assert_same_metrics(packed.results[trial.trial_id].final, fit(trial).final, rel=1e-4)
