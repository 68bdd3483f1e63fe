"""Chapter 3's learned heads: every claim the chapter makes about them, for every seed 0..4."""

from __future__ import annotations

import pytest
import torch

from utils import multihead
from utils.training import heads as th

SEEDS = range(5)
COUNTS = (1, 2, 4)


@pytest.fixture(scope="module")
def runs():
    return {h: th.fit_seeds(h, SEEDS) for h in COUNTS}


def _roles(run):
    return th.roles(run.model)


# --- the data and the model -----------------------------------------------------------------

def test_targets_previous_and_first():
    ids = torch.tensor([[3, 1, 4, 1, 5]])
    t = th.targets(ids)
    assert t.shape == (1, 5, 2)
    assert t[0, :, 0].tolist() == [3, 3, 1, 4, 1]  # position 0 outputs itself
    assert t[0, :, 1].tolist() == [3] * 5


def test_sample_shapes_and_running_example():
    ids, answers = th.sample(8, torch.Generator().manual_seed(0))
    assert ids.shape == (8, th.LENGTH) and answers.shape == (8, th.LENGTH, 2)
    assert ids.min() >= 0 and ids.max() < len(th.WORDS)
    assert set(th.RUNNING) <= set(th.WORDS) and len(th.RUNNING) == th.LENGTH
    assert th.encode(["John", "milk"]).tolist() == [0, 8]
    with pytest.raises(KeyError, match="Paris"):
        th.encode(["John", "Paris"])


def test_model_is_the_course_multihead_with_equal_parameters():
    models = {h: th.TwoRelationsModel(h) for h in COUNTS}
    for h, m in models.items():
        assert type(m.attention) is multihead.MultiHeadAttention and m.attention.n_heads == h
        logits, weights = m(th.encode(th.RUNNING)[None])
        assert logits.shape == (1, th.LENGTH, 2, len(th.WORDS))
        assert weights.shape == (1, h, th.LENGTH, th.LENGTH)
    counts = {h: sum(p.numel() for p in m.parameters()) for h, m in models.items()}
    assert not any(name == "position" for name, _ in models[2].named_parameters())  # fixed code
    assert len(set(counts.values())) == 1, counts  # same d_model: same parameters for any H


def test_the_model_calls_split_and_merge_heads(monkeypatch):
    calls = []
    split, merge = multihead.split_heads, multihead.merge_heads
    monkeypatch.setattr(multihead, "split_heads", lambda *a: calls.append("split") or split(*a))
    monkeypatch.setattr(multihead, "merge_heads", lambda *a: calls.append("merge") or merge(*a))
    th.TwoRelationsModel(2)(th.encode(th.RUNNING))
    assert calls.count("split") == 3 and calls.count("merge") == 1


def test_head_roles_of_exact_patterns():
    n = 6
    previous = torch.zeros(n, n)
    previous[torch.arange(n), (torch.arange(n) - 1).clamp_min(0)] = 1.0
    first = torch.zeros(n, n)
    first[:, 0] = 1.0
    uniform = torch.full((n, n), 1 / n)
    table = th.head_roles(torch.stack([previous, first, uniform]))
    torch.testing.assert_close(table, torch.tensor([[1.0, 0.0], [0.0, 1.0], [1 / n, 1 / n]]))
    assert th.role_heads(table) == {"previous": 0, "first": 1}
    assert th.role_heads(table[2:]) == {"previous": None, "first": None}
    with pytest.raises(ValueError, match="L >= 3"):
        th.head_roles(torch.ones(2, 2))


def test_bad_arguments():
    for bad in (3, 0, 2.0, True):
        with pytest.raises(ValueError, match="n_heads"):
            th.fit(bad, steps=1)
    code = th.positions()
    assert code.shape == (th.LENGTH, th.D_MODEL) and (code[:, 4:] == 0).all()
    assert code[0, :4].tolist() == [4.0, 0.0, 4.0, 0.0]  # 4 × (cos 0, sin 0, cos 0, sin 0)
    with pytest.raises(ValueError, match="at most 10"):
        th.TwoRelationsModel(2)(torch.zeros(1, 11, dtype=torch.long))
    with pytest.raises(ValueError, match="seeds is empty"):
        th.fit_seeds(2, [])


def test_deterministic_per_seed_and_threads_restored():
    threads = torch.get_num_threads()
    a, b = th.fit(2, seed=7, steps=5), th.fit(2, seed=7, steps=5)
    assert a.history.loss == b.history.loss
    assert a.history.metrics == b.history.metrics
    assert torch.get_num_threads() == threads


# --- the chapter's claims, for every seed ---------------------------------------------------

@pytest.mark.parametrize("h", [2, 4])
def test_two_or_four_heads_solve_it_one_head_each_role(runs, h):
    for run in runs[h]:
        seed = run.history.seed
        assert run.history.final("eval loss") < 0.01, (h, seed)
        table = _roles(run)
        found = th.role_heads(table)
        assert None not in found.values(), (h, seed, table)
        assert found["previous"] != found["first"]
        assert table[found["previous"], 0] > 0.9 and table[found["first"], 1] > 0.9
        # and the metrics the learning curves show agree
        assert run.history.final("previous") > 0.9 and run.history.final("first") > 0.9


