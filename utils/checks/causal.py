"""Checks for chapter 4's exercises: the causal mask, masking before the softmax, the
bottom-right mask of a KV cache, and causal + padding without NaN."""

from __future__ import annotations

import math

import torch

from ..attention import scaled_dot_product_attention, softmax
from ..masks import causal_mask
from ._core import Case, CheckResult, register, run_check
from ._core import randn as _randn

__all__ = [
    "check_causal_attention",
    "check_causal_mask",
    "check_causal_mask_kv",
    "check_padded_causal_softmax",
]


def _ones(n_q: int, n_k: int) -> torch.Tensor:
    return torch.ones(n_q, n_k, dtype=torch.bool)


def _additive(mask_of):
    """The mask as an additive float mask (0 where allowed, -inf where blocked): a typical bug."""
    def fn(*args):
        allowed = mask_of(*args)
        return torch.zeros(allowed.shape).masked_fill(~allowed, float("-inf"))

    return fn


_ADDITIVE_HINT = ("you returned an additive float mask (0 and -inf); return a bool mask "
                  "(True = may attend), e.g. with `torch.ones(..., dtype=torch.bool)`.")


# --------------------------------------------------------------------------- exercise 1


def _causal_mask(n):
    return causal_mask(n)


@register(_causal_mask)
def check_causal_mask(fn) -> CheckResult:
    """``fn(n) -> (n, n)`` bool: True where query i may attend to key j, i.e. ``j <= i``."""
    name = "causal_mask"
    # n = 5 first: there every bug below gives a different mask (at n = 1 several coincide)
    cases = [Case((5,)), Case((1,)), Case((8,))]
    bugs = {
        "additive_mask": (_additive(causal_mask), _ADDITIVE_HINT),
        "diagonal_hidden": (lambda n: _ones(n, n).tril(-1),
                            "the diagonal is hidden (j < i): a token may attend to itself, "
                            "use j <= i (`tril()` with diagonal=0). Without it the first "
                            "token sees nothing at all."),
        "upper_triangular": (lambda n: _ones(n, n).triu(1),
                             "True marks the future: that is the “True = blocked” convention "
                             "(nn.MultiheadAttention's attn_mask). Here True = may attend: "
                             "the lower triangle, `tril()`."),
        "anti_causal": (lambda n: _ones(n, n).triu(),
                        "each token sees itself and the *future* (j >= i): the mask is "
                        "transposed; query i (row) may see keys j <= i (columns)."),
        "no_mask": (lambda n: _ones(n, n),
                    "every entry is True: that is no mask at all."),
    }
    return run_check(name, fn, _causal_mask, cases, bugs)


# --------------------------------------------------------------------------- exercise 2


def _causal_variant(mode: str):
    def fn(q, k, v):
        n = q.shape[-2]
        scores = q @ k.transpose(-2, -1) / (1.0 if mode == "missing_scale"
                                             else math.sqrt(q.shape[-1]))
        mask = _ones(n, n).tril()
        if mode == "after":
            weights = torch.softmax(scores, dim=-1) * mask
        else:
            if mode == "diagonal":
                mask = _ones(n, n).tril(-1)
            elif mode == "polarity":
                mask = ~mask
            elif mode == "none":
                mask = _ones(n, n)
            fill = 0.0 if mode == "zero" else float("-inf")
            weights = torch.softmax(scores.masked_fill(~mask, fill), dim=-1)
        return weights @ v, weights

    return fn


def _reference_causal(q, k, v):
    return scaled_dot_product_attention(q, k, v, mask=causal_mask(q.shape[-2]))


@register(_reference_causal)
def check_causal_attention(fn) -> CheckResult:
    """``fn(q, k, v) -> (output, weights)``: causal scaled dot-product attention (square)."""
    cases = [
        Case((_randn(5, 3), _randn(5, 3, seed=1), _randn(5, 2, seed=2))),
        Case((_randn(2, 4, 3, seed=3), _randn(2, 4, 3, seed=4), _randn(2, 4, 3, seed=5))),
    ]
    bugs = {
        "masked_after_softmax": (_causal_variant("after"),
                                 "you zeroed the future *after* the softmax: the rows no "
                                 "longer sum to 1 and the future still changes the normaliser "
                                 "(it leaks). Fill the scores with -inf *before* the softmax."),
        "zero_fill": (_causal_variant("zero"),
                      "masked scores were set to 0, and exp(0) = 1 still gives them weight: "
                      "fill them with float('-inf')."),
        "diagonal_hidden": (_causal_variant("diagonal"),
                            "the diagonal is masked too (j < i): the first token then has no "
                            "key at all (NaN). A token may attend to itself: j <= i."),
        "mask_polarity": (_causal_variant("polarity"),
                          "the mask is inverted: you hid the past and kept the future. "
                          "masked_fill fills where its mask is True: use `~mask`."),
        "no_mask": (_causal_variant("none"),
                    "no causal mask was applied: every query sees the future."),
        "missing_scale": (_causal_variant("missing_scale"),
                          "the scores are not scaled: divide Q Kᵀ by √d_k."),
    }
    return run_check("causal_attention", fn, _reference_causal, cases, bugs,
                     returns=("output", "weights"))


