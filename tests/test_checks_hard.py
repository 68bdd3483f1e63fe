"""Chapter 7's checks: the reference passes, a stub is "not attempted", every bug is named."""

from __future__ import annotations

import pytest
import torch

from utils import hard
from utils.checks import hard as ch

# ----------------------------------------------------------------------------- helpers


def stub(*_args, **_kwargs):
    raise NotImplementedError


def assert_diagnosis(result, key):
    assert result.status == "fail", result.message
    assert result.diagnosis == key, result.message


# ----------------------------------------------------------------------------- exercise 1


def hard_ok(scores, values, generator=None):
    index = torch.multinomial(torch.softmax(scores, -1), 1, generator=generator).squeeze(-1)
    return values[torch.arange(len(index)), index], index


def hard_variant(probs_of, index_of=None):
    def fn(scores, values, generator=None):
        if index_of is not None:
            index = index_of(scores, generator)
        else:
            index = torch.multinomial(probs_of(scores), 1, generator=generator).squeeze(-1)
        return values[torch.arange(len(index)), index], index

    return fn


HARD_BUGS = {
    "argmax_not_sample": lambda s, v, generator=None: (v[torch.arange(len(s)), s.argmax(-1)],
                                                       s.argmax(-1)),
    "sampled_scores_not_softmax": hard_variant(lambda s: s.clamp_min(0)),
    "softmax_wrong_axis": hard_variant(lambda s: torch.softmax(s, 0)),
    "uniform": hard_variant(lambda s: torch.ones_like(s)),
    "returned_soft": lambda s, v, generator=None: (
        (torch.softmax(s, -1).unsqueeze(-2) @ v).squeeze(-2), hard_ok(s, v, generator)[1]),
    "context_not_selected": lambda s, v, generator=None: (v[:, 0], hard_ok(s, v, generator)[1]),
    "ignores_generator": lambda s, v, generator=None: hard_ok(s, v, None),
    "one_draw_for_batch": hard_variant(None, lambda s, g: torch.multinomial(
        torch.softmax(s[0], -1), 1, generator=g).expand(len(s))),
    "wrong_shape": lambda s, v, generator=None: (hard_ok(s, v, generator)[0][None],
                                                 hard_ok(s, v, generator)[1]),
    "wrong_index": lambda s, v, generator=None: (hard_ok(s, v, generator)[0],
                                                 hard_ok(s, v, generator)[1].double()),
    "raised": lambda s, v, generator=None: torch.multinomial(s, 1),  # negative scores: error
}


def test_hard_reference_passes_and_stub_not_attempted():
    assert ch.check_hard_attention(hard_ok, verbose=False)
    assert ch.check_hard_attention(stub, verbose=False).status == "not attempted"


def test_hard_library_call_is_noticed():
    assert_diagnosis(ch.check_hard_attention(
        lambda s, v, generator=None: hard.hard_attention(s, v, generator=generator),
        verbose=False), "used_library")


@pytest.mark.parametrize("key", HARD_BUGS)
def test_hard_bugs_are_named(key):
    assert_diagnosis(ch.check_hard_attention(HARD_BUGS[key], verbose=False), key)


def test_hard_other_sampling_method_passes():
    """A correct solution drawing from another random stream (Gumbel-max) still passes."""

    def gumbel_max(scores, values, generator=None):
        u = torch.rand(scores.shape, generator=generator, dtype=scores.dtype)
        index = (scores - torch.log(-torch.log(u))).argmax(-1)
        return values[torch.arange(len(index)), index], index

    assert ch.check_hard_attention(gumbel_max, verbose=False)


# ----------------------------------------------------------------------------- exercise 2


def gumbel_ok(logits, tau, generator=None):
    u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype)
    return torch.softmax((logits - torch.log(-torch.log(u))) / tau, dim=-1)


def test_gumbel_reference_passes_and_stub_not_attempted():
    assert ch.check_gumbel_softmax(gumbel_ok, verbose=False)
    assert ch.check_gumbel_softmax(stub, verbose=False).status == "not attempted"


@pytest.mark.parametrize("library", [
    lambda x, tau, generator=None: hard.gumbel_softmax(x, tau, generator=generator),
    lambda x, tau, generator=None: torch.nn.functional.gumbel_softmax(x, tau)])
def test_gumbel_library_call_is_noticed(library):
    assert_diagnosis(ch.check_gumbel_softmax(library, verbose=False), "used_library")


