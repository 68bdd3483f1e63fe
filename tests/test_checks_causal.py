"""Chapter 4's checks: correct solutions pass, every known bug gets its diagnosis."""

from __future__ import annotations

import math

import pytest
import torch

from utils.attention import softmax
from utils.checks import causal as ex
from utils.masks import causal_mask


def ones(n_q, n_k):
    return torch.ones(n_q, n_k, dtype=torch.bool)


def not_attempted(*args):
    raise NotImplementedError


# --------------------------------------------------------------------------- causal mask


def solution_mask(n):
    return torch.ones(n, n, dtype=torch.bool).tril()


MASK_BUGS = {
    "diagonal_hidden": lambda n: ones(n, n).tril(-1),
    "upper_triangular": lambda n: ones(n, n).triu(1),
    "anti_causal": lambda n: ones(n, n).triu(),
    "no_mask": lambda n: ones(n, n),
    "wrong_dtype": lambda n: torch.ones(n, n).tril(),
    "wrong_shape": lambda n: ones(n, n + 1).tril(),
    "raised": lambda n: ones(n, n)[n],
}


def test_causal_mask_passes_for_a_solution(capsys):
    result = ex.check_causal_mask(solution_mask)
    assert result and result.status == "pass"
    assert "✅" in capsys.readouterr().out


def test_causal_mask_not_attempted():
    result = ex.check_causal_mask(not_attempted)
    assert result.status == "not attempted" and result.diagnosis is None


@pytest.mark.parametrize("key", list(MASK_BUGS))
def test_causal_mask_diagnoses(key, capsys):
    result = ex.check_causal_mask(MASK_BUGS[key])
    assert not result
    assert result.diagnosis == key
    assert "❌" in capsys.readouterr().out


def test_additive_float_mask_is_named():
    result = ex.check_causal_mask(
        lambda n: torch.zeros(n, n).masked_fill(~ones(n, n).tril(), float("-inf")))
    assert result.diagnosis == "additive_mask" and "additive" in result.message
    # with another fill than -inf it is not the additive-mask fingerprint: a plain dtype message
    result = ex.check_causal_mask(
        lambda n: torch.zeros(n, n).masked_fill(~ones(n, n).tril(), -1e9))
    assert result.diagnosis == "wrong_dtype" and "torch.bool" in result.message


# --------------------------------------------------------------------------- causal attention


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


# --------------------------------------------------------------------------- bottom-right mask


def solution_mask_kv(n_q, n_k):
    i = torch.arange(n_q)[:, None]
    j = torch.arange(n_k)[None, :]
    return j <= i + (n_k - n_q)


KV_BUGS = {
    "top_left_aligned": lambda n_q, n_k: ones(n_q, n_k).tril(),
    "diagonal_hidden": lambda n_q, n_k: ones(n_q, n_k).tril(n_k - n_q - 1),
    "wrong_offset_sign": lambda n_q, n_k: ones(n_q, n_k).tril(n_q - n_k),
    "upper_triangular": lambda n_q, n_k: ones(n_q, n_k).triu(n_k - n_q + 1),
    "wrong_dtype": lambda n_q, n_k: solution_mask_kv(n_q, n_k).float(),
    "additive_mask": lambda n_q, n_k: torch.zeros(n_q, n_k).masked_fill(
        ~solution_mask_kv(n_q, n_k), float("-inf")),
}


def test_causal_mask_kv_passes():
    assert ex.check_causal_mask_kv(solution_mask_kv)
    assert ex.check_causal_mask_kv(lambda n_q, n_k: ones(n_q, n_k).tril(n_k - n_q))
    assert ex.check_causal_mask_kv(lambda n_q, n_k: causal_mask(n_q, n_k))


@pytest.mark.parametrize("key", list(KV_BUGS))
def test_causal_mask_kv_diagnoses(key):
    assert ex.check_causal_mask_kv(KV_BUGS[key]).diagnosis == key


# --------------------------------------------------------------------------- causal + padding


def solution_padded(scores, key_padding):
    n = scores.shape[-1]
    mask = ones(n, n).tril() & key_padding[:, None, :]
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    return weights.nan_to_num(0.0)


def padded_variant(mask_of, fill=float("-inf"), safe=True):
    def fn(scores, key_padding):
        n = scores.shape[-1]
        mask = mask_of(tril(n), key_padding)
        if safe:
            return softmax(scores, mask=mask.expand(scores.shape))
        return torch.softmax(scores.masked_fill(~mask, fill), dim=-1)

    return fn


def both(c, p):
    return c & p[:, None, :]


PADDED_BUGS = {
    "nan_fully_masked": padded_variant(both, safe=False),
    "uniform_fully_masked": padded_variant(both, fill=-1e9, safe=False),
    "no_padding": padded_variant(lambda c, p: c.expand(p.shape[0], -1, -1)),
    "no_causal": padded_variant(lambda c, p: p[:, None, :].expand(-1, p.shape[1], -1)),
    "padding_on_queries": padded_variant(lambda c, p: c & p[:, :, None]),
    "or_instead_of_and": padded_variant(lambda c, p: c | p[:, None, :]),
}


def test_padded_causal_softmax_passes():
    assert ex.check_padded_causal_softmax(solution_padded)

    def with_where(scores, key_padding):  # zero the dead rows explicitly
        n = scores.shape[-1]
        mask = ones(n, n).tril() & key_padding[:, None, :]
        alive = mask.any(dim=-1, keepdim=True)
        w = torch.softmax(scores.masked_fill(~mask, float("-inf")).masked_fill(~alive, 0), -1)
        return w * alive

    assert ex.check_padded_causal_softmax(with_where)


@pytest.mark.parametrize("key", list(PADDED_BUGS))
def test_padded_causal_softmax_diagnoses(key):
    assert ex.check_padded_causal_softmax(PADDED_BUGS[key]).diagnosis == key


def test_the_left_padded_case_really_has_fully_masked_rows():
    # guards the check itself: without such a row the NaN bug could not be caught
    result = PADDED_BUGS["nan_fully_masked"](torch.zeros(2, 5, 5, dtype=torch.float64),
                                             torch.arange(5)[None, :] >= torch.tensor([[0], [2]]))
    assert torch.isnan(result).any()


# --------------------------------------------------------------------------- near misses


@pytest.mark.parametrize("check, fn", [
    (ex.check_causal_mask, lambda n: ones(n, n).tril(1)),  # one diagonal too many
    (ex.check_causal_mask_kv, lambda n_q, n_k: ones(n_q, n_k).tril(n_k - n_q + 1)),
    (ex.check_causal_attention, variant(lambda n: ones(n, n).tril(1))),
])
def test_causal_near_misses_are_values(check, fn):
    result = check(fn)
    assert result.diagnosis == "values" and "first at index" in result.message


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