# --------------------------------------------------------------------------- exercise 3


def _causal_mask_kv(n_q, n_k):
    return causal_mask(n_q, n_k)


@register(_causal_mask_kv)
def check_causal_mask_kv(fn) -> CheckResult:
    """``fn(n_q, n_k) -> (n_q, n_k)`` bool: the newest ``n_q`` of ``n_k`` tokens, causal
    (bottom-right aligned: query i sees keys ``j <= i + n_k - n_q``)."""
    name = "causal_mask_kv"
    cases = [Case((3, 7)), Case((1, 5)), Case((4, 4)), Case((2, 3))]

    def offsets(n_q, n_k):
        return torch.arange(n_q)[:, None] - torch.arange(n_k)[None, :]

    bugs = {
        "additive_mask": (_additive(causal_mask), _ADDITIVE_HINT),
        "top_left_aligned": (lambda n_q, n_k: _ones(n_q, n_k).tril(),
                             "top-left aligned (what `is_causal=True` does): the new queries "
                             "are the *last* n_q positions, so query i sees keys up to "
                             "i + (n_k - n_q)."),
        "diagonal_hidden": (lambda n_q, n_k: offsets(n_q, n_k) > n_q - n_k,
                            "off by one: the newest token cannot see itself. Query i sees "
                            "keys j <= i + (n_k - n_q), diagonal included."),
        "wrong_offset_sign": (lambda n_q, n_k: offsets(n_q, n_k) >= n_k - n_q,
                              "the offset has the wrong sign: the queries are *ahead* of the "
                              "start by n_k - n_q, so they see more keys, not fewer."),
        "upper_triangular": (lambda n_q, n_k: ~causal_mask(n_q, n_k),
                             "True marks the blocked keys: here True = may attend."),
    }
    return run_check(name, fn, _causal_mask_kv, cases, bugs)


# --------------------------------------------------------------------------- exercise 4


def _padded_reference(scores, key_padding):
    n = scores.shape[-1]
    mask = causal_mask(n) & key_padding[:, None, :]
    return softmax(scores, mask=mask)


def _padded_variant(mode: str):
    def fn(scores, key_padding):
        n = scores.shape[-1]
        causal = causal_mask(n)
        keys = key_padding[:, None, :]
        mask = {"no_padding": causal[None].expand(scores.shape),
                "no_causal": keys.expand(scores.shape),
                "queries": causal & key_padding[:, :, None],
                "or": causal | keys}.get(mode, causal & keys)
        if mode == "nan":
            return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
        if mode == "uniform":
            return torch.softmax(scores.masked_fill(~mask, torch.finfo(scores.dtype).min),
                                 dim=-1)
        return softmax(scores, mask=mask)

    return fn


def _left_padded(lengths, n):
    return torch.arange(n)[None, :] >= n - torch.tensor(lengths)[:, None]


@register(_padded_reference)
def check_padded_causal_softmax(fn) -> CheckResult:
    """``fn(scores (B, N, N), key_padding (B, N) bool, True = real token) -> weights``:
    causal and padding masks combined, softmax, a fully masked row all zeros (no NaN)."""
    name = "padded_causal_softmax"
    cases = [
        Case((_randn(2, 5, 5, seed=6), _left_padded([5, 3], 5))),  # left padding
        Case((_randn(2, 4, 4, seed=7), torch.arange(4)[None, :] < torch.tensor([[4], [2]]))),
        Case((_randn(3, 6, 6, seed=8), _left_padded([6, 1, 4], 6))),
    ]
    bugs = {
        "nan_fully_masked": (_padded_variant("nan"),
                             "NaN on fully masked rows: with left padding a pad query sees "
                             "only pad keys, every score is -inf and softmax gives 0/0. Give "
                             "such rows zero weights (e.g. `utils.attention.softmax`, or "
                             "zero the rows where the mask has no True)."),
        "uniform_fully_masked": (_padded_variant("uniform"),
                                 "a fully masked row got uniform weights (a large negative "
                                 "fill such as -1e9 or finfo.min): it then reads the padding. "
                                 "A row with nothing to attend to must be all zeros."),
        "no_padding": (_padded_variant("no_padding"),
                       "only the causal mask was applied: padded keys still get weight. "
                       "Combine with the key padding mask: `causal & key_padding[:, None, :]`."),
        "no_causal": (_padded_variant("no_causal"),
                      "only the padding mask was applied: queries see the future. Combine "
                      "with the causal mask using &."),
        "padding_on_queries": (_padded_variant("queries"),
                               "the padding mask was applied to the query rows "
                               "(key_padding[:, :, None]); it masks *keys*: "
                               "key_padding[:, None, :]."),
        "or_instead_of_and": (_padded_variant("or"),
                              "the masks were combined with | (either allows): a key must be "
                              "allowed by both, use &."),
    }
    return run_check(name, fn, _padded_reference, cases, bugs)
