"""Checks for chapter 2's exercises: cross-attention, a key padding mask, reading an alignment."""

from __future__ import annotations

import math

import torch

from ..attention import cross_attention, scaled_dot_product_attention, softmax
from ..masks import padding_mask
from ._core import Case, CheckResult, register, run_check
from ._core import randn as _randn

__all__ = ["check_alignment", "check_cross_attention", "check_padded_attention"]


# ---------------------------------------------------------------- exercise 1: cross-attention

def _cross_variant(*, q_from="dec", kv_from="enc", scale_of=None, axis=-1):
    """A (possibly buggy) cross-attention; the defaults give the correct one."""

    def fn(x_dec, x_enc, w_q, w_k, w_v):
        src = {"dec": x_dec, "enc": x_enc}
        q = src[q_from] @ w_q
        k = src[kv_from] @ w_k
        v = src[kv_from] @ w_v
        scale = 1 / math.sqrt(q.shape[-1]) if scale_of is None else scale_of(q, x_dec)
        w = torch.softmax(q @ k.transpose(-2, -1) * scale, dim=axis)
        return w @ v, w

    return fn


@register(cross_attention)
def check_cross_attention(fn) -> CheckResult:
    """``fn(x_dec, x_enc, w_q, w_k, w_v) -> (output, weights)``: cross-attention."""
    # d_dec = d_enc in every case, so a decoder/encoder mix-up runs (and is recognised by its
    # values) instead of failing on a matrix product. Case 1 has N = M: mixed-up sources give
    # the right shapes there; d_k = 3 differs from d_model = 6 (wrong scale) and d_v = 2 from
    # M = 4 (returning (weights, output) swapped is a wrong shape). Case 2 is batched, N != M.
    cases = [
        Case((_randn(4, 6), _randn(4, 6, seed=1), _randn(6, 3, seed=2), _randn(6, 3, seed=3),
              _randn(6, 2, seed=4))),
        Case((_randn(2, 3, 5, seed=5), _randn(2, 6, 5, seed=6), _randn(5, 3, seed=7),
              _randn(5, 3, seed=8), _randn(5, 2, seed=9))),
    ]
    bugs = {
        "kv_from_decoder": (_cross_variant(kv_from="dec"),
                            "keys and values come from the decoder: in cross-attention only the "
                            "queries come from x_dec; K = x_enc W_k and V = x_enc W_v."),
        "swapped_sources": (_cross_variant(q_from="enc", kv_from="dec"),
                            "decoder and encoder are swapped: queries come from x_dec (the "
                            "target), keys and values from x_enc (the source)."),
        "missing_scale": (_cross_variant(scale_of=lambda q, x: 1.0),
                          "the scores are not scaled: divide Q Kᵀ by √d_k."),
        "sqrt_d_model": (_cross_variant(scale_of=lambda q, x: 1 / math.sqrt(x.shape[-1])),
                         "scaled by √d_model; the scale is 1/√d_k (the size of a query/key)."),
        "wrong_axis": (_cross_variant(axis=-2),
                       "softmax over the wrong axis: each target token's weights over the "
                       "source tokens (the last axis) must sum to 1."),
    }
    return run_check("cross_attention", fn, cross_attention, cases, bugs,
                     returns=("output", "weights"))


# ---------------------------------------------------------------- exercise 2: key padding mask

def _padded_reference(q, k, v, lengths):
    mask = padding_mask(torch.as_tensor(lengths), k.shape[-2])[:, None, :]
    return scaled_dot_product_attention(q, k, v, mask=mask)


def _padded_variant(*, keep_of=None, where="before", fill=float("-inf"), scaled=True,
                    empty="zero"):
    """A (possibly buggy) padded attention; the defaults give the correct one.

    ``empty``: what a query with no key left gets (a source of length 0, or a mask that hides
    every key): "zero" weights (as ``utils.attention.softmax``), "nan" (torch.softmax of a row
    of -inf) or "uniform" (a large negative fill such as -1e9 instead of -inf).
    """

    def fn(q, k, v, lengths):
        lengths = torch.as_tensor(lengths)
        pos = torch.arange(k.shape[-2])[None, :]
        keep = pos < lengths[:, None] if keep_of is None else keep_of(pos, lengths[:, None])
        keep = keep[:, None, :]  # (B, 1, M): broadcast over the queries
        s = q @ k.transpose(-2, -1)
        if scaled:
            s = s / math.sqrt(q.shape[-1])
        if where == "before" and empty == "zero" and fill == float("-inf"):
            w = softmax(s, dim=-1, mask=keep)  # as utils.attention.softmax: dead rows are 0
        elif where == "before":
            big = torch.finfo(s.dtype).min if empty == "uniform" else fill
            w = torch.softmax(s.masked_fill(~keep, big), dim=-1)
        elif where == "after":
            w = torch.softmax(s, dim=-1) * keep
        else:  # no mask at all
            w = torch.softmax(s, dim=-1)
        return w @ v, w

    return fn


