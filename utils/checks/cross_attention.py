"""Checks for chapter 2's exercises: cross-attention (implement), queries across two feature
spaces (design), a padded batch (debug), rows without their translation (predict, then run),
dropout on the attention weights (extend)."""

from __future__ import annotations

import math

import torch

from ..attention import cross_attention, scaled_dot_product_attention, self_attention, softmax
from ..examples.translation import embed, translation_example
from ..masks import padding_mask
from ._core import (
    Case,
    CheckFailed,
    CheckResult,
    call_student,
    compare,
    custom_check,
    expect_generator,
    expect_tensor,
    register,
    run_check,
)
from ._core import randn as _randn

__all__ = [
    "FRENCH",
    "check_attention_dropout",
    "check_cross_attention",
    "check_design_w_q",
    "check_padded_cross_attention",
    "check_rows_without_translation",
    "french_one_hot",
]

#: the utils functions that would answer the attention exercises in one call
_LIBRARY = (cross_attention, scaled_dot_product_attention, self_attention)


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


@register(_cross_variant())
def check_cross_attention(fn) -> CheckResult:
    """``fn(x_dec, x_enc, w_q, w_k, w_v) -> (output, weights)``: cross-attention, written with
    torch operations (a call of ``utils.attention``'s attention functions fails)."""
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
                     returns=("output", "weights"), forbid=_LIBRARY)


# ---------------------------------------------------------------- exercise 2: design W_Q

#: the French target words of the chapter's sentence, in order (all different)
FRENCH = translation_example().target_tokens