def test_one_head_blends_and_its_loss_stays_high(runs):
    for one, two in zip(runs[1], runs[2], strict=True):
        seed = one.history.seed
        loss1, loss2 = one.history.final("eval loss"), two.history.final("eval loss")
        assert loss1 > 0.5, (seed, loss1)
        assert loss1 > 50 * loss2, (seed, loss1, loss2)
        assert min(one.history.loss[-10:]) > 0.5, seed  # training loss too, not only eval
        table = _roles(one)[0]  # (2,): mean weight on i - 1 and on 0
        # most of its weight is on the two positions that matter; how it divides it varies
        # (seeds 0-4 split it; seed 16, tried privately, puts 0.93 on the first word)
        assert table.sum() > 0.6, (seed, table)
        assert th.role_heads(_roles(one))["previous"] is None or \
            th.role_heads(_roles(one))["first"] is None  # one softmax: never both


def _jobs(run):
    """The heads above 0.9 on i - 1, and those above 0.9 on position 0."""
    table = _roles(run)
    return tuple(tuple((table[:, r] > 0.9).nonzero().flatten().tolist()) for r in (0, 1))


def test_which_head_takes_which_role_depends_on_the_seed(runs):
    assignments = {tuple(th.role_heads(_roles(run)).values()) for run in runs[4]}
    assert len(assignments) > 1, assignments
    assert len({_jobs(run) for run in runs[4][:3]}) > 1  # the notebook's seeds 0-2


def test_learned_heads_on_the_running_example(runs):
    """The H = 2 model on "John went to the store. He bought milk." (10 words)."""
    for run in runs[2]:
        found = th.role_heads(_roles(run))
        w = run.model.attend(th.RUNNING)  # (H, L, L)
        prev, first = w[found["previous"]], w[found["first"]]
        assert prev.argmax(-1).tolist() == [0, 0, 1, 2, 3, 4, 5, 6, 7, 8]
        assert prev.diagonal(-1).mean() > 0.9 and (prev.diagonal(-1) > 0.5).all()
        assert first[:, 0].mean() > 0.9 and (first[:, 0] > 0.5).all()
        expected = [(th.RUNNING[max(i - 1, 0)], "John") for i in range(th.LENGTH)]
        assert run.model.predict(th.RUNNING) == expected
    for run in runs[1]:  # the single head: most of each row on "John" and the word before
        assert th.head_roles(run.model.attend(th.RUNNING)[0]).sum() > 0.6, run.history.seed
    # the notebook shows seed 2's single head, which splits its weight between the two
    assert th.head_roles(runs[1][2].model.attend(th.RUNNING)[0]).min() > 0.1


def test_one_head_settles_or_splits_depending_on_the_seed(runs):
    """Among the notebook's seeds 0-2 (and 0-4), some settle on one position, some split."""
    for group in (runs[1][:3], runs[1]):
        shares = [_roles(run)[0] for run in group]
        assert any(s.max() > 0.8 for s in shares) and any(s.min() > 0.2 for s in shares)


def test_eval_metrics_recorded(runs):
    h = runs[2][0].history
    assert h.eval_steps[0] == 0 and h.eval_steps[-1] == th.STEPS
    assert set(h.metrics) == {"eval loss", "previous", "first"}
    assert h.metrics["eval loss"][0] > 2.0  # untrained: about ln 16 = 2.77


def test_accuracy_of_each_half(runs):
    """H = 2 and 4 get both halves right; one head gets the half it reads more of right
    more than 3 times in 4 and the other less than half the time."""
    for h in (2, 4):
        for run in runs[h]:
            acc = th.accuracy(run.model)
            assert min(acc.values()) > 0.99, (h, run.history.seed, acc)
    for run in runs[1]:
        acc = th.accuracy(run.model)
        assert max(acc.values()) > 0.75 and min(acc.values()) < 0.5, (run.history.seed, acc)
        larger_share = th.ROLES[int(_roles(run)[0].argmax())]  # the half it reads more of
        assert acc[larger_share] == max(acc.values()), (run.history.seed, acc)


def test_ablating_one_of_two_heads_breaks_its_half_only(runs):
    """The predict-then-run exercise: zero one head of the H = 2 model."""
    for run in runs[2]:
        found = th.role_heads(_roles(run))
        for role, other in (("previous", "first"), ("first", "previous")):
            acc = th.accuracy(run.model, ablate=found[role])
            assert acc[role] < 0.3 and acc[other] > 0.99, (run.history.seed, role, acc)
    model = runs[2][0].model
    before = th.accuracy(model)
    with th.ablated(model, 0):
        pass
    assert th.accuracy(model) == before  # the hook is removed afterwards
    with pytest.raises(ValueError, match="head must be"):
        th.accuracy(model, ablate=2)