def _empty_rows(**kwargs):
    """The same bug with each handling of a query that has no key left (see ``empty``)."""
    return tuple(_padded_variant(empty=e, **kwargs) for e in ("zero", "nan", "uniform"))


_INVERTED = ("mask polarity inverted: your mask is True at the padding, so only padding is "
             "read. Here True = may attend: the real tokens are the positions < length.")


@register(_padded_reference)
def check_padded_attention(fn) -> CheckResult:
    """``fn(q, k, v, lengths) -> (output, weights)``: attention with a key padding mask.

    A source of length 0 has no key: its queries get zero weights and a zero output (as
    ``utils.attention.scaled_dot_product_attention`` gives), not NaN or uniform weights.
    """
    # Case 1: every source is padded (lengths < M), so an inverted mask never hides a whole row
    # (which torch.softmax would turn into NaN). Case 2: a full-length source, a short one and
    # an empty one (length 0), N != M.
    cases = [
        Case((_randn(3, 5, 4), _randn(3, 5, 4, seed=1), _randn(3, 5, 3, seed=2),
              torch.tensor([3, 4, 2]))),
        Case((_randn(3, 3, 4, seed=3), _randn(3, 6, 4, seed=4), _randn(3, 6, 2, seed=5),
              torch.tensor([6, 2, 0]))),
    ]
    bugs = {
        "empty_source_nan": (_padded_variant(empty="nan"),
                             "a source of length 0 gives NaN: all its scores are -inf and "
                             "softmax computes 0/0. A query with no key to read must get zero "
                             "weights (and a zero output): use `utils.attention.softmax(scores, "
                             "mask=...)`, or zero the rows where the mask has no True."),
        "empty_source_uniform": (_padded_variant(empty="uniform"),
                                 "a source of length 0 gets uniform weights over its padding (a "
                                 "large negative fill such as -1e9 or finfo.min instead of "
                                 "-inf): it then reads padding. A query with no key to read "
                                 "must get zero weights."),
        "no_mask": (_padded_variant(where="none"),
                    "the padded keys still get weight: mask them (fill their scores with -inf) "
                    "before the softmax."),
        "inverted_mask": (_padded_variant(keep_of=lambda pos, n: pos >= n), _INVERTED),
        "inverted_mask_nan": (_padded_variant(keep_of=lambda pos, n: pos >= n, empty="nan"),
                              _INVERTED + " (A source with no padding then has every key "
                              "masked: its rows are NaN.)"),
        "off_by_one": (_empty_rows(keep_of=lambda pos, n: pos <= n),
                       "off by one: `<=` lets the first padded key through; a source of "
                       "length L has real tokens at positions 0..L-1 (`arange(M) < L`)."),
        "off_by_one_short": (_empty_rows(keep_of=lambda pos, n: pos < n - 1),
                             "off by one: the last real token is masked; a source of length L "
                             "has real tokens at positions 0..L-1 (`arange(M) < L`)."),
        "after_softmax": (_padded_variant(where="after"),
                          "the mask is applied after the softmax: the padded weights are 0 but "
                          "the rows no longer sum to 1 (not renormalised). Fill the scores with "
                          "-inf before the softmax."),
        "zero_not_inf": (_padded_variant(fill=0.0),
                         "the padded scores are set to 0, not -inf: exp(0) = 1, so padding "
                         "still gets weight. Fill with float('-inf')."),
        "missing_scale": (_empty_rows(scaled=False),
                          "the scores are not scaled: divide Q Kᵀ by √d_k."),
    }
    return run_check("padded attention", fn, _padded_reference, cases, bugs,
                     returns=("output", "weights"))


# ---------------------------------------------------------------- exercise 3: alignment

def _alignment(weights: torch.Tensor) -> torch.Tensor:
    return weights.argmax(dim=-1)


@register(_alignment)
def check_alignment(fn) -> CheckResult:
    """``fn(weights (..., N, M)) -> (..., N)`` long: each target token's most-read source token."""
    def weights(*shape, seed):
        return torch.softmax(3 * _randn(*shape, seed=seed), dim=-1)

    # Case 1 is square, so an argmax over the wrong axis has the right shape.
    cases = [Case((weights(4, 4, seed=0),)), Case((weights(3, 5, seed=1),)),
             Case((weights(2, 3, 5, seed=2),))]
    bugs = {
        "wrong_axis": (lambda w: w.argmax(dim=-2),
                       "argmax over the wrong axis: that is, for each source token, the target "
                       "token that reads it most. Rows are target tokens: take the argmax "
                       "along the last axis (the source tokens)."),
        "wrong_axis_dim0": (lambda w: w.argmax(dim=0),
                            "argmax over dim 0: for a batch of weights (B, N, M) that is the "
                            "batch axis. Take the argmax along the last axis, dim=-1 (the "
                            "source tokens)."),
        "argmin": (lambda w: w.argmin(dim=-1),
                   "that is the least-read source token: use argmax."),
        "returned_values": (lambda w: w.max(dim=-1).values,
                            "you returned the largest weights; return their positions "
                            "(argmax, or .indices of max)."),
    }
    return run_check("alignment", fn, _alignment, cases, bugs)