@pytest.mark.parametrize("key", list(ch.GUMBEL_BUGS))
def test_gumbel_bugs_are_named(key):
    assert_diagnosis(ch.check_gumbel_softmax(ch._gumbel_variant(key), verbose=False), key)


@pytest.mark.parametrize("key, fn", [
    ("wrong_axis", lambda x, tau, generator=None: torch.softmax(
        (x - torch.log(-torch.log(torch.rand(x.shape, generator=generator, dtype=x.dtype)))) / tau,
        dim=0)),
    ("not_normalised", lambda x, tau, generator=None: (x + torch.rand(x.shape, generator=generator,
                                                                       dtype=x.dtype)) / tau),
    ("ignores_generator", lambda x, tau, generator=None: gumbel_ok(x, tau)),
    ("wrong_shape", lambda x, tau, generator=None: gumbel_ok(x, tau, generator)[..., :-1]),
])
def test_gumbel_structural_bugs_are_named(key, fn):
    assert_diagnosis(ch.check_gumbel_softmax(fn, verbose=False), key)


# ----------------------------------------------------------------------------- exercise 3


def reinforce_ok(logits, rewards, n_samples, generator=None):
    alpha = torch.softmax(logits, -1)
    i = torch.multinomial(alpha, n_samples, replacement=True, generator=generator)
    r = rewards[i]
    b = (r.sum() - r) / (n_samples - 1)
    onehot = torch.nn.functional.one_hot(i, len(logits)).to(logits.dtype)
    return (r - b)[:, None] * (onehot - alpha)


def test_reinforce_reference_passes_and_stub_not_attempted():
    assert ch.check_reinforce(reinforce_ok, verbose=False)
    assert ch.check_reinforce(stub, verbose=False).status == "not attempted"


def test_reinforce_library_call_is_noticed():
    assert_diagnosis(ch.check_reinforce(lambda t, r, n, generator=None: hard.reinforce_gradient(
        t, r, n, baseline="mean", generator=generator), verbose=False), "used_library")
    assert_diagnosis(ch.check_reinforce(lambda t, r, n, generator=None: hard.estimates(
        "REINFORCE + baseline", t, r, n, generator=generator), verbose=False), "used_library")


def test_reinforce_with_the_expected_reward_as_baseline_passes():
    """Any baseline independent of the sample is fine: b = Σ α_i r_i."""

    def expected_baseline(logits, rewards, n_samples, generator=None):
        alpha = torch.softmax(logits, -1)
        i = torch.multinomial(alpha, n_samples, replacement=True, generator=generator)
        onehot = torch.nn.functional.one_hot(i, len(logits)).to(logits.dtype)
        return (rewards[i] - alpha @ rewards)[:, None] * (onehot - alpha)

    assert ch.check_reinforce(expected_baseline, verbose=False)


@pytest.mark.parametrize("key", [*ch.REINFORCE_BUGS, "no_baseline"])
def test_reinforce_bugs_are_named(key):
    assert_diagnosis(ch.check_reinforce(ch._reinforce_variant(key), verbose=False), key)


def own_reward_baseline(logits, rewards, n_samples, generator=None):
    return 0 * reinforce_ok(logits, rewards, n_samples, generator)


def onehot_score(logits, rewards, n_samples, generator=None):
    alpha = torch.softmax(logits, -1)
    i = torch.multinomial(alpha, n_samples, replacement=True, generator=generator)
    r = rewards[i]
    b = (r.sum() - r) / (n_samples - 1)
    return (r - b)[:, None] * torch.nn.functional.one_hot(i, len(logits)).to(logits.dtype)


@pytest.mark.parametrize("key, fn", [
    ("zero_gradient", own_reward_baseline),
    ("onehot_not_score", onehot_score),
    ("ignores_generator", lambda t, r, n, generator=None: reinforce_ok(t, r, n)),
    ("wrong_shape", lambda t, r, n, generator=None: reinforce_ok(t, r, n, generator).mean(0)),
])
def test_reinforce_structural_bugs_are_named(key, fn):
    assert_diagnosis(ch.check_reinforce(fn, verbose=False), key)


# ----------------------------------------------------------------------------- exercise 4


def test_topk_reference_passes_and_stub_not_attempted():
    assert ch.check_topk_attention(ch._topk_variant("ok"), verbose=False)
    assert ch.check_topk_attention(stub, verbose=False).status == "not attempted"


def test_topk_library_call_is_noticed():
    assert_diagnosis(ch.check_topk_attention(lambda s, v, k: hard.topk_attention(s, v, k),
                                             verbose=False), "used_library")


