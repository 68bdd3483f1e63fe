"""Chapter 4's tiny causal language model: the language, the model, and every claim the
notebook makes about the trained models, for seeds 0-4 (with and without the causal mask)."""

from __future__ import annotations

import math

import pytest
import torch

from utils.kv_cache import KVCache
from utils.training import language

SEEDS = range(5)
#: the notebook's evaluation sentences and sampling seed
TEST_SEED, SAMPLE_SEED, N_TEST = 2024, 0, 200


def test_the_language():
    assert len(language.RULES) == len(language.WORDS) == 12
    assert all(len(set(r)) == 2 for r in language.RULES)  # two different successors each
    successors = sorted(w for r in language.RULES for w in r)
    assert successors == sorted(list(range(12)) * 2)  # every word is reachable, twice
    assert language.FLOOR == pytest.approx(math.log(2))
    x = language.sentences(500, torch.Generator().manual_seed(0))
    assert x.shape == (500, language.LENGTH) and x.dtype == torch.long
    assert language.follows_grammar(x).all()
    # each rule's two successors are equally likely; the first two words are free
    after_ba = x[:, 2:][x[:, :-2] == 0]
    counts = torch.bincount(after_ba, minlength=12)
    assert set(torch.nonzero(counts).flatten().tolist()) == set(language.RULES[0])
    assert abs(counts[language.RULES[0][0]] / counts.sum() - 0.5) < 0.1
    assert len(set(x[:, 1].tolist())) == 12
    random = torch.randint(0, 12, (500, language.LENGTH), generator=torch.Generator().manual_seed(1))
    assert language.follows_grammar(random).float().mean() < 0.01
    assert language.decode([0, 4, 11]) == "ba ka tu"
    assert language.decode(torch.tensor([1, 2])) == "di fo"
    # ka (4) allows ra or fo two places later, not le; di (1) allows mi or tu
    assert language.decode([0, 4, 1, 5, 11], mark=True) == "ba ka di [le] tu"


def test_bad_inputs_are_named():
    model = language.TinyLM()
    with pytest.raises(TypeError, match="tokens"):
        model(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"outside 0\.\.11"):
        model(torch.tensor([[0, 12]]))
    with pytest.raises(ValueError, match="max_len"):
        model(torch.zeros(1, language.LENGTH + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="more than 2"):
        language.follows_grammar(torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="n_new"):
        language.generate(model, torch.zeros(1, 2, dtype=torch.long), 0)


def _untrained(causal: bool, n_heads: int = 2) -> language.TinyLM:
    torch.manual_seed(0)
    return language.TinyLM(causal, d_model=16, n_heads=n_heads).eval()


@pytest.mark.parametrize("causal", [True, False])
def test_only_the_unmasked_model_reads_the_future(causal):
    x = language.sentences(4, torch.Generator().manual_seed(2))
    changed = x.clone()
    changed[:, 6] = (changed[:, 6] + 1) % 12
    model = _untrained(causal)
    with torch.no_grad():
        before, w = model(x)
        after, _ = model(changed)
    assert w.shape == (4, 2, language.LENGTH, language.LENGTH)
    assert torch.equal(language.attention_weights(model, x), w)
    assert torch.equal(before[:, :6], after[:, :6]) == causal
    assert not torch.equal(before[:, 6:], after[:, 6:])
    if causal:
        assert torch.equal(w.triu(1), torch.zeros_like(w))


@pytest.mark.parametrize("chunks", [[12], [1] * 12, [2, 1, 4, 5]])
def test_step_through_a_kv_cache_equals_the_full_forward(chunks):
    model = _untrained(True)
    x = language.sentences(3, torch.Generator().manual_seed(3))
    with torch.no_grad():
        full, _ = model(x)
        cache, parts, start = KVCache(), [], 0
        for n in chunks:
            parts.append(model.step(x[:, start:start + n], cache))
            start += n
    assert len(cache) == language.LENGTH
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=0, atol=1e-5)


