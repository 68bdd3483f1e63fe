"""Chapter 4's checks: correct answers pass, every known bug gets its diagnosis, near misses are
"values", and the utils functions that would answer an exercise in one call are noticed."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from utils.attention import scaled_dot_product_attention
from utils.checks import causal as ex
from utils.masks import causal_mask
from utils.multihead import merge_heads, split_heads
from utils.training import language


def ones(n_q, n_k):
    return torch.ones(n_q, n_k, dtype=torch.bool)


def not_attempted(*args):
    raise NotImplementedError


# --------------------------------------------------------------------------- 1: causal attention


def solution_attention(q, k, v):
    n = q.shape[-2]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~ones(n, n).tril(), float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


def variant(mask_of, fill=float("-inf"), after=False, scale=True):
    def fn(q, k, v):
        n = q.shape[-2]
        scores = q @ k.transpose(-2, -1) / (math.sqrt(q.shape[-1]) if scale else 1.0)
        if after:
            weights = torch.softmax(scores, dim=-1) * mask_of(n)
        else:
            weights = torch.softmax(scores.masked_fill(~mask_of(n), fill), dim=-1)
        return weights @ v, weights

    return fn


def tril(n):
    return ones(n, n).tril()


ATTENTION_BUGS = {
    "masked_after_softmax": variant(tril, after=True),
    "zero_fill": variant(tril, fill=0.0),
    "diagonal_hidden": variant(lambda n: ones(n, n).tril(-1)),
    "mask_polarity": variant(lambda n: ~tril(n)),
    "no_mask": variant(lambda n: ones(n, n)),
    "missing_scale": variant(tril, scale=False),
    "wrong_shape": lambda q, k, v: (solution_attention(q, k, v)[0][..., :1, :],
                                    solution_attention(q, k, v)[1]),
}


def test_causal_attention_passes_for_solutions():
    assert ex.check_causal_attention(solution_attention)

    def renormalised(q, k, v):  # zero after the softmax, then renormalise: also correct
        _, w = variant(tril, after=True)(q, k, v)
        w = w / w.sum(dim=-1, keepdim=True)
        return w @ v, w

    assert ex.check_causal_attention(renormalised)


@pytest.mark.parametrize("key", list(ATTENTION_BUGS))
def test_causal_attention_diagnoses(key):
    assert ex.check_causal_attention(ATTENTION_BUGS[key]).diagnosis == key


def test_causal_attention_not_attempted():
    assert ex.check_causal_attention(not_attempted).status == "not attempted"


@pytest.mark.parametrize("fn, name", [
    (lambda q, k, v: scaled_dot_product_attention(q, k, v, mask=tril(q.shape[-2])),
     "scaled_dot_product_attention"),
    (lambda q, k, v: variant(causal_mask)(q, k, v), "causal_mask"),
    (lambda q, k, v: (F.scaled_dot_product_attention(q, k, v, is_causal=True),
                      solution_attention(q, k, v)[1]), "scaled_dot_product_attention"),
])
def test_causal_attention_notices_library_calls(fn, name):
    result = ex.check_causal_attention(fn)
    assert result.diagnosis == "used_library" and name in result.message


def test_causal_attention_in_place_masked_fill_is_named():
    def in_place(q, k, v):
        n = q.shape[-2]
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        scores.masked_fill_(~ones(n, n).tril(), float("-inf"))  # a new tensor: fine
        q.mul_(1.0)  # the input itself, unchanged values: fine too
        w = torch.softmax(scores, dim=-1)
        return w @ v, w

    assert ex.check_causal_attention(in_place)

    def scales_q(q, k, v):
        q /= math.sqrt(q.shape[-1])
        n = q.shape[-2]
        w = torch.softmax((q @ k.mT).masked_fill(~ones(n, n).tril(), float("-inf")), dim=-1)
        return w @ v, w

    assert ex.check_causal_attention(scales_q).diagnosis == "mutated_input"


# --------------------------------------------------------------------------- 2: predict the leak


def grid(n):
    return torch.arange(n)[:, None], torch.arange(n)[None, :]


def prediction(causal_rule, after_rule=None, none_rule=None):
    """A student's prediction: a rule (i, key, j, n) -> bool per mode (default: the right one)."""
    rules = {"causal": causal_rule,
             "after": after_rule or (lambda i, key, j, n: key <= i),
             "none": none_rule or (lambda i, key, j, n: ones(n, n))}

    def fn(n, j, mode):
        i, key = grid(n)
        return torch.as_tensor(rules[mode](i, key, j, n)).expand(n, n).clone()

    return fn


def right_causal(i, key, j, n):
    return (key <= i) & (i >= j) & (i > 0)


