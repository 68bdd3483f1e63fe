"""Checks for chapter 1's exercises: softmax, self-attention, permutation equivariance."""

from __future__ import annotations

import math

import torch

from ..attention import scaled_dot_product_attention, self_attention, softmax
from ..masks import causal_mask
from ._core import Case, CheckResult, register, run_check
from ._core import randn as _randn

__all__ = ["check_permutation_check", "check_self_attention", "check_softmax"]


def _softmax(scores, dim=-1):
    return softmax(scores, dim=dim)


def _other_axis_softmax(scores, dim=-1):
    return torch.softmax(scores, dim=0 if dim % scores.dim() == scores.dim() - 1 else -1)


def _global_max_softmax(scores, dim=-1):
    e = (scores - scores.max()).exp()
    return e / e.sum(dim=dim, keepdim=True)


def _naive_softmax(scores, dim=-1):
    e = scores.exp()
    return e / e.sum(dim=dim, keepdim=True)


@register(_softmax)
def check_softmax(fn) -> CheckResult:
    """``fn(scores, dim=-1)``: a numerically stable softmax."""
    cases = [
        Case((_randn(3, 5),)),
        Case((_randn(2, 4, 6, seed=1),), {"dim": -1}),
        Case((_randn(4, 3, seed=2),), {"dim": 0}),
        Case((torch.tensor([[1000.0, 999.0, 0.0], [-1000.0, -1001.0, -999.0]],
                           dtype=torch.float64),)),
    ]
    bugs = {
        "unstable": (_naive_softmax, "exp overflows for large scores (NaN at 1000): "
                     "subtract the max along `dim` before exponentiating."),
        "wrong_axis": ((_other_axis_softmax, lambda s, dim=-1: torch.softmax(s, dim=0)),
                       "softmax over the wrong axis: normalise along `dim` "
                       "(each row of scores must sum to 1)."),
        "ignores_dim": (lambda s, dim=-1: torch.softmax(s, dim=-1),
                        "you always normalise along the last axis: use the `dim` argument "
                        "(the third case asks for dim=0)."),
        "global_max": (_global_max_softmax,
                       "you subtracted the max of the whole tensor: a row far below it "
                       "underflows to exp(-2000) = 0 and gives 0/0 (NaN). Subtract each row's "
                       "own max, `scores.amax(dim=dim, keepdim=True)`."),
        "no_keepdim": (lambda s, dim=-1: torch.exp(s - s.max()) / torch.exp(s - s.max()).sum(),
                       "you normalised by the sum over the whole tensor: sum along `dim` "
                       "with keepdim=True."),
    }
    return run_check("softmax", fn, _softmax, cases, bugs)


def _attention_variant(scale_of, axis=-1, transpose=False, values=True):
    def fn(x, w_q, w_k, w_v):
        q, k, v = x @ w_q, x @ w_k, x @ w_v
        s = (k @ q.transpose(-2, -1)) if transpose else (q @ k.transpose(-2, -1))
        w = torch.softmax(s * scale_of(q, x), dim=axis)
        return (w @ v if values else w @ x), w

    return fn


@register(self_attention)
def check_self_attention(fn) -> CheckResult:
    """``fn(x, w_q, w_k, w_v) -> (output, weights)``: self-attention from projections."""
    # d_model = 6 and d_k = 3 differ, so scaling by sqrt(d_model) is caught
    cases = [
        Case((_randn(5, 6), _randn(6, 3, seed=1), _randn(6, 3, seed=2), _randn(6, 4, seed=3))),
        Case((_randn(2, 4, 6, seed=4), _randn(6, 3, seed=5), _randn(6, 3, seed=6),
              _randn(6, 2, seed=7))),
    ]
    bugs = {
        "missing_scale": (_attention_variant(lambda q, x: 1.0),
                          "the scores are not scaled: divide Q Kᵀ by √d_k."),
        "sqrt_d_model": (_attention_variant(lambda q, x: 1 / math.sqrt(x.shape[-1])),
                         "scaled by √d_model; the scale is 1/√d_k (the size of a query/key)."),
        "scale_d_k": (_attention_variant(lambda q, x: 1 / q.shape[-1]),
                      "divided by d_k; the scale is 1/√d_k (the square root)."),
        "wrong_axis": (_attention_variant(lambda q, x: 1 / math.sqrt(q.shape[-1]), axis=-2),
                       "softmax over the wrong axis: each query's weights over the keys "
                       "(the last axis) must sum to 1."),
        "transposed_scores": (_attention_variant(lambda q, x: 1 / math.sqrt(q.shape[-1]),
                                                 transpose=True),
                              "scores are K Qᵀ (transposed): row i must hold query i's scores."),
        "used_x_as_values": (_attention_variant(lambda q, x: 1 / math.sqrt(q.shape[-1]),
                                                values=False),
                             "the output averages x, not the values V = x W_v."),
    }
    return run_check("self_attention", fn, self_attention, cases, bugs,
                     returns=("output", "weights"))


def _attend(x: torch.Tensor) -> torch.Tensor:
    """Self-attention with fixed projections (d_model = 4)."""
    w = _randn(4, 4, seed=11)
    return scaled_dot_product_attention(x @ w, x @ w.T, x)[0]


def _attend_causal(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[-2]
    return scaled_dot_product_attention(x, x, x, mask=causal_mask(n))[0]


def _attend_with_positions(x: torch.Tensor) -> torch.Tensor:
    pos = torch.arange(x.shape[-2], dtype=x.dtype)[:, None] / 4
    return _attend(x + pos)


def _equivariant(fn, x, perm) -> bool:
    return bool(torch.allclose(fn(x[perm]), fn(x)[perm]))


@register(_equivariant)
def check_permutation_check(fn) -> CheckResult:
    """``fn(attn, x, perm) -> bool``: is ``attn(x[perm]) == attn(x)[perm]``?"""
    x = _randn(5, 4, seed=12)
    cycle = torch.tensor([1, 2, 3, 4, 0])  # its inverse is a different permutation
    cases = [Case((f, x, cycle)) for f in (_attend, _attend_causal, _attend_with_positions)]
    cases.append(Case((_attend, x, torch.tensor([4, 3, 2, 1, 0]))))
    bugs = {
        "always_true": (lambda f, x, p: True,
                        "says True for attention that depends on position (causal or with "
                        "positional encodings): compare the outputs themselves."),
        "inverse_permutation": (lambda f, x, p: bool(torch.allclose(f(x[p]), f(x)[torch.argsort(p)])),
                                "compared against the inverse permutation: permuting the "
                                "input must permute the output the same way, attn(x)[perm]."),
        "compared_inputs": (lambda f, x, p: bool(torch.allclose(f(x[p]), f(x))),
                            "compared attn(x[perm]) with attn(x) unpermuted: the rows move "
                            "with the tokens, compare with attn(x)[perm]."),
    }
    return run_check("permutation check", fn, _equivariant, cases, bugs)
