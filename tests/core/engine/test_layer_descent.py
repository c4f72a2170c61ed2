"""``layer_descent``: layerwise descent constraints on a model with a readout per block.

g_l = ℓ̄_{l+1} − (1 − ε) ℓ̄_l ≤ 0 (arXiv 2601.17257). Checked against hand computations on
stub models with known readouts, through spec validation and ``core.fit``, and on digits
against the paper's qualitative claims (docs/layer_descent.md has the measured numbers).
"""

import copy
import itertools
import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from dualtune import core
from dualtune.core.catalog import METHODS
from dualtune.core.engine.build import build_constraint_kind, build_method, constraint_epsilon
from dualtune.core.engine.constraints import Batch, LayerDescent, layer_losses
from dualtune.core.engine.evaluation import evaluate_split
from dualtune.core.engine.trainer import Trainer
from dualtune.core.spec import SpecError, TrialConfig, load_spec
from dualtune.core.tasks.base import Dataset, Split, Task
from dualtune.core.tasks.readout_models import ReadoutMLP, ResidualBlock

MakeTrial = Callable[..., TrialConfig]


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Train on one thread, as the worker does (``DUALTUNE_TORCH_THREADS``): these models
    are tiny, and on a loaded machine two intra-op threads spin for each other (measured
    here: the claim test took 11 s of CPU on one thread, 190 s on two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


RESMLP = {"name": "digits", "params": {"model": "resmlp", "blocks": 3, "width": 16}}
LAYER_DESCENT = {"kind": "layer_descent"}


class Classifier(Task):
    """A classification task with no data of its own: only its loss is used."""

    problem = "classification"

    def load(self) -> Dataset:
        raise NotImplementedError

    def make_model(self, data: Dataset) -> nn.Module:
        raise NotImplementedError


class LinearLoss(Classifier):
    """ℓ_i = the first output column, so readouts set the losses exactly."""

    def per_sample_loss(self, output: Tensor, y: Tensor) -> Tensor:
        return output[:, 0]


class ScaledReadouts(nn.Module):
    """Readout l is s_l · x: known logits for every block."""

    def __init__(self, scales: list[float]) -> None:
        super().__init__()
        self.scales = torch.tensor(scales, dtype=torch.float64)

    @property
    def num_readouts(self) -> int:
        return len(self.scales)

    def forward_readouts(self, x: Tensor) -> Tensor:
        return self.scales[:, None, None] * x

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_readouts(x)[-1]

    def take_readouts(self, x: Tensor, output: Tensor) -> Tensor:
        return self.forward_readouts(x)


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


# Two samples of class 0 with logit margins x_0 − x_1 of +2 and −1: at scale s their
# cross-entropies are softplus(−2s) (falls with depth) and softplus(s) (rises).
X = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
Y = torch.tensor([0, 0])
SCALES = [1.0, 2.0, 3.0]


def hand_layer_means() -> list[float]:
    return [(softplus(-2 * s) + softplus(s)) / 2 for s in SCALES]


def test_constraint_values_and_metrics_match_a_hand_computation() -> None:
    kind = LayerDescent(3, epsilon=0.1, noise_std=0.0)
    task, model, split = Classifier(None), ScaledReadouts(SCALES), Split(X, Y)  # type: ignore[arg-type]
    m = hand_layer_means()
    expected = [m[1] - 0.9 * m[0], m[2] - 0.9 * m[1]]

    observed = kind.observe(task, model, model(X), Batch(X, Y, torch.arange(2)))
    assert observed.index is None  # both transitions observed on every batch
    assert observed.values.tolist() == pytest.approx(expected, rel=1e-12)
    with torch.no_grad():
        output = model(X)
        assert kind.evaluate(task, model, output, split).tolist() == pytest.approx(
            expected, rel=1e-12
        )
        metrics = kind.extra_metrics(task, model, output, split, "val")
    # Sample 0's loss falls at every block, sample 1's rises: half the samples descend.
    assert float(metrics["val/descent_frac"]) == 0.5
    # No noise: the final readout's accuracy; sample 1 (margin −1) is misclassified.
    assert float(metrics["val/noisy_accuracy"]) == 0.5
    assert set(metrics) == {"val/descent_frac", "val/noisy_accuracy"}


def test_noisy_accuracy_uses_fixed_gaussian_noise_of_noise_std() -> None:
    x = torch.randn(200, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    y = (x[:, 1] > x[:, 0]).long()  # the clean final readout is always right
    task, model, split = Classifier(None), ScaledReadouts(SCALES), Split(x, y)  # type: ignore[arg-type]
    kind = LayerDescent(3, epsilon=0.0, noise_std=0.7, noise_seed=3)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=x.dtype)
    noisy = x + 0.7 * noise
    hand = ((noisy[:, 1] > noisy[:, 0]).long() == y).double().mean()
    with torch.no_grad():
        first = kind.extra_metrics(task, model, model(x), split, "train")
        again = kind.extra_metrics(task, model, model(x), split, "train")
    assert float(first["train/noisy_accuracy"]) == pytest.approx(float(hand))
    assert 0.5 < float(hand) < 1.0  # the noise flips some predictions, not most
    assert float(again["train/noisy_accuracy"]) == float(first["train/noisy_accuracy"])


def test_epsilon_is_folded_in_so_exactly_one_minus_epsilon_is_feasible() -> None:
    # Layer means 1, ½, ¼ (exact in binary): each transition is exactly (1 − ε)·previous
    # at ε = ½, so g = 0 ≤ 0 is feasible; any larger ε makes both infeasible.
    task, split = LinearLoss(None), Split(torch.ones(4, 1), torch.zeros(4))  # type: ignore[arg-type]
    model = ScaledReadouts([1.0, 0.5, 0.25])
    with torch.no_grad():
        losses = layer_losses(task, model.forward_readouts(split.x), split.y)
    assert losses.tolist() == [[1.0] * 4, [0.5] * 4, [0.25] * 4]
    for epsilon, feasible in ((0.5, 1.0), (0.5 + 1e-6, 0.0), (0.3, 1.0)):
        kind = LayerDescent(3, epsilon=epsilon, noise_std=0.0)
        ev = evaluate_split(task, model, kind, split, prefix="train", epsilon=0.0)
        if epsilon == 0.5:
            assert ev.constraint_values.tolist() == [0.0, 0.0]
        assert float(ev.metrics["train/feasible_frac"]) == feasible


def test_build_folds_the_trial_epsilon_into_the_kind_and_runs_the_method_at_zero(
    trial: MakeTrial,
) -> None:
    config = trial("fl", task=RESMLP, constraint=LAYER_DESCENT, grid={"epsilon": 0.2})
    model = ReadoutMLP(64, 16, 3, 10)
    kind = build_constraint_kind(config, None, model)  # type: ignore[arg-type]
    assert isinstance(kind, LayerDescent)
    assert (kind.epsilon, kind.num_constraints(), kind.noise_std) == (0.2, 2, 0.5)
    assert constraint_epsilon(config, kind) == 0.0
    assert build_method(config, kind).epsilon == 0.0


def test_layer_descent_refuses_a_model_without_readouts(trial: MakeTrial) -> None:
    config = trial("fl", task=RESMLP, constraint=LAYER_DESCENT, grid={"epsilon": 0.2})
    with pytest.raises(ValueError, match=r"readout after every block.*Sequential has none"):
        build_constraint_kind(config, None, nn.Sequential(nn.Linear(64, 10)))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"num_readouts": 1, "epsilon": 0.0, "noise_std": 0.0}, "at least 2 readouts"),
        ({"num_readouts": 3, "epsilon": 1.0, "noise_std": 0.0}, "needs ε < 1, got 1.0"),
        ({"num_readouts": 3, "epsilon": 0.0, "noise_std": -1.0}, "noise_std must be ≥ 0"),
    ],
)
def test_layer_descent_checks_its_arguments(args: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LayerDescent(args.pop("num_readouts"), **args)


# -- the readout model


def test_readout_model_forward_is_the_last_readout_of_a_shared_head() -> None:
    torch.manual_seed(0)
    model = ReadoutMLP(5, 8, 3, 4)
    x = torch.randn(6, 5)
    readouts = model.forward_readouts(x)
    assert readouts.shape == (3, 6, 4)
    assert torch.equal(model(x), readouts[-1])
    # Readout l is the shared head on the residual stream after block l.
    z = model.embed(x)
    for block, readout in zip(model.blocks, readouts, strict=True):
        assert isinstance(block, ResidualBlock)
        z = z + block.mlp(block.norm(z))
        assert torch.allclose(model.head(model.norm_out(z)), readout)


def test_training_forward_hands_its_readouts_to_the_kind_once_without_a_second_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch.manual_seed(0)
    model = ReadoutMLP(5, 8, 3, 4)
    x = torch.randn(6, 5)
    output = model(x)
    calls = 0
    original = model.forward_readouts

    def counted(inputs: Tensor) -> Tensor:
        nonlocal calls
        calls += 1
        return original(inputs)

    monkeypatch.setattr(model, "forward_readouts", counted)
    kept = model.take_readouts(x, output)
    assert calls == 0
    assert torch.equal(kept[-1], output)
    kept.sum().backward()  # type: ignore[no-untyped-call]  # the kept graph is differentiable
    assert model.embed.weight.grad is not None
    # Taken once: a second request (or another output) recomputes.
    assert torch.equal(model.take_readouts(x, output), kept)
    assert calls == 1
    with torch.no_grad():
        model(x)
    assert model._kept is None  # evaluation keeps no graph


def test_a_model_with_kept_readouts_can_be_copied() -> None:
    model = ReadoutMLP(5, 8, 2, 4)
    model(torch.randn(3, 5))
    clone = copy.deepcopy(model)
    assert clone._kept is None
    assert torch.equal(clone.head.weight, model.head.weight)


@pytest.mark.parametrize("bad", ["in_features", "width", "blocks", "out_features"])
def test_readout_model_checks_its_sizes(bad: str) -> None:
    sizes = {"in_features": 5, "width": 8, "blocks": 2, "out_features": 4, bad: 0}
    with pytest.raises(ValueError, match=f"ReadoutMLP {bad} must be ≥ 1, got 0"):
        ReadoutMLP(**sizes)


# -- spec validation


BASE: dict[str, Any] = {
    "name": "ld",
    "task": RESMLP,
    "constraint": LAYER_DESCENT,
    "methods": ["erm", "fl"],
    "grid": {"epsilon": [0.05, 0.1]},
}


def errors_of(**overrides: Any) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as info:
        load_spec({**BASE, **overrides})
    return [(e["field"], e["message"]) for e in info.value.errors]


def test_spec_rejects_layer_descent_on_the_plain_digits_mlp() -> None:
    assert errors_of(task={"name": "digits"}) == [
        (
            "task.params.model",
            "layer_descent needs a model with a readout after every block; task 'digits' "
            "has model 'mlp': set task.params.model: resmlp",
        )
    ]


def test_spec_rejects_layer_descent_on_a_task_without_it() -> None:
    [(field, message)] = errors_of(task={"name": "two_moons"})
    assert field == "constraint.kind"
    assert message.startswith(
        "task 'two_moons' does not support constraint kind 'layer_descent'; kinds for "
        "two_moons: sample_loss"
    )
    assert "layer_descent" not in message.split(": ", 1)[1]


def test_spec_rejects_a_single_block_and_epsilon_of_one_or_more() -> None:
    assert errors_of(
        task={"name": "digits", "params": {"model": "resmlp", "blocks": 1}},
        grid={"epsilon": [0.5, 1.0, 2.0]},
    ) == [
        (
            "task.params.blocks",
            "layer_descent constrains block transitions and needs blocks ≥ 2, got 1",
        ),
        (
            "grid.epsilon",
            "layer_descent needs ε < 1 (the bound is (1 − ε) × the previous layer's loss), "
            "got [1.0, 2.0]",
        ),
    ]


def test_spec_rejects_methods_that_do_not_apply() -> None:
    [(field, message)] = errors_of(methods=["cserm"])
    assert field == "methods.0"
    assert "method 'cserm' does not apply to constraint kind 'layer_descent'" in message


def test_spec_accepts_resmlp_sweeps_epsilon_and_selects_on_descent_frac() -> None:
    spec = load_spec(
        {
            **BASE,
            "constraint": {"kind": "layer_descent", "noise_std": 0.3},
            "selection": {
                "metric": "val/descent_frac",
                "mode": "max",
                "subject_to": {"val/noisy_accuracy": {"min": 0.4}},
            },
        }
    )
    trials = spec.trials()
    # ε is a swept grid key: FL runs once per ε, ERM once (measured at the smallest ε).
    assert [(t.method, t.value("epsilon")) for t in trials] == [
        ("erm", 0.05),
        ("fl", 0.05),
        ("fl", 0.1),
    ]
    assert spec.constraint.uses_epsilon


# -- training


LAYER_DESCENT_METHODS = [m for m, info in METHODS.items() if "layer_descent" in info.kinds]
EXTRA = {f"{s}/{m}" for s in ("train", "val") for m in ("descent_frac", "noisy_accuracy")}


def test_every_method_but_cserm_fits_layer_descent() -> None:
    assert set(LAYER_DESCENT_METHODS) == set(METHODS) - {"cserm"}


@pytest.mark.parametrize("method", LAYER_DESCENT_METHODS)
def test_fit_trains_digits_resmlp_under_layer_descent(trial: MakeTrial, method: str) -> None:
    grid = {"epsilon": 0.05} if "epsilon" in METHODS[method].grid_keys else {}
    config = trial(
        method,
        task=RESMLP,
        constraint=LAYER_DESCENT,
        grid=grid,
        train={"epochs": 3, "batch_size": 128, "optimizer": {"name": "adam", "lr": 0.01}},
    )
    result = core.fit(config)
    assert set(result.final) >= EXTRA
    assert result.multipliers is not None
    assert result.multipliers.shape == (2,)  # one per block transition (3 blocks)
    assert result.final["val/accuracy"] > 0.3  # learned something in three epochs
    for name in EXTRA:
        assert 0.0 <= result.final[name] <= 1.0


def test_resume_under_layer_descent_matches_an_uninterrupted_run(trial: MakeTrial) -> None:
    config = trial(
        "rfl",
        task=RESMLP,
        constraint=LAYER_DESCENT,
        grid={"epsilon": 0.05, "alpha": 1.0, "dual_lr": 0.5},
        train={"epochs": 4, "batch_size": 128, "optimizer": {"name": "adam", "lr": 0.01}},
    )
    uninterrupted = core.fit(config)
    states: dict[int, dict[str, Any]] = {}
    core.fit(config, reporter=lambda r: states.update({r.epoch: copy.deepcopy(r.state_dict())}))
    resumed = core.fit(config, resume=states[2])
    strip = [{k: v for k, v in h.items() if not k.startswith("time/")} for h in resumed.history]
    assert strip == [
        {k: v for k, v in h.items() if not k.startswith("time/")} for h in uninterrupted.history
    ]


# -- the paper's claims on digits


def train(config: TrialConfig) -> tuple[dict[str, float], list[float]]:
    """Train a trial; its final metrics and the per-layer mean training losses."""
    trainer = Trainer(config)
    while trainer.epoch < config.train.epochs:
        trainer.train_epoch()
    metrics = trainer.evaluate()
    model, data = trainer.model, trainer.data
    assert isinstance(model, ReadoutMLP)
    with torch.no_grad():
        readouts = model.forward_readouts(data.train.x)
        means = layer_losses(trainer.task, readouts, data.train.y).mean(dim=1)
    return metrics, means.tolist()


def test_descent_constraints_order_the_layers_and_leave_per_sample_descent_incomplete(
    trial: MakeTrial,
) -> None:
    """FL with ε = 0.05 ends with every transition satisfied on train: the per-layer mean
    loss falls by at least 5 % per block. Per sample, descent at every block stays short of
    100 % (the paper's "per-sample satisfaction remains challenging"). The shared readout
    makes ERM's layers descend too; FL's descent_frac and noisy accuracy are not above
    ERM's at this budget (docs/layer_descent.md: 10 seeds, no difference)."""
    task = {"name": "digits", "params": {"model": "resmlp", "blocks": 4, "width": 64}}
    train_section = {"epochs": 60, "batch_size": 128, "optimizer": {"name": "adam", "lr": 0.001}}
    fl, fl_layers = train(
        trial(
            "fl",
            task=task,
            constraint=LAYER_DESCENT,
            grid={"epsilon": 0.05, "dual_lr": 0.5},
            train=train_section,
        )
    )
    erm, erm_layers = train(trial("erm", task=task, constraint=LAYER_DESCENT, train=train_section))

    for layers in (fl_layers, erm_layers):
        assert all(b < a for a, b in itertools.pairwise(layers)), layers
    assert fl["train/feasible_frac"] == 1.0
    for metrics in (fl, erm):
        assert 0.5 < metrics["train/descent_frac"] < 1.0
        # Noise of std 0.5 on [0, 1] pixels costs accuracy, but the model stays above chance.
        assert 0.1 < metrics["val/noisy_accuracy"] < metrics["val/accuracy"]
