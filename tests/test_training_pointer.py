"""Chapter 7's pointer task: well-formed data, deterministic training, and every claim the
notebook makes about the four trained methods, for seeds 0-4 (checked privately for 0-19)."""

from __future__ import annotations

import itertools

import pytest
import torch

from utils.training import pointer as pt

SEEDS = range(5)


def test_batch_is_well_formed():
    b = pt.make_batch(50, length=6, d=3, generator=torch.Generator().manual_seed(0))
    assert b.query.shape == (50, 3) and b.keys.shape == (50, 6, 3) and b.values.shape == (50, 6, 6)
    torch.testing.assert_close(b.values.sum(-1), torch.ones(50, 6))  # one-hot labels
    assert (b.values.sum(-2) == 1).all()  # a permutation: every label once
    assert torch.equal(b.target, (b.keys @ b.query[:, :, None]).squeeze(-1).argmax(-1))
    assert torch.equal(b.values[torch.arange(50), b.target].argmax(-1), b.label)


def test_identity_scores_solve_the_task():
    model = pt.PointerModel()
    with torch.no_grad():
        model.w.copy_(torch.eye(pt.D))
    assert pt.accuracy(model) == 1.0
    assert pt.accuracy(pt.PointerModel()) < 0.2  # W = 0: every score ties


def test_anneal_endpoints_and_monotone():
    taus = [pt.anneal(t, 50, 2.0, 0.1) for t in range(50)]
    assert taus[0] == pytest.approx(2.0) and taus[-1] == pytest.approx(0.1)
    assert all(a > b for a, b in itertools.pairwise(taus))


def test_straight_through_reads_one_slot_and_gets_a_gradient():
    model = pt.PointerModel("straight-through")
    batch = pt.make_batch(8, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    loss = pt.loss(model, batch)
    assert loss.item() in {-k / 8 for k in range(9)}  # the mean of 0/1 rewards: a hard read
    loss.backward()
    assert model.w.grad.abs().sum() > 0 and model.step == 1


@pytest.mark.parametrize("method", pt.METHODS)
def test_training_is_deterministic(method):
    a, b = pt.fit(method, seed=3, steps=20), pt.fit(method, seed=3, steps=20)
    assert a.history.loss == b.history.loss and torch.equal(a.model.w, b.model.w)
    assert a.history.metrics == b.history.metrics


@pytest.fixture(scope="module")
def curves():
    """{(method, seed): accuracies at eval_steps} for the notebook's runs."""
    runs = {(m, s): pt.fit(m, seed=s).history for m in pt.METHODS for s in SEEDS}
    steps = runs["soft", 0].eval_steps
    assert steps[0] == 0 and steps[-1] == pt.STEPS and 20 in steps
    return steps, {key: h.metrics["accuracy"] for key, h in runs.items()}


def test_every_method_learns(curves):
    _, acc = curves
    for (method, seed), a in acc.items():
        assert a[0] < 0.2, (method, seed, a[0])  # uniform start (chance 1/16)
        assert a[-1] > 0.75, (method, seed, a[-1])


def test_soft_forward_passes_lead_early(curves):
    """At step 20 soft and Gumbel-softmax (a blend in the forward pass) lead REINFORCE and
    straight-through (one hard pick) by more than 0.1, for every seed."""
    steps, acc = curves
    i = steps.index(20)
    for seed in SEEDS:
        hard_pick = max(acc["reinforce", seed][i], acc["straight-through", seed][i])
        for method in ("soft", "gumbel"):
            assert acc[method, seed][i] > hard_pick + 0.1, (method, seed)


def test_soft_ends_highest(curves):
    """Mean of the last three evaluations: soft above every other method by > 0.02."""
    _, acc = curves
    for seed in SEEDS:
        end = {m: sum(acc[m, seed][-3:]) / 3 for m in pt.METHODS}
        assert all(end["soft"] > end[m] + 0.02 for m in pt.METHODS if m != "soft"), (seed, end)


def test_bad_arguments():
    with pytest.raises(ValueError, match="method"):
        pt.fit("argmax")
    with pytest.raises(ValueError, match="method"):
        pt.PointerModel("argmax")
    with pytest.raises(ValueError, match="batch_size"):
        pt.fit("soft", batch_size=1)
    with pytest.raises(ValueError, match="lr"):
        pt.fit("soft", lr=0.0)