def french_one_hot(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The French words of the chapter's sentence in a space of their own: one-hot ``(9, 9)``,
    row i = word i of ``FRENCH`` (d_dec = 9, unlike the English states' d_enc = 14)."""
    return torch.eye(len(FRENCH), dtype=dtype)


def _design_w_q() -> torch.Tensor:
    """A correct design: each French word asks for the English features of its translation."""
    ex = translation_example()
    return 12.0 * ex.x_enc[ex.gold]


def _design_weights(w_q: torch.Tensor) -> torch.Tensor:
    ex = translation_example()
    w_k = torch.eye(len(ex.features), dtype=ex.x_enc.dtype)
    _, weights = cross_attention(french_one_hot(), ex.x_enc, w_q, w_k, ex.w_v)
    return weights


def _tie_text(words: list[str]) -> str:
    return " and ".join(f"“{w}”" for w in words)


@register(_design_w_q)
def check_design_w_q(fn) -> CheckResult:
    """``fn() -> W_Q (9, 14)`` float64: with the French words one-hot (``french_one_hot()``),
    the English states ``translation_example().x_enc`` and W_K = I (14 × 14), every French word
    puts more than 0.9 of its weight on the English word it translates."""
    ex = translation_example()
    n, d_enc = len(FRENCH), len(ex.features)

    def body() -> str:
        w_q = call_student(fn)
        w_q = expect_tensor(w_q, "W_Q", dtype=torch.float64)
        if tuple(w_q.shape) == (d_enc, n):
            raise CheckFailed("transposed", f"W_Q has shape {tuple(w_q.shape)}: it maps a "
                              f"decoder state ({n} French one-hot features) to the key space "
                              f"({d_enc} English features), so its shape is (d_dec, d_k) = "
                              f"({n}, {d_enc}): one row per French word.")
        if tuple(w_q.shape) != (n, d_enc):
            raise CheckFailed("wrong_shape", f"wrong shape for W_Q: expected ({n}, {d_enc}) "
                              f"(d_dec, d_k), got {tuple(w_q.shape)}")
        weights = _design_weights(w_q)
        weak = []
        for i, word in enumerate(FRENCH):
            row, gold = weights[i], ex.gold[i]
            top = torch.isclose(row, row.max(), rtol=0, atol=1e-9).nonzero().flatten().tolist()
            english = ex.source_tokens[gold]
            if len(top) == len(row):
                raise CheckFailed("uniform_row", f"“{word}” gives every English word the same "
                                  f"weight (1/{len(row)}): its query scores them all alike (a "
                                  f"zero row of W_Q?). Its row should ask for the features of "
                                  f"“{english}”.")
            if len(top) > 1:
                tied = [ex.source_tokens[j] for j in top]
                raise CheckFailed("tie", f"“{word}” splits its largest weight between "
                                  f"{_tie_text(tied)} ({row[top[0]].item():.2f} each): ask for "
                                  f"a feature that only “{english}” has.")
            if top[0] != gold:
                got = ex.source_tokens[top[0]]
                raise CheckFailed("wrong_word", f"“{word}” reads “{got}” most "
                                  f"({row[top[0]].item():.2f}), not “{english}” "
                                  f"({row[gold].item():.2f}): its row of W_Q should ask for "
                                  f"the features that “{english}” offers.")
            if row[gold] <= 0.9:
                weak.append((row[gold].item(), word, english))
        if weak:
            value, word, english = min(weak)
            raise CheckFailed("too_weak", f"every French word reads its translation most, but "
                              f"“{word}” puts only {value:.2f} on “{english}” (need > 0.9): "
                              f"the scores are too close; scale W_Q up.")
        lowest = min(weights[i, g].item() for i, g in enumerate(ex.gold))
        return (f"every French word puts more than 0.9 of its weight on the English word it "
                f"translates (the lowest weight: {lowest:.2f}).")

    return custom_check("design W_Q", body)


# ---------------------------------------------------------------- exercise 3: debug a padded batch

def _padded_reference(x_dec, x_enc, lengths, w_q, w_k, w_v):
    real = padding_mask(lengths, x_enc.shape[-2])
    return cross_attention(x_dec, x_enc, w_q, w_k, w_v, key_padding_mask=real)


def _padded_variant(*, mask="keys", softmax_dim=-1, fill=float("-inf"), where="before"):
    """A (possibly buggy) padded cross-attention; the defaults give the correct one.

    ``mask``: how the (B, M) mask of real tokens meets the (B, N, M) scores: "keys"
    (``[:, None, :]``, right), "as_is" (``real`` broadcast as (N, M): runs only if B = N),
    "rows" (``[:, :, None]``: masks target rows), "inverted" (fills the real tokens) or "none".
    """

    def fn(x_dec, x_enc, lengths, w_q, w_k, w_v):
        q, k, v = x_dec @ w_q, x_enc @ w_k, x_enc @ w_v
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        real = torch.arange(x_enc.shape[-2]) < lengths[:, None]
        hide = {"keys": ~real[:, None, :], "as_is": ~real, "rows": ~real[:, :, None],
                "inverted": real[:, None, :], "none": None}[mask]
        if hide is not None and where == "before":
            scores = scores.masked_fill(hide, fill)
        weights = torch.softmax(scores, dim=softmax_dim)
        if hide is not None and where == "after":
            weights = weights.masked_fill(hide, 0.0)
        return weights @ v, weights

    return fn


_AS_IS = ("the mask is still indexed as (B, M): against scores of shape (B, N, M) it lines up "
          "with the last two axes, (N, M), so it runs only when B = N, and then it masks "
          "sentence b's keys in target row b of every sentence. Give it a query axis: "
          "`real[:, None, :]`, shape (B, 1, M).")
_OVER_QUERIES = ("the softmax runs over dim=1: in a batch (B, N, M) that is the target tokens "
                 "(queries). Each target token's weights over its source must sum to 1: "
                 "softmax over the last axis, dim=-1.")


@register(_padded_variant())
def check_padded_cross_attention(fn) -> CheckResult:
    """``fn(x_dec (B, N, d_dec), x_enc (B, M, d_enc), lengths (B,), w_q, w_k, w_v) ->
    (output, weights)``: cross-attention over a padded batch of sources (every source has at
    least one token), padded keys exactly 0; with torch operations."""
    # Case 1 has B = N = 3 (the buggy function runs there, silently wrong), M = 5. Case 2 has
    # B = 2, N = 4, M = 6 and d_dec != d_enc, so a mask broadcast the wrong way raises.
    cases = [
        Case((_randn(3, 3, 4), _randn(3, 5, 4, seed=1), torch.tensor([5, 3, 2]),
              _randn(4, 3, seed=2), _randn(4, 3, seed=3), _randn(4, 2, seed=4))),
        Case((_randn(2, 4, 5, seed=5), _randn(2, 6, 3, seed=6), torch.tensor([6, 1]),
              _randn(5, 3, seed=7), _randn(3, 3, seed=8), _randn(3, 2, seed=9))),
    ]
    bugs = {
        "both_bugs": (_padded_variant(mask="as_is", softmax_dim=1),
                      "both bugs are still there (it raises on a batch where B != N). 1. "
                      + _AS_IS[0].upper() + _AS_IS[1:] + " 2. " + _OVER_QUERIES[0].upper()
                      + _OVER_QUERIES[1:]),
        "mask_as_is": (_padded_variant(mask="as_is"), _AS_IS),
        "softmax_over_queries": (_padded_variant(softmax_dim=1), _OVER_QUERIES),
        "mask_over_rows": ((_padded_variant(mask="rows"), _padded_variant(mask="rows",
                                                                          softmax_dim=1)),
                           "the mask `real[:, :, None]` has shape (B, M, 1): it hides target "
                           "rows, not source columns (and breaks when N != M). The padded "
                           "keys are columns: `real[:, None, :]`."),
        "inverted_mask": (_padded_variant(mask="inverted"),
                          "mask polarity inverted: you hide the real tokens and keep the "
                          "padding. `real` is True at real tokens: fill where it is False."),
        "no_mask": (_padded_variant(mask="none"),
                    "the padded keys still get weight: fill their scores with -inf before the "
                    "softmax."),
        "after_softmax": (_padded_variant(where="after"),
                          "the mask is applied after the softmax: the padded weights are 0 but "
                          "the rows no longer sum to 1. Fill the scores with -inf before the "
                          "softmax."),
        "zero_not_inf": (_padded_variant(fill=0.0),
                         "the padded scores are set to 0, not -inf: exp(0) = 1, so padding "
                         "still gets weight. Fill with float('-inf')."),
    }
    return run_check("padded cross-attention", fn, _padded_reference, cases, bugs,
                     returns=("output", "weights"), forbid=_LIBRARY)


# ---------------------------------------------------------------- exercise 4: predict, then run

#: the rows to predict: French word -> the English source it reads (its translation is missing
#: from the first, the only preposition from the second; the third is there, in part)
PREDICT_ROWS = {"noir": "the red cat sat", "sur": "the black cat sat", "s'est": "the black cat sat"}


def _row(word: str, source: str) -> tuple[list[str], torch.Tensor]:
    """The designed weights of French ``word`` over the English ``source``."""
    ex = translation_example()
    tokens = source.split()
    _, weights = cross_attention(embed([word]), embed(tokens), ex.w_q, ex.w_k, ex.w_v)
    return tokens, weights[0]


def _outcome(word: str, source: str) -> tuple[str, bool, str]:
    """(the word read most or "tie", is its weight above 0.5, a description)."""
    tokens, row = _row(word, source)
    top = torch.isclose(row, row.max(), rtol=0, atol=1e-9).nonzero().flatten().tolist()
    value = row[top[0]].item()
    if len(top) > 1:
        return "tie", value > 0.5, f"a {len(top)}-way tie ({value:.2f} each)"
    return tokens[top[0]], value > 0.5, f"“{tokens[top[0]]}” ({value:.2f})"


def _predicted_rows() -> dict:
    """The right prediction (what runs; a test checks it against :func:`_outcome`)."""
    return {"noir": ("red", False), "sur": ("tie", False), "s'est": ("sat", True)}


@register(_predicted_rows)
def check_rows_without_translation(fn) -> CheckResult:
    """``fn() -> {"noir": (word, above_half), "sur": ..., "s'est": ...}``: for each French word,
    the English word its designed row reads most over ``PREDICT_ROWS[word]`` (``"tie"`` if
    several share the largest weight) and whether that weight is above 0.5. A prediction: the
    check fails a function that computes attention weights."""
    forbid = (*_LIBRARY, softmax, torch.softmax, torch.nn.functional.softmax)

    def body() -> str:
        got = call_student(fn)
        if got is None:
            raise CheckFailed("no_return", "your function returned None: did you forget "
                              "`return`?")
        if not isinstance(got, dict):
            raise CheckFailed("wrong_type", f"return a dict such as {{\"noir\": (\"red\", True), "
                              f"...}}, not {type(got).__name__}.")
        missing = [w for w in PREDICT_ROWS if w not in got]
        if missing:
            raise CheckFailed("wrong_output", f"predict every row: missing {missing} (keys "
                              f"{list(PREDICT_ROWS)}).")
        for word, source in PREDICT_ROWS.items():
            value = got[word]
            if (not isinstance(value, tuple | list) or len(value) != 2
                    or not isinstance(value[0], str) or not isinstance(value[1], bool)):
                raise CheckFailed("wrong_type", f"the prediction for “{word}” must be a pair "
                                  f"(an English word or \"tie\", True or False), got "
                                  f"{value!r}.")
            tokens = source.split()
            if value[0] not in (*tokens, "tie"):
                raise CheckFailed("wrong_type", f"“{word}” reads “{source}”: predict one of "
                                  f"{tokens} or \"tie\", not {value[0]!r}.")
        wrong = []
        for word, source in PREDICT_ROWS.items():
            read, above, text = _outcome(word, source)
            if tuple(got[word]) != (read, above):
                wrong.append(f"“{word}” over “{source}” reads {text}, you predicted "
                             f"{tuple(got[word])}")
        if wrong:
            raise CheckFailed("wrong_prediction", "; ".join(wrong) + ". Recompute its scores "
                              "from the designed W_Q and W_K: which features does each query "
                              "ask for, and which English words offer them?")
        return "; ".join(f"“{w}” over “{s}” reads {_outcome(w, s)[2]}"
                         for w, s in PREDICT_ROWS.items()) + "."

    return custom_check("rows without their translation", body, forbid=forbid)


# ---------------------------------------------------------------- exercise 5: dropout on weights

def _dropout_attention(q, k, v, p, training, generator):
    """Attention whose weights are dropped in training: zeroed with probability p (the draws
    from ``generator``), the kept ones divided by 1 - p; nothing dropped in eval."""
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    if training and p > 0:
        keep = torch.rand(weights.shape, generator=generator, dtype=weights.dtype) >= p
        weights = weights * keep / (1 - p)
    return weights @ v, weights


def _plain(q, k, v):
    w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    return w @ v, w


def _pair(out, what: str, shapes) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(out, tuple | list) or len(out) != 2:
        if out is None:
            raise CheckFailed("no_return", f"{what}: your function returned None: did you "
                              f"forget `return`?")
        raise CheckFailed("wrong_output", f"{what}: return two values, (output, weights).")
    output = expect_tensor(out[0], f"the output ({what})", shape=shapes[0], dtype=torch.float64)
    weights = expect_tensor(out[1], f"the weights ({what})", shape=shapes[1],
                            dtype=torch.float64)
    return output, weights


@register(_dropout_attention)
def check_attention_dropout(fn) -> CheckResult:
    """``fn(q, k, v, p, training, generator) -> (output, weights)``: attention with dropout
    on its weights in training (each zeroed with probability p, drawn from ``generator``, the
    kept ones divided by 1 - p; ``output = weights @ v``), plain attention in eval."""
    q, k, v = _randn(4, 16, 8), _randn(4, 20, 8, seed=1), _randn(4, 20, 3, seed=2)
    shapes = ((4, 16, 3), (4, 16, 20))
    out_plain, w_plain = _plain(q, k, v)
    p = 0.25

    def body() -> str:
        # eval: exactly attention, whatever p
        got = _pair(call_student(fn, q, k, v, 0.5, False, torch.Generator().manual_seed(0)),
                    "eval mode", shapes)
        if not torch.allclose(got[1], w_plain, atol=1e-9):
            dropped = (got[1] == 0).any() and not (w_plain == 0).any()
            raise CheckFailed("dropout_in_eval" if dropped else "values",
                              "in eval mode (training=False) nothing is dropped: the weights "
                              "must be softmax(q kᵀ / √d_k) unchanged." if dropped else
                              "in eval mode the weights should be softmax(q kᵀ / √d_k): "
                              + _first_difference(got[1], w_plain))
        compare(got, (out_plain, w_plain), returns=("output", "weights"))
        # training with p = 0: nothing to drop
        got = _pair(call_student(fn, q, k, v, 0.0, True, torch.Generator().manual_seed(0)),
                    "training, p = 0", shapes)
        if (got[1] == 0).all():
            raise CheckFailed("inverted_keep", "with p = 0 every weight was dropped: you drop "
                              "with probability 1 − p. Keep a weight where the uniform draw is "
                              ">= p (drop where it is < p).")
        compare(got, (out_plain, w_plain), returns=("output", "weights"))
        # training with p: draws from the generator, each weight 0 or w / (1 - p)
        output, weights = expect_generator(
            lambda g: _pair(call_student(fn, q, k, v, p, True, g), f"training, p = {p}", shapes),
            seed=3, ignores=("two calls with identically seeded generators dropped different "
                             "weights: draw the keep mask from `generator`, e.g. "
                             "`torch.rand(weights.shape, generator=generator) >= p` "
                             "(torch.nn.functional.dropout draws from the global generator)."))
        zero = weights == 0
        kept = ~zero
        n, expected = weights.numel(), weights.numel() * p
        spread = 5 * math.sqrt(n * p * (1 - p))
        if not zero.any():
            before = not torch.allclose(weights, w_plain, atol=1e-9)
            raise CheckFailed("before_softmax" if before else "nothing_dropped",
                              "no weight is exactly 0: dropout zeroes weights after the "
                              "softmax (dropping scores before it only reshuffles the weights)."
                              if before else "in training (training=True) each weight must be "
                              f"zeroed with probability p ({p} here): none was.")
        ratio = weights[kept] / w_plain[kept]
        if torch.allclose(ratio, torch.ones_like(ratio), rtol=1e-6):
            raise CheckFailed("not_scaled", f"the kept weights are unchanged: divide them by "
                              f"1 − p ({1 - p} here), so that each weight keeps its expected "
                              f"value (that is why the rows no longer sum to 1).")
        if torch.allclose(ratio, torch.full_like(ratio, 1 - p), rtol=1e-6):
            raise CheckFailed("scaled_wrong_way", f"the kept weights are multiplied by 1 − p; "
                              f"divide them by 1 − p ({1 - p} here).")
        if torch.allclose(weights.sum(-1), torch.ones(weights.shape[:-1], dtype=weights.dtype)):
            raise CheckFailed("renormalised", "the rows sum to 1 again: dropout does not "
                              "renormalise; it divides every kept weight by 1 − p, so each "
                              "weight keeps its expected value.")
        if not torch.allclose(ratio, torch.full_like(ratio, 1 / (1 - p)), rtol=1e-6):
            raise CheckFailed("values", "each weight must be either 0 or its softmax value "
                              f"divided by 1 − p: {_first_difference(weights, w_plain / (1 - p), kept)}")
        count = int(zero.sum())
        if abs(count - n * (1 - p)) < spread:
            raise CheckFailed("inverted_keep", f"{count} of {n} weights are 0, about 1 − p of "
                              f"them: you drop with probability 1 − p. Keep a weight where the "
                              f"uniform draw is >= p (drop where it is < p).")
        if abs(count - expected) > spread:
            raise CheckFailed("rate", f"{count} of {n} weights are 0; with p = {p} expect "
                              f"about {expected:.0f} (± {spread:.0f}).")
        compare(output, weights @ v, returns=None,
                context="the output must be the dropped weights times the values")
        return (f"eval mode is plain attention; in training {count} of {n} weights are 0 "
                f"(p = {p}), the others divided by {1 - p}, drawn from the generator.")

    return custom_check("attention dropout", body)


def _first_difference(got: torch.Tensor, want: torch.Tensor, where=None) -> str:
    bad = ~torch.isclose(got, want, rtol=1e-6, atol=1e-9)
    if where is not None:
        bad &= where
    idx = tuple(int(i) for i in bad.nonzero()[0])
    return f"at {list(idx)} expected {want[idx].item():.4f}, got {got[idx].item():.4f}"