@pytest.mark.parametrize("key", ["not_renormalised", "masked_with_zero", "bottom_k", "off_by_one",
                                 "softmax_of_weights"])
def test_topk_bugs_are_named(key):
    assert_diagnosis(ch.check_topk_attention(ch._topk_variant(key), verbose=False), key)


def test_topk_wrong_shape_is_named():
    def flat(scores, values, k):
        c, w = ch._topk_solution(scores, values, k)
        return c.reshape(-1), w

    assert_diagnosis(ch.check_topk_attention(flat, verbose=False), "wrong_shape")


def test_messages_are_printed(capsys):
    ch.check_topk_attention(ch._topk_variant("bottom_k"))
    assert "smallest" in capsys.readouterr().out


# ----------------------------------------------------------------------------- edge cases


def test_gumbel_overflow_at_small_tau_never_passes():
    """exp((logits + g) / τ) / Σ overflows at τ = 0.01 (inf / inf = NaN): today's ✅ is a ❌."""

    def overflow(logits, tau, generator=None):
        u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype)
        e = ((logits - torch.log(-torch.log(u))) / tau).exp()
        return e / e.sum(-1, keepdim=True)

    result = ch.check_gumbel_softmax(overflow, verbose=False)
    assert_diagnosis(result, "nan")
    assert "τ = 0.01" in result.message


def test_reinforce_with_equal_rewards_gives_exactly_zero():
    assert (reinforce_ok(ch.RF_LOGITS, ch.RF_EQUAL_REWARDS, 5, torch.Generator()) == 0).all()

    def divided_by_n(logits, rewards, n_samples, generator=None):
        """Unbiased and lower variance, but the baseline is the others' sum / n, not / (n - 1)."""
        alpha = torch.softmax(logits, -1)
        i = torch.multinomial(alpha, n_samples, replacement=True, generator=generator)
        r = rewards[i]
        onehot = torch.nn.functional.one_hot(i, len(logits)).to(logits.dtype)
        return (r - (r.sum() - r) / n_samples)[:, None] * (onehot - alpha)

    assert_diagnosis(ch.check_reinforce(divided_by_n, verbose=False), "equal_rewards_not_zero")


def test_hard_attention_index_dtype_and_nan_context():
    def int32_index(scores, values, generator=None):
        context, index = hard_ok(scores, values, generator)
        return context, index.int()

    assert_diagnosis(ch.check_hard_attention(int32_index, verbose=False), "wrong_dtype")

    def changes_scores(scores, values, generator=None):
        out = hard_ok(scores.clone(), values, generator)
        scores -= scores.amax(-1, keepdim=True)
        return out

    assert_diagnosis(ch.check_hard_attention(changes_scores, verbose=False), "mutated_input")


# ----------------------------------------------------------------------------- straight-through


def _one_hot_of(y_soft):
    return torch.zeros_like(y_soft).scatter(-1, y_soft.argmax(-1, keepdim=True), 1.0)


def _st_bug(kind):
    def fn(logits, tau, generator=None):
        y_soft = ch._gumbel_solution(logits, 1.0 if kind == "values" else tau, generator)
        y_hard = _one_hot_of(y_soft)
        if kind == "not_one_hot":
            return y_soft
        if kind == "no_gradient":
            return y_hard
        if kind == "wrong_sign":
            return y_hard - y_soft + y_soft.detach()
        if kind == "softmax_backward":
            alpha = torch.softmax(logits, -1)
            return y_hard + alpha - alpha.detach()
        if kind == "wrong_sample":  # ignores the generator
            return ch._st_solution(logits, tau)
        return y_hard + y_soft - y_soft.detach()  # "values": y_soft at τ = 1

    return fn


def test_straight_through_reference_passes_and_stub_not_attempted():
    assert ch.check_straight_through(ch._st_solution, verbose=False)
    assert ch.check_straight_through(stub, verbose=False).status == "not attempted"


@pytest.mark.parametrize("key", ["not_one_hot", "no_gradient", "wrong_sign", "softmax_backward",
                                 "wrong_sample", "values"])
def test_straight_through_bugs_are_named(key):
    assert_diagnosis(ch.check_straight_through(_st_bug(key), verbose=False), key)


@pytest.mark.parametrize("library", [
    lambda x, tau, generator=None: hard.gumbel_softmax(x, tau, hard=True, generator=generator),
    lambda x, tau, generator=None: torch.nn.functional.gumbel_softmax(x, tau, hard=True)])
def test_straight_through_library_call_is_noticed(library):
    assert_diagnosis(ch.check_straight_through(library, verbose=False), "used_library")

