"""Chapter 1's checks: a correct answer passes, a stub is "not attempted", each bug is named."""

from __future__ import annotations

import math

import pytest
import torch

from utils import checks
from utils.checks import self_attention as c


def _stub(*args, **kwargs):
    raise NotImplementedError


def test_softmax_check():
    assert checks.check_softmax(lambda s, dim=-1: torch.softmax(s, dim=dim)).status == "pass"
    assert checks.check_softmax(_stub).status == "not attempted"
    assert checks.check_softmax(c._naive_softmax).diagnosis == "unstable"
    assert checks.check_softmax(lambda s, dim=-1: torch.softmax(s, dim=0)).diagnosis == "wrong_axis"
    flat = lambda s, dim=-1: torch.exp(s - s.max()) / torch.exp(s - s.max()).sum()  # noqa: E731
    assert checks.check_softmax(flat).diagnosis == "no_keepdim"


def _attention(scale_fn=lambda q, x: 1 / math.sqrt(q.shape[-1]), axis=-1):
    def fn(x, w_q, w_k, w_v):
        q, k, v = x @ w_q, x @ w_k, x @ w_v
        w = torch.softmax(q @ k.transpose(-2, -1) * scale_fn(q, x), dim=axis)
        return w @ v, w
    return fn


@pytest.mark.parametrize(
    ("fn", "diagnosis"),
    [
        (_attention(lambda q, x: 1.0), "missing_scale"),
        (_attention(lambda q, x: 1 / math.sqrt(x.shape[-1])), "sqrt_d_model"),
        (_attention(lambda q, x: 1 / q.shape[-1]), "scale_d_k"),
        (_attention(axis=-2), "wrong_axis"),
        (lambda x, wq, wk, wv: (x, x), "wrong_shape"),
        (lambda x, wq, wk, wv: 1 / 0, "raised"),
    ],
)
def test_self_attention_check_names_the_bug(fn, diagnosis, capsys):
    result = checks.check_self_attention(fn)
    assert result.status == "fail" and result.diagnosis == diagnosis
    assert capsys.readouterr().out.strip() == result.message  # printed once


def test_self_attention_check_diagnoses_every_known_bug():
    scale = lambda q, x: 1 / math.sqrt(q.shape[-1])  # noqa: E731
    assert checks.check_self_attention(c._attention_variant(scale, transpose=True)).diagnosis == (
        "transposed_scores")
    assert checks.check_self_attention(c._attention_variant(scale, values=False)).diagnosis == (
        "used_x_as_values")


def test_self_attention_check_passes_the_reference_and_reports_stubs():
    assert checks.check_self_attention(_attention()).status == "pass"
    assert checks.check_self_attention(_stub).status == "not attempted"
    assert "wrong shape of your output" in checks.check_self_attention(
        lambda x, a, b, d: (x, x)).message


def test_permutation_check():
    def good(attn, x, perm):
        return bool(torch.allclose(attn(x[perm]), attn(x)[perm]))

    assert checks.check_permutation_check(good).status == "pass"
    assert checks.check_permutation_check(_stub).status == "not attempted"
    assert checks.check_permutation_check(lambda a, x, p: True).diagnosis == "always_true"
    inverse = lambda a, x, p: bool(torch.allclose(a(x[p]), a(x)[torch.argsort(p)]))  # noqa: E731
    assert checks.check_permutation_check(inverse).diagnosis == "inverse_permutation"
    unpermuted = lambda a, x, p: bool(torch.allclose(a(x[p]), a(x)))  # noqa: E731
    assert checks.check_permutation_check(unpermuted).diagnosis == "compared_inputs"


def test_check_result_displays_nothing_and_is_truthy_only_on_pass():
    passed = checks.check_softmax(lambda s, dim=-1: torch.softmax(s, dim=dim))
    assert bool(passed) and passed._ipython_display_() is None
    assert not checks.check_softmax(_stub)


# --------------------------------------------------------------------------- near misses


@pytest.mark.parametrize("fn", [
    # scaled by √d_v (= 4) instead of √d_k (= 3): no known bug, the values differ
    lambda x, wq, wk, wv: (lambda q, k, v: (
        torch.softmax(q @ k.mT / math.sqrt(v.shape[-1]), -1) @ v,
        torch.softmax(q @ k.mT / math.sqrt(v.shape[-1]), -1)))(x @ wq, x @ wk, x @ wv),
    # the right weights, but the output adds x (a residual the exercise does not ask for)
    lambda x, wq, wk, wv: (lambda o, w: (o + x @ wv, w))(*_attention()(x, wq, wk, wv)),
])
def test_self_attention_near_misses_are_not_another_bug(fn):
    result = checks.check_self_attention(fn)
    assert result.diagnosis == "values" and "first at index" in result.message


def test_softmax_near_misses_and_global_max():
    global_max = lambda s, dim=-1: (s - s.max()).exp() / (s - s.max()).exp().sum(dim, True)  # noqa: E731
    assert checks.check_softmax(global_max).diagnosis == "global_max"
    ignores_dim = lambda s, dim=-1: torch.softmax(s, dim=-1)  # noqa: E731
    assert checks.check_softmax(ignores_dim).diagnosis == "ignores_dim"
    # a temperature of 2 (no known bug): values
    assert checks.check_softmax(lambda s, dim=-1: torch.softmax(s / 2, dim)).diagnosis == "values"


def test_in_place_softmax_is_named_not_blamed_on_another_bug():
    def in_place(scores, dim=-1):
        scores -= scores.amax(dim=dim, keepdim=True)  # the right values, the input changed
        e = scores.exp()
        return e / e.sum(dim=dim, keepdim=True)

    result = checks.check_softmax(in_place)
    assert result.diagnosis == "mutated_input" and "`scores`" in result.message


def test_permutation_check_with_a_tensor_answer_is_named_not_a_crash():
    def elementwise(attn, x, perm):
        return attn(x[perm]) == attn(x)[perm]  # a bool tensor, not one answer

    result = checks.check_permutation_check(elementwise)
    assert result.diagnosis == "wrong_type" and "Python bool" in result.message