def test_generate_with_and_without_cache_untrained():
    model = _untrained(True)
    prompt = language.sentences(5, torch.Generator().manual_seed(4))[:, :3]
    a, la = language.generate(model, prompt, 6, generator=torch.Generator().manual_seed(0))
    b, lb = language.generate(model, prompt, 6, generator=torch.Generator().manual_seed(0),
                              cache=True)
    assert a.shape == (5, 9) and la.shape == (5, 6, 12)
    assert torch.equal(a[:, :3], prompt) and torch.equal(a, b)
    torch.testing.assert_close(la, lb, rtol=0, atol=1e-5)


def test_same_seed_same_run():
    a = language.fit(True, seed=1, steps=20)
    b = language.fit(True, seed=1, steps=20)
    assert a.history.loss == b.history.loss
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True))
    assert a.history.eval_steps[-1] == 20 and "held-out loss" in a.history.metrics


@pytest.fixture(scope="module")
def runs():
    """{(causal, seed): (run, measurements)} as the notebook measures them."""
    test = language.sentences(N_TEST, torch.Generator().manual_seed(TEST_SEED))
    out = {}
    for seed in SEEDS:
        for causal in (True, False):
            run = language.fit(causal, seed=seed)
            model = run.model
            weights = language.attention_weights(model, test[:, :-1])
            losses = language.position_losses(model, test)
            g = torch.Generator().manual_seed(SAMPLE_SEED)
            full, logits_full = language.generate(model, test[:, :2], language.LENGTH - 2,
                                                  generator=g)
            g = torch.Generator().manual_seed(SAMPLE_SEED)
            cached, logits_cached = language.generate(model, test[:, :2], language.LENGTH - 2,
                                                      generator=g, cache=True)
            out[causal, seed] = run, {
                "held-out": run.history.final("held-out loss"),
                "in input": losses[:-1].mean().item(),
                "last": losses[-1].item(),
                "previous": language.weight_on_offset(weights, -1),
                "next": language.weight_on_offset(weights, 1),
                "top weight": weights.amax(dim=-1).mean(dim=(0, 1)),
                "grammar": language.follows_grammar(full).float().mean().item(),
                "same words": torch.equal(full, cached),
                "logit gap": (logits_full - logits_cached).abs().max().item(),
            }
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_with_the_mask_it_predicts_and_generates(runs, seed):
    run, m = runs[True, seed]
    assert abs(m["held-out"] - language.FLOOR) < 0.1, m  # near ln 2, the least possible
    assert m["in input"] > language.FLOOR - 0.05, m  # no position beats the floor
    assert m["previous"] > 0.9, m  # position i reads key i - 1
    assert m["next"] == 0.0, m  # the mask: exactly no weight on the future
    assert m["grammar"] >= 0.8, m  # sampled sentences follow the grammar
    assert run.history.loss[0] > 2.0 > language.FLOOR + 0.1 > run.history.loss[-1]


@pytest.mark.parametrize("seed", SEEDS)
def test_without_the_mask_it_copies_and_cannot_generate(runs, seed):
    _, m = runs[False, seed]
    assert m["in input"] < 0.1, m  # about 0 wherever the next word is in the input
    assert m["last"] > language.FLOOR, m  # and worse than honest where it is not
    assert m["next"] > 0.8, m  # position i reads key i + 1, the answer
    top = m["top weight"]  # the last query, which has no key i + 1, spreads its weight
    assert top[-1] < top[1:-1].mean(), m
    assert m["grammar"] <= 0.05, m  # its sentences break the grammar


@pytest.mark.parametrize("seed", SEEDS)
def test_kv_cache_generation_equals_full_recomputation(runs, seed):
    for causal in (True, False):
        _, m = runs[causal, seed]
        assert m["same words"], m
        assert m["logit gap"] < 1e-4, m
