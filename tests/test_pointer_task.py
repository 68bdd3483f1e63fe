"""The pointer task: well-formed data, deterministic training, every method learns."""

from __future__ import annotations

import itertools

import pytest
import torch

from utils import pointer_task as pt


def test_batch_is_well_formed():
    b = pt.make_batch(50, length=6, d=3, generator=torch.Generator().manual_seed(0))
    assert b.query.shape == (50, 3) and b.keys.shape == (50, 6, 3) and b.values.shape == (50, 6, 6)
    torch.testing.assert_close(b.values.sum(-1), torch.ones(50, 6))  # one-hot labels
    assert (b.values.sum(-2) == 1).all()  # a permutation: every label once
    assert torch.equal(b.target, (b.keys @ b.query[:, :, None]).squeeze(-1).argmax(-1))
    assert torch.equal(b.values[torch.arange(50), b.target].argmax(-1), b.label)


def test_identity_scores_solve_the_task():
    b = pt.make_batch(200, generator=torch.Generator().manual_seed(1))
    assert (pt.pointer_scores(torch.eye(8), b).argmax(-1) == b.target).all()


def test_anneal_endpoints_and_monotone():
    taus = [pt.anneal(t, 50, 2.0, 0.1) for t in range(50)]
    assert taus[0] == pytest.approx(2.0) and taus[-1] == pytest.approx(0.1)
    assert all(a > b for a, b in itertools.pairwise(taus))


@pytest.mark.parametrize("method", pt.METHODS)
def test_training_is_deterministic_and_learns(method):
    a = pt.train(method, steps=120, seed=3)
    b = pt.train(method, steps=120, seed=3)
    assert a.accuracy == b.accuracy and a.reward == b.reward and torch.equal(a.w, b.w)
    assert a.accuracy[0] < 0.2  # W = 0: uniform attention, ties broken at slot 0
    assert a.final_accuracy > 0.6  # chance is 1/16
    assert len(a.reward) == 120 and a.eval_steps[-1] == 120
    assert (len(a.taus) == 120) == (method == "gumbel")


def test_bad_arguments():
    with pytest.raises(ValueError, match="method"):
        pt.train("argmax")
    with pytest.raises(ValueError, match="batch_size"):
        pt.train("soft", batch_size=1)
    with pytest.raises(ValueError, match="lr"):
        pt.train("soft", lr=0.0)