PREDICTION_BUGS = {
    "causal_row_zero": prediction(lambda i, key, j, n: (key <= i) & (i >= j)),
    "causal_column_only": prediction(lambda i, key, j, n: (key == j) & (i >= j)),
    "causal_own_row_missed": prediction(lambda i, key, j, n: (key <= i) & (i > j)),
    "causal_masked_entries": prediction(lambda i, key, j, n: (i >= j) & (i > -1) & (key > -1)),
    "causal_row_only": prediction(lambda i, key, j, n: (key <= i) & (i == j)),
    "after_like_before": prediction(right_causal, after_rule=lambda i, key, j, n: (key <= i) & (i >= j)),
    "after_masked_entries": prediction(right_causal, after_rule=lambda i, key, j, n: ones(n, n)),
    "none_lower_only": prediction(right_causal, none_rule=lambda i, key, j, n: key <= i),
    "none_like_causal": prediction(right_causal, none_rule=lambda i, key, j, n: (i >= j) & (key > -1)),
}


def test_changed_weights_passes_for_the_rule():
    assert ex.check_changed_weights(prediction(right_causal))

    def by_cases(n, j, mode):  # another way to write it
        out = torch.zeros(n, n, dtype=torch.bool)
        for i in range(n):
            for key in range(n):
                if mode == "none":
                    out[i, key] = True
                elif key <= i:
                    out[i, key] = mode == "after" or (i >= j and i > 0)
        return out

    assert ex.check_changed_weights(by_cases)


def test_the_rule_is_what_runs():
    # guards the check: the prediction it accepts is what the weights do, on other inputs too
    for n, j in [(7, 2), (3, 0), (8, 7)]:
        for mode in ex.MODES:
            assert torch.equal(ex._rule(n, j, mode), ex._changed_weights(n, j, mode))


@pytest.mark.parametrize("key", list(PREDICTION_BUGS))
def test_changed_weights_diagnoses(key):
    result = ex.check_changed_weights(PREDICTION_BUGS[key])
    assert result.diagnosis == key, result.message


def test_changed_weights_other_answers():
    assert ex.check_changed_weights(not_attempted).status == "not attempted"
    as_int = ex.check_changed_weights(lambda n, j, mode: prediction(right_causal)(n, j, mode).int())
    assert as_int.diagnosis == "wrong_dtype" and "bool" in as_int.message
    # two mistakes in two modes: no single bug explains it, the first wrong entry is shown
    two = prediction(lambda i, key, j, n: (key == j) & (i >= j),
                     none_rule=lambda i, key, j, n: key <= i)
    result = ex.check_changed_weights(two)
    assert result.diagnosis == "values" and "mode = " in result.message


# --------------------------------------------------------------------------- 3: the KV-cache step


def solution_step(model, tokens, cache):
    e = model.embed(tokens, start=len(cache))
    attn, h = model.attn, model.attn.n_heads
    cache.append(split_heads(attn.w_k(e), h), split_heads(attn.w_v(e), h))
    out, _ = cache.attend(split_heads(attn.w_q(e), h))
    return model.out(attn.w_o(merge_heads(out)))


def solution_with_torch_sdpa(model, tokens, cache):  # its own attention, bottom-right mask
    e = model.embed(tokens, start=len(cache))
    attn, h = model.attn, model.attn.n_heads
    cache.append(split_heads(attn.w_k(e), h), split_heads(attn.w_v(e), h))
    n, t = tokens.shape[-1], len(cache)
    out = F.scaled_dot_product_attention(split_heads(attn.w_q(e), h), cache.k, cache.v,
                                         attn_mask=causal_mask(n, t))
    return model.out(attn.w_o(merge_heads(out)))


def attend_first(model, tokens, cache):
    e = model.embed(tokens, start=len(cache))
    attn, h = model.attn, model.attn.n_heads
    out, _ = cache.attend(split_heads(attn.w_q(e), h))
    cache.append(split_heads(attn.w_k(e), h), split_heads(attn.w_v(e), h))
    return model.out(attn.w_o(merge_heads(out)))


def own_cache(model, tokens, cache):  # attends over a fresh cache: the one passed never grows
    from utils.kv_cache import KVCache
    return solution_step(model, tokens, KVCache())


def appends_twice(model, tokens, cache):
    e = model.embed(tokens, start=len(cache))
    attn, h = model.attn, model.attn.n_heads
    cache.append(split_heads(attn.w_k(e), h), split_heads(attn.w_v(e), h))
    out, _ = cache.attend(split_heads(attn.w_q(e), h))
    cache.append(split_heads(attn.w_k(e), h), split_heads(attn.w_v(e), h))
    return model.out(attn.w_o(merge_heads(out)))


