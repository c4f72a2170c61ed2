"""Multiplier tables: dense storage, indexed reads/writes, projection for inequalities only."""

import pytest
import torch

from dualtune.core.engine.multipliers import Multipliers


def test_scatter_touches_only_the_given_indices_and_projects_inequalities() -> None:
    lam = Multipliers(6, init=1.0)
    lam.scatter_(torch.tensor([1, 4]), torch.tensor([-3.0, 2.5]))
    assert lam.value.tolist() == [1.0, 0.0, 1.0, 1.0, 2.5, 1.0]


def test_equality_multipliers_are_free() -> None:
    lam = Multipliers(3, equality=True)
    lam.scatter_(None, torch.tensor([-1.0, 0.5, -2.0]))
    assert lam.value.tolist() == [-1.0, 0.5, -2.0]


def test_gather_returns_a_copy() -> None:
    lam = Multipliers(3, init=2.0)
    got = lam.gather(torch.tensor([0, 2]))
    got.add_(10)
    assert lam.value.tolist() == [2.0, 2.0, 2.0]
    everything = lam.gather(None)
    everything.zero_()
    assert lam.value.tolist() == [2.0, 2.0, 2.0]


def test_state_round_trip_and_shape_check() -> None:
    lam = Multipliers(4)
    lam.scatter_(torch.tensor([2]), torch.tensor([0.7]))
    other = Multipliers(4)
    other.load_state_dict(lam.state_dict())
    assert torch.equal(other.value, lam.value)
    with pytest.raises(ValueError, match="shape"):
        Multipliers(5).load_state_dict(lam.state_dict())
    with pytest.raises(ValueError, match="other constraint type"):
        Multipliers(4, equality=True).load_state_dict(lam.state_dict())


def test_constructor_rejects_negative_start_for_inequalities() -> None:
    with pytest.raises(ValueError, match="must start ≥ 0"):
        Multipliers(3, init=-1.0)
