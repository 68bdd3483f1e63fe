"""The sinusoidal position code against its formula (Vaswani et al. 2017, §3.5)."""

from __future__ import annotations

import math

import pytest
import torch

from utils import positions


def test_formula_entry_by_entry():
    n, d = 7, 6
    code = positions.sinusoidal(n, d, dtype=torch.float64)
    assert code.shape == (n, d) and code.dtype == torch.float64
    for p in range(n):
        for i in range(d // 2):
            angle = p / 10000 ** (2 * i / d)
            assert code[p, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-15)
            assert code[p, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-15)


def test_properties():
    code = positions.sinusoidal(50, 20)
    assert code.dtype == torch.float32
    assert code.abs().max() <= 1
    assert torch.equal(code[0], torch.tensor([0.0, 1.0] * 10))  # position 0: sin 0, cos 0
    assert torch.cdist(code, code).add(torch.eye(50)).min() > 0.1  # every position differs
    # each sin/cos pair has norm 1, so every row has norm sqrt(d / 2)
    assert torch.allclose(code.norm(dim=1), torch.full((50,), math.sqrt(10)))
    # the dot product of two positions depends only on their distance
    gram = code.double() @ code.double().T
    assert torch.allclose(gram.diagonal(3)[:-1], gram.diagonal(3)[1:], atol=1e-5)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((0, 4), {}, ValueError, "n must be >= 1"),
        ((4, 5), {}, ValueError, "even"),
        ((4, 0), {}, ValueError, "even"),
        ((4.0, 4), {}, TypeError, "n must be an int"),
        ((4, True), {}, TypeError, "d must be an int"),
        ((4, 4), {"base": 1.0}, ValueError, "base"),
        ((4, 4), {"dtype": torch.int64}, TypeError, "floating-point"),
    ],
)
def test_bad_arguments(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        positions.sinusoidal(*args, **kwargs)