STEP_BUGS = {
    **{key: bug for key, (bug, _) in ex._STEP_BUGS.items()},
    "attend_before_append": attend_first,
    "cache_length": own_cache,
}


def test_kv_step_passes():
    assert ex.check_kv_step(solution_step)
    assert ex.check_kv_step(solution_with_torch_sdpa)
    assert ex.check_kv_step(not_attempted).status == "not attempted"


@pytest.mark.parametrize("key", list(STEP_BUGS))
def test_kv_step_diagnoses(key):
    result = ex.check_kv_step(STEP_BUGS[key])
    assert result.diagnosis == key, result.message


def test_kv_step_other_answers():
    assert ex.check_kv_step(appends_twice).diagnosis == "cache_length"
    recompute = ex.check_kv_step(lambda model, tokens, cache: model(tokens)[0])
    assert recompute.diagnosis == "used_library" and "TinyLM.forward" in recompute.message
    near = ex.check_kv_step(lambda model, tokens, cache: 1.01 * solution_step(model, tokens, cache))
    assert near.diagnosis == "values" and "step 1" in near.message
    assert ex.check_kv_step(lambda m, t, c: language.TinyLM.step(m, t, c)).diagnosis == "used_library"


# --------------------------------------------------------------------------- 4: debug the padding


def given_buggy(q, k, v, key_padding):  # the notebook's function, as given
    n = q.shape[-2]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    allowed = torch.ones(n, n, dtype=torch.bool).tril() & key_padding[:, :, None]
    weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
    return weights @ v, weights


def padded(combine, empty="zero"):
    def fn(q, k, v, key_padding):
        n = q.shape[-2]
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        allowed = combine(tril(n), key_padding)
        fill = {"nan": float("-inf"), "zero": float("-inf"), "-1e9": -1e9}[empty]
        weights = torch.softmax(scores.masked_fill(~allowed, fill), dim=-1)
        if empty == "zero":
            weights = torch.where(allowed.any(dim=-1, keepdim=True), weights, 0.0)
        return weights @ v, weights

    return fn


def keys(c, p):
    return c & p[:, None, :]


PADDED_BUGS = {
    "as_given": given_buggy,
    "nan_fully_masked": padded(keys, "nan"),
    "padding_on_queries": padded(lambda c, p: c & p[:, :, None]),
    "uniform_fully_masked": padded(keys, "-1e9"),
    "no_padding": padded(lambda c, p: c.expand(p.shape[0], -1, -1)),
    "no_causal": padded(lambda c, p: p[:, None, :].expand(-1, p.shape[1], -1)),
    "or_instead_of_and": padded(lambda c, p: c | p[:, None, :]),
}


def test_padded_causal_attention_passes():
    assert ex.check_padded_causal_attention(padded(keys))
    assert ex.check_padded_causal_attention(ex._padded_causal_attention)

    def alive_rows(q, k, v, key_padding):  # zero the dead rows' scores first, then the weights
        n = q.shape[-2]
        mask = tril(n) & key_padding[:, None, :]
        alive = mask.any(dim=-1, keepdim=True)
        scores = (q @ k.mT / math.sqrt(q.shape[-1])).masked_fill(~mask, float("-inf"))
        w = torch.softmax(scores.masked_fill(~alive, 0.0), dim=-1) * alive
        return w @ v, w

    assert ex.check_padded_causal_attention(alive_rows)
    assert ex.check_padded_causal_attention(not_attempted).status == "not attempted"


@pytest.mark.parametrize("key", list(PADDED_BUGS))
def test_padded_causal_attention_diagnoses(key):
    result = ex.check_padded_causal_attention(PADDED_BUGS[key])
    assert result.diagnosis == key, result.message


def test_padded_causal_attention_notices_the_library():
    def one_call(q, k, v, key_padding):
        return scaled_dot_product_attention(q, k, v, mask=tril(q.shape[-2]),
                                            key_padding_mask=key_padding)

    result = ex.check_padded_causal_attention(one_call)
    assert result.diagnosis == "used_library" and "scaled_dot_product_attention" in result.message


def test_the_left_padded_case_really_has_fully_masked_rows():
    # guards the check itself: without such a row the NaN bug could not be caught
    q = k = v = torch.zeros(2, 5, 2, dtype=torch.float64)
    _, w = PADDED_BUGS["nan_fully_masked"](q, k, v, ex._left_padded([5, 3], 5))
    assert torch.isnan(w).any()


def test_padded_near_miss_is_values():
    def half_scale(q, k, v, key_padding):
        return padded(keys)(q / 2, k, v, key_padding)

    result = ex.check_padded_causal_attention(half_scale)
    assert result.diagnosis == "values" and "first at index" in result.message
