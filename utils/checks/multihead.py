"""Checks for chapter 3's exercises: split/merge heads, the multi-head forward pass,
counting parameters.

Some typical bugs change the output's shape (forgetting the transpose after ``view``,
returning one head instead of H): they are in the bug tables like the others, so the bug is
named rather than the shapes.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..attention import scaled_dot_product_attention
from ..multihead import merge_heads, split_heads
from ._core import Case, CheckResult, register, run_check
from ._core import randn as _randn

__all__ = [
    "check_count_parameters",
    "check_merge_heads",
    "check_multi_head_attention",
    "check_split_heads",
    "count_parameters",
    "multi_head_attention",
]

ATOL = 1e-6
Bugs = dict[str, tuple[Callable, str]]

_VIEW_HINT = {"view_not_contiguous": (
    "view size is not compatible",
    "`.view` failed because the tensor is not contiguous after `transpose` (its memory is in "
    "the old order): use `.reshape(...)`, or `.contiguous().view(...)`.")}


def _check(name: str, student: Callable, reference: Callable, cases: list[Case], bugs: Bugs,
           shape_bugs: Bugs | None = None, returns: tuple[str, ...] | None = None) -> CheckResult:
    """``run_check`` with the shape-changing bugs too, and a hint for ``view`` on a
    non-contiguous tensor."""
    return run_check(name, student, reference, cases, {**bugs, **(shape_bugs or {})}, atol=ATOL,
                     returns=returns, raised_hints=_VIEW_HINT)


# --- exercise 1: split_heads / merge_heads ----------------------------------------------

def _split_cases() -> list[Case]:
    # L, H and D/H all differ, so every wrong layout gives different numbers
    return [Case((_randn(2, 5, 12), 3)), Case((_randn(1, 4, 6, seed=1), 2)),
            Case((_randn(3, 7, 8, seed=2), 4))]


def _dims(x, n_heads):
    b, length, d = x.shape
    return b, length, n_heads, d // n_heads


@register(split_heads)
def check_split_heads(fn) -> CheckResult:
    """``fn(x, n_heads)``: ``(B, L, D) -> (B, H, L, D/H)``, head h = columns ``h·D/H:(h+1)·D/H``."""
    bugs = {
        "view_without_transpose": (
            lambda x, h: x.reshape(_dims(x, h)[0], h, _dims(x, h)[1], _dims(x, h)[3]),
            "you viewed (B, L, D) directly as (B, H, L, D/H): the shape is right but each head "
            "now holds pieces of *different tokens*. View as (B, L, H, D/H), then "
            "`.transpose(1, 2)`."),
        "heads_interleaved": (
            lambda x, h: x.reshape(*_dims(x, h)[:2], _dims(x, h)[3], h).permute(0, 3, 1, 2),
            "your heads take every H-th column (interleaved): head h must own the block of "
            "columns h·D/H to (h+1)·D/H. View as (B, L, H, D/H), not (B, L, D/H, H)."),
    }
    shape_bugs = {
        "missing_transpose": (
            lambda x, h: x.reshape(_dims(x, h)),
            "you returned (B, L, H, D/H): the view is right, now swap L and H with "
            "`.transpose(1, 2)` so that each head is a (L, D/H) matrix."),
        "wrong_transpose": (
            lambda x, h: x.reshape(_dims(x, h)).permute(0, 2, 3, 1),
            "you returned (B, H, D/H, L): transpose only L and H (`.transpose(1, 2)`), "
            "each head must be (L, D/H) with tokens as rows."),
    }
    return _check("split_heads", fn, split_heads, _split_cases(), bugs, shape_bugs)


def _merge_cases() -> list[Case]:
    return [Case((split_heads(c.args[0], c.args[1]).contiguous(),)) for c in _split_cases()]


@register(merge_heads)
def check_merge_heads(fn) -> CheckResult:
    """``fn(x)``: ``(B, H, L, D/H) -> (B, L, D)``, the inverse of ``split_heads``."""
    def flat(x):
        b, h, length, dh = x.shape
        return b, length, h * dh

    bugs = {
        "view_without_transpose": (
            lambda x: x.reshape(flat(x)),
            "you reshaped (B, H, L, D/H) straight to (B, L, D): rows of different heads and "
            "tokens get mixed. First `.transpose(1, 2)` to (B, L, H, D/H), then reshape."),
        "heads_interleaved": (
            lambda x: x.permute(0, 2, 3, 1).reshape(flat(x)),
            "your columns are interleaved (head h's features every H-th column): transpose to "
            "(B, L, H, D/H), not (B, L, D/H, H), before flattening."),
    }
    shape_bugs = {
        "missing_reshape": (
            lambda x: x.transpose(1, 2),
            "you returned (B, L, H, D/H): flatten the last two dimensions into D "
            "(`.reshape(B, L, H * D/H)`)."),
    }
    return _check("merge_heads", fn, merge_heads, _merge_cases(), bugs, shape_bugs)


# --- exercise 2: the forward pass ---------------------------------------------------------

def multi_head_attention(x, w_q, w_k, w_v, w_o, n_heads):
    """Reference multi-head self-attention without biases.

    ``x (B, N, D)``, weights ``(D, D)`` applied as ``x @ w`` ->
    ``(output (B, N, D), weights (B, H, N, N))``.
    """
    q, k, v = (split_heads(x @ w, n_heads) for w in (w_q, w_k, w_v))
    out, weights = scaled_dot_product_attention(q, k, v)
    return merge_heads(out) @ w_o, weights


def _mha_variant(*, scale="d_head", split=split_heads, merge=merge_heads, project=True,
                 axis=-1, weights_out=None):
    def fn(x, w_q, w_k, w_v, w_o, n_heads):
        q, k, v = (split(x @ w, n_heads) for w in (w_q, w_k, w_v))
        d = {"d_head": q.shape[-1], "d_model": x.shape[-1], "none": 1}[scale]
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), dim=axis)
        out = merge(weights @ v)
        out = out @ w_o if project else out
        return out, (weights if weights_out is None else weights_out(weights))

    return fn


def _split_view_only(x, n_heads):
    b, length, d = x.shape
    return x.reshape(b, n_heads, length, d // n_heads)


def _merge_view_only(x):
    b, h, length, dh = x.shape
    return x.reshape(b, length, h * dh)


def _single_head(x, w_q, w_k, w_v, w_o, n_heads):
    out, weights = multi_head_attention(x, w_q, w_k, w_v, w_o, 1)
    return out, weights[:, 0]


@register(multi_head_attention)
def check_multi_head_attention(fn) -> CheckResult:
    """``fn(x, w_q, w_k, w_v, w_o, n_heads) -> (output (B, N, D), weights (B, H, N, N))``."""
    # D = 12 and H = 3: sqrt(d_model) = 3.46 differs from sqrt(d_head) = 2
    cases = [
        Case((_randn(2, 5, 12), *(_randn(12, 12, seed=s) / 3 for s in (1, 2, 3, 4)), 3)),
        Case((_randn(1, 4, 8, seed=5), *(_randn(8, 8, seed=s) / 3 for s in (6, 7, 8, 9)), 2)),
    ]
    bugs = {
        "missing_output_projection": (
            _mha_variant(project=False),
            "the weights are right but the output is not: you forgot the output projection "
            "(multiply the merged heads by W_o)."),
        "sqrt_d_model": (
            _mha_variant(scale="d_model"),
            "you scaled by √d_model; each head's scores are scaled by √d_head = √(D/H), the "
            "size of *its* queries and keys."),
        "missing_scale": (
            _mha_variant(scale="none"),
            "the scores are not scaled: divide each head's Q Kᵀ by √d_head."),
        "view_without_transpose": (
            _mha_variant(split=_split_view_only),
            "the heads were split with a plain view (no transpose): each head mixes pieces of "
            "different tokens. View as (B, N, H, D/H), then transpose(1, 2)."),
        "heads_not_merged": (
            _mha_variant(merge=_merge_view_only),
            "the weights are right but the heads are not merged correctly: transpose "
            "(B, H, N, D/H) back to (B, N, H, D/H) before reshaping to (B, N, D)."),
        "wrong_axis": (
            _mha_variant(axis=-2),
            "softmax over the wrong axis: each query's weights over the keys (the last axis) "
            "must sum to 1."),
    }
    shape_bugs = {
        "averaged_weights": (
            _mha_variant(weights_out=lambda w: w.mean(dim=1)),
            "the output is right, but return the weights of every head, (B, H, N, N), not "
            "their average (torch's `average_attn_weights=True` default)."),
        "single_head": (
            _single_head,
            "you computed one head of size D: split Q, K and V into n_heads heads of size "
            "D/H, attend in each, and return weights of shape (B, H, N, N)."),
    }
    return _check("multi_head_attention", fn, multi_head_attention, cases, bugs, shape_bugs,
                  returns=("output", "weights"))


# --- exercise 3: counting parameters ------------------------------------------------------

def count_parameters(d_model: int, n_heads: int, bias: bool = True) -> int:
    """Parameters of multi-head attention: four ``D × D`` matrices, plus four ``D`` biases."""
    return 4 * d_model * d_model + (4 * d_model if bias else 0)


@register(count_parameters)
def check_count_parameters(fn) -> CheckResult:
    """``fn(d_model, n_heads, bias=True) -> int``."""
    cases = [Case((12, 3), {"bias": True}), Case((8, 2), {"bias": False}),
             Case((16, 4), {"bias": True}), Case((6, 1), {"bias": False})]

    def per_head(d, h, b, square):  # H heads each with their own q, k, v (+ one W_o)
        dh = d // h
        q_k_v = 3 * h * ((dh if square else d) * dh + (dh if b else 0))
        return q_k_v + d * d + (d if b else 0)

    bugs = {
        "forgot_biases": (lambda d, h, bias=True: 4 * d * d,
                          "you left out the biases: each of the four projections has a bias of "
                          "size d_model (when bias=True)."),
        "ignores_bias_flag": (lambda d, h, bias=True: 4 * d * d + 4 * d,
                              "you counted the biases even with bias=False."),
        "forgot_output_projection": (lambda d, h, bias=True: 3 * d * d + (3 * d if bias else 0),
                                     "you counted only W_q, W_k and W_v: the output projection "
                                     "W_o (d_model × d_model, plus its bias) is a fourth matrix."),
        "block_diagonal": (lambda d, h, bias=True: per_head(d, h, bias, square=True),
                           "you gave each head d_head × d_head matrices; each head's W_q^h is "
                           "d_model × d_head: it reads all d_model input features."),
        "heads_full_size": (lambda d, h, bias=True: h * (3 * d * d + (3 * d if bias else 0))
                            + d * d + (d if bias else 0),
                            "you gave every head full d_model × d_model projections; each head's "
                            "are d_model × d_head, so H heads together cost as much as one big "
                            "head."),
    }
    return _check("count_parameters", fn, count_parameters, cases, bugs)
