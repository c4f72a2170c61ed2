"""A number as a cached 0-d tensor operand computes exactly what the number does."""

import pytest
import torch

from dualtune.core.engine.operands import operand


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("value", [0.7, -0.5 / 0.8, 1e-3, 3.0])
def test_a_0d_operand_gives_the_numbers_results_bit_for_bit(
    dtype: torch.dtype, value: float
) -> None:
    x = torch.randn(4096, generator=torch.Generator().manual_seed(0), dtype=dtype)
    c = operand(value, x)
    assert isinstance(c, torch.Tensor)
    assert c.ndim == 0
    assert c.dtype == dtype
    assert torch.equal(x - c, x - value)
    assert torch.equal(x * c, x * value)
    assert torch.equal(c * x, value * x)
    assert torch.equal(x / c, x / value)
    assert torch.equal(x >= c, x >= value)
    assert operand(value, x) is c  # cached, not rebuilt each step


def test_tensors_and_reduced_precision_keep_their_operand() -> None:
    member_values = torch.ones(3, 1)
    assert operand(member_values, torch.zeros(3, 5)) is member_values
    for dtype in (torch.float16, torch.bfloat16):
        assert operand(0.7, torch.zeros(2, dtype=dtype)) == 0.7
