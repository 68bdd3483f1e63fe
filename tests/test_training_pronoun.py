"""Chapter 1's trained models: every claim the notebook makes, for seeds 0-4.

* "running": trained on "<name> went to the <place>. He bought <food>.", on the running
  sentence (whose John, store and milk were never seen) "He" puts > 0.9 of its weight on
  "John", its largest weight; untrained, less than 0.3; the loss falls below a third;
  "He"'s query looks for person and male and pushes every other feature away; W_V passes
  the identity code on (diagonal > 3) and drops the features (entries < 1).
* "order" ("<name> met <name> at the <place>. He bought <food>.", He = the first name):
  without positions the weights of "He" just follow the tokens when the names swap, so it
  answers both orders alike and scores <= 0.5; with the sinusoidal code it scores >= 0.95
  and puts most of its weight (> 0.5) on the first name in both orders.
"""

from __future__ import annotations

import pytest
import torch

from utils.examples import running_example
from utils.examples.running import FEATURES
from utils.training import pronoun

SEEDS = range(5)
RUNNING = pronoun.tokenize("John went to the store. He bought milk.")
JOHN_FIRST = pronoun.tokenize("John met Tom at the store. He bought milk.")
TOM_FIRST = pronoun.tokenize("Tom met John at the store. He bought milk.")


@pytest.fixture(scope="module")
def running_runs():
    return [pronoun.fit("running", seed=s) for s in SEEDS]


@pytest.fixture(scope="module")
def order_runs():
    return {pos: [pronoun.fit("order", use_positions=pos, seed=s) for s in SEEDS]
            for pos in (False, True)}


def test_running_sentence_tokens_are_the_running_example():
    assert RUNNING == running_example().tokens


def test_vocabulary_features_are_the_designed_ones_and_codes_unit_vectors():
    vocab = pronoun.vocabulary(seed=3)
    ex = running_example(torch.float32)
    assert vocab.d_model == len(FEATURES) + pronoun.D_ID == 20
    assert vocab.dims[: len(FEATURES)] == tuple(FEATURES)
    features = vocab.embed(RUNNING)[:, : len(FEATURES)]
    assert torch.equal(features, ex.x)  # the running sentence: exactly the designed features
    for name in ("Tom", "Ivan"):
        assert torch.equal(vocab.embed([name])[0, :7], ex.x[ex.index("John")])
    codes = vocab.embedding[:, len(FEATURES):]
    assert torch.allclose(codes.norm(dim=1), torch.ones(len(vocab.words)))
    assert not torch.equal(codes, pronoun.vocabulary(seed=4).embedding[:, len(FEATURES):])
    with pytest.raises(KeyError, match="Alice"):
        vocab.ids(["Alice"])


@pytest.mark.parametrize("task", ["running", "order"])
def test_held_out_words_never_in_training_sentences(task):
    vocab = pronoun.vocabulary()
    held = vocab.ids(list(pronoun.HELD_OUT.values()))
    ids, first = pronoun.sample(task, vocab, 4096, torch.Generator().manual_seed(0))
    assert not torch.isin(ids, held).any()
    template = pronoun.TEMPLATES[task]
    assert ids.shape == (4096, len(template))
    assert torch.equal(ids[:, 0], first)  # the answer is the first name
    words = [vocab.words[i] for i in ids[0]]
    assert words[template.index("He")] == "He" and words[0] in pronoun.NAMES
    if task == "order":
        assert (ids[:, 0] != ids[:, 2]).all()  # two different names
        assert set(ids[:, 2].tolist()) <= set(range(len(pronoun.NAMES)))


def test_running_he_finds_held_out_john(running_runs):
    john, he = RUNNING.index("John"), RUNNING.index("He")
    for run in running_runs:
        weights = run.model.attend(RUNNING)
        assert weights[he, john] > 0.9, (run.history.seed, weights[he])
        assert weights[he].argmax() == john
        assert torch.allclose(weights.sum(-1), torch.ones(len(RUNNING), dtype=torch.float64))
        curve = run.history.metrics["He → John"]
        assert curve[0] < 0.3 and curve[-1] == pytest.approx(weights[he, john].item(), abs=1e-6)


def test_running_learned_projections(running_runs):
    """What "He"'s query looks for in each key feature, x_He W_Q W_Kᵀ: person and male (the
    designed query's two), every other feature pushed away; W_V passes the identity code on
    (its diagonal) and hardly any feature (every name has the same features)."""
    n_features = len(FEATURES)
    for run in running_runs:
        model = run.model
        look = (model.vocab.embed(["He"])[0] @ model.w_q @ model.w_k.T).detach()
        assert (look[:2] > 0).all() and (look[2:n_features] < 0).all(), look
        w_v = model.w_v.detach()
        assert w_v[n_features:, n_features:].diagonal().min() > 3
        assert w_v[:, :n_features].abs().max() < 1


def test_running_loss_falls(running_runs):
    for run in running_runs:
        loss = run.history.loss
        assert loss[-1] < loss[0] / 3, (run.history.seed, loss[0], loss[-1])


def test_order_without_positions_cannot_tell_the_names_apart(order_runs):
    he = JOHN_FIRST.index("He")
    for run in order_runs[False]:
        model = run.model
        a, b = model.attend(JOHN_FIRST), model.attend(TOM_FIRST)
        # swapping the two names only swaps their columns: the same weight on John either way
        assert torch.allclose(a[he, 0], b[he, 2], atol=1e-6)
        assert torch.allclose(a[he, 2], b[he, 0], atol=1e-6)
        assert model.answer(JOHN_FIRST) == model.answer(TOM_FIRST)  # one answer is wrong
        assert pronoun.order_accuracy(model) <= 0.5
        assert run.history.metrics["accuracy"][-1] <= 0.5


def test_order_with_positions_reads_the_first_name(order_runs):
    he = JOHN_FIRST.index("He")
    for run in order_runs[True]:
        model = run.model
        assert run.history.metrics["accuracy"][-1] >= 0.95, run.history.seed
        for sentence in (JOHN_FIRST, TOM_FIRST):
            weights = model.attend(sentence)
            assert weights[he, 0] > 0.5, (run.history.seed, sentence[0], weights[he])
            assert weights[he].argmax() == 0


def test_deterministic_per_seed():
    a, b = pronoun.fit(seed=7, steps=20), pronoun.fit(seed=7, steps=20)
    assert a.history.loss == b.history.loss
    assert torch.equal(a.model.w_q, b.model.w_q)
    assert pronoun.fit(seed=8, steps=20).history.loss != a.history.loss


def test_model_uses_the_course_attention(monkeypatch):
    from utils import attention

    calls = []
    real = attention.self_attention
    monkeypatch.setattr(attention, "self_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    pronoun.fit(steps=2)
    assert calls


def test_fit_restores_thread_count_and_model_rejects_bad_input():
    threads = torch.get_num_threads()
    run = pronoun.fit(steps=2)
    assert torch.get_num_threads() == threads
    with pytest.raises(ValueError, match="task"):
        pronoun.fit("reverse", steps=2)
    with pytest.raises(ValueError, match="10 words"):
        run.model(torch.zeros(3, dtype=torch.long))
    assert run.model.answer(RUNNING) in (*pronoun.NAMES, "John")
