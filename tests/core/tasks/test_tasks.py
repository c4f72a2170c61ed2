"""The first tasks: real data with the sizes the papers use, models of the right shape, and a
catalog entry for each."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits, load_iris

from dualtune.core.catalog import TASKS
from dualtune.core.tasks.loading import load_task
from tests.core.tasks.fixtures import require_fashion_mnist


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_catalog_task_builds_its_data_and_model(name: str) -> None:
    required = [f for f, info in TASKS[name].params.model_fields.items() if info.is_required()]
    if required:
        pytest.skip(f"{name} needs {', '.join(required)} (user data; its own tests use fixtures)")
    if name.startswith("fashion_"):  # fashion_mnist, fashion_denoise
        require_fashion_mnist()
    task = load_task(name, {})
    data = task.load()
    torch.manual_seed(0)
    model = task.make_model(data)
    for split in (data.train, data.val):
        out = model(split.x)
        losses = task.per_sample_loss(out, split.y)
        assert losses.shape == (split.n,)
        assert torch.isfinite(losses).all()
        for codes in split.groups.values():
            assert codes.shape == (split.n,)
    assert (data.num_classes is None) == (TASKS[name].problem == "regression")
    assert set(data.group_names) == set(TASKS[name].group_attributes)


def test_loading_is_deterministic_and_cached() -> None:
    a = load_task("two_moons", {}).load()
    b = load_task("two_moons", {}).load()
    assert a is b
    c = load_task("two_moons", {"data_seed": 1}).load()
    assert not torch.equal(a.train.x, c.train.x)


def test_two_moons_is_the_feasible_learning_setting() -> None:
    task = load_task("two_moons", {})
    data = task.load()
    assert (data.train.n, data.val.n) == (512, 128)
    hidden = [
        m.out_features for m in task.make_model(data).modules() if hasattr(m, "out_features")
    ]
    assert hidden == [70, 70, 2]
    # The side attribute splits the plane at x₀ = 0.5 and the sides' positive rates differ.
    side, y = data.train.groups["side"], data.train.y
    assert torch.equal(side, (data.train.x[:, 0] >= 0.5).long())
    assert abs(y[side == 1].float().mean() - y[side == 0].float().mean()) > 0.3


def test_digits_uses_every_sklearn_digit() -> None:
    data = load_task("digits", {}).load()
    assert data.train.n + data.val.n == len(load_digits().target)
    assert data.num_classes == 10
    assert set(data.train.y.tolist()) == set(range(10))


def test_iris_svm_is_two_iris_classes_with_labels_plus_minus_one() -> None:
    task = load_task("iris_svm", {})
    data = task.load()
    _, y = load_iris(return_X_y=True)
    assert data.train.n == int(((y == 0) | (y == 1)).sum()) == 100
    assert set(data.train.y.tolist()) == {-1.0, 1.0}
    # hinge loss and margin constraint 1 − y f(x)
    out = torch.tensor([[2.0], [0.5], [-1.0]])
    labels = torch.tensor([1.0, 1.0, 1.0])
    assert task.per_sample_loss(out, labels).tolist() == [0.0, 0.5, 2.0]
    assert task.sample_constraint(out, labels).tolist() == [-1.0, 0.5, 2.0]
    model = task.make_model(data)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0, 0.0, 2.0]]))
    objective = task.objective(model)
    assert objective is not None
    assert float(objective.detach()) == pytest.approx(4.5)


def test_polyfit_is_an_overparameterised_noisy_regression() -> None:
    task = load_task("polyfit", {})
    data = task.load()
    params = sum(p.numel() for p in task.make_model(data).parameters())
    assert params > data.train.n / 2  # degree 15 on 30 points
    x = data.val.x[:, 0].numpy()
    assert np.allclose(data.val.y.numpy(), x**3 - 0.5 * x, atol=1e-6)  # val is noise-free


def test_invalid_task_parameters_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="noise"):
        load_task("two_moons", {"noise": -1})
    with pytest.raises(ValueError, match="unknown task 'mnist'; valid tasks: adult, cifar10, "):
        load_task("mnist", {})
