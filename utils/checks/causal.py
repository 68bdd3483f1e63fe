"""Checks for chapter 4's exercises: causal attention written with torch, a prediction of which
attention weights change when one token changes, the KV-cache step of the trained language
model, and a padded causal attention to debug."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import attention, kv_cache, masks
from ..attention import scaled_dot_product_attention, softmax
from ..masks import causal_mask
from ..multihead import MultiHeadAttention, merge_heads, split_heads
from ..training import language
from ._core import (
    Case,
    CheckFailed,
    CheckResult,
    call_student,
    compare,
    custom_check,
    register,
    run_check,
)
from ._core import randn as _randn

__all__ = [
    "check_causal_attention",
    "check_changed_weights",
    "check_kv_step",
    "check_padded_causal_attention",
]

#: utils functions that compute (masked) attention in one call: the exercises write it
_ATTENTION = (attention.scaled_dot_product_attention, attention.softmax,
              attention.self_attention, attention.cross_attention, F.scaled_dot_product_attention,
              kv_cache.KVCache, kv_cache.incremental_self_attention)


def _ones(n_q: int, n_k: int) -> torch.Tensor:
    return torch.ones(n_q, n_k, dtype=torch.bool)


# --------------------------------------------------------------------------- exercise 1


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


def _causal_attention(q, k, v):
    n = q.shape[-2]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    future = _ones(n, n).triu(1)
    weights = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
    return weights @ v, weights


def _reference_causal(q, k, v):
    return scaled_dot_product_attention(q, k, v, mask=causal_mask(q.shape[-2]))


@register(_causal_attention)
def check_causal_attention(fn) -> CheckResult:
    """``fn(q, k, v) -> (output, weights)``: causal scaled dot-product attention (square),
    written with torch: the mask too (``utils`` attention and ``causal_mask`` are forbidden)."""
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
                          "masked_fill fills where its mask is True: fill the future."),
        "no_mask": (_causal_variant("none"),
                    "no causal mask was applied: every query sees the future."),
        "missing_scale": (_causal_variant("missing_scale"),
                          "the scores are not scaled: divide Q Kᵀ by √d_k."),
    }
    return run_check("causal_attention", fn, _reference_causal, cases, bugs,
                     returns=("output", "weights"), forbid=(*_ATTENTION, masks.causal_mask))


# --------------------------------------------------------------------------- exercise 2

#: the modes of the leakage test (``utils.widgets.causal.MODES``)
MODES = ("causal", "after", "none")


def _weights(q, k, mode: str) -> torch.Tensor:
    """Attention weights with the future handled by ``mode`` (as the leakage test does)."""
    n = q.shape[-2]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mode == "causal":
        return softmax(scores, mask=causal_mask(n))
    weights = softmax(scores)
    return weights * causal_mask(n) if mode == "after" else weights


def _changed_weights(n, j, mode):
    """What runs: the weights of random tokens, before and after token ``j`` is replaced by
    another random token (its query, key and value all change); True where they differ."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    g = torch.Generator().manual_seed(1000 * n + j)
    x = torch.randn(n, 4, generator=g, dtype=torch.float64)
    w_q, w_k = (torch.randn(4, 4, generator=g, dtype=torch.float64) / 2 for _ in range(2))
    changed = x.clone()
    changed[j] = torch.randn(4, generator=g, dtype=torch.float64)
    before = _weights(x @ w_q, x @ w_k, mode)
    after = _weights(changed @ w_q, changed @ w_k, mode)
    return ~torch.isclose(after, before, rtol=1e-9, atol=0.0)  # exact zeros stay equal


def _rule(n, j, mode):
    """The rule itself: row i changes if its query changed (i = j) or it reads key j, in its
    visible entries, unless it has only one (that weight is 1 whatever the tokens)."""
    i, key = torch.arange(n)[:, None], torch.arange(n)[None, :]
    if mode == "none":
        return _ones(n, n)
    visible = key <= i  # entries that are not zeroed
    if mode == "after":  # the softmax ran over every key: key j is in every row's denominator
        return visible
    return visible & (i >= j) & (i > 0)  # row 0 sees key 0 only: its weight is always 1


def _predicted(wrong: dict):
    """The rule, except in the modes of ``wrong`` ({mode: fn(i, key, j, n)})."""
    def fn(n, j, mode):
        if mode in wrong:
            i, key = torch.arange(n)[:, None], torch.arange(n)[None, :]
            return torch.as_tensor(wrong[mode](i, key, j, n)).expand(n, n).clone()
        return _rule(n, j, mode)

    return fn


def _lower(i, key):
    return key <= i


@register(_rule)
def check_changed_weights(fn) -> CheckResult:
    """``fn(n, j, mode) -> (n, n)`` bool: the student's prediction of which attention weights
    ``A[i, l]`` change when token ``j`` changes, for the leakage test's ``mode`` ("causal":
    masked before the softmax, "after": zeroed after it, "none": no mask). Compared with what
    runs on random tokens (:func:`_changed_weights`)."""
    cases = [Case((6, 3, mode)) for mode in MODES]
    cases += [Case((5, 0, "causal")), Case((5, 4, "causal")), Case((5, 4, "after")),
              Case((4, 0, "none"))]
    bugs = {
        "causal_row_zero": (_predicted({"causal": lambda i, key, j, n: _lower(i, key) & (i >= j)}),
                            "almost: with the mask, row 0 sees one key only (itself), so its "
                            "one weight is 1 before and after, whatever token 0 is."),
        "causal_column_only": (_predicted({"causal": lambda i, key, j, n: (key == j) & (i >= j)}),
                               "with the mask you marked only the weights *on* key j. But a "
                               "row that reads key j is normalised over it too: every weight "
                               "of that row moves (softmax's denominator changed)."),
        "causal_own_row_missed": (_predicted({"causal": lambda i, key, j, n: _lower(i, key) & (i > j)}),
                                  "with the mask you left out row j: the changed token's own "
                                  "query is new, so its whole row of weights changes too."),
        "causal_masked_entries": (_predicted({"causal": lambda i, key, j, n: i >= j}),
                                  "with the mask, the future entries of a row are exactly 0 "
                                  "before and after: they cannot change. Only the visible "
                                  "entries (key <= row) of rows j and later move."),
        "causal_row_only": (_predicted({"causal": lambda i, key, j, n: _lower(i, key) & (i == j)}),
                            "with the mask you marked only row j. Later rows read key j "
                            "(j <= i), so their weights change as well."),
        "after_like_before": (_predicted({"after": lambda i, key, j, n: _lower(i, key) & (i >= j)}),
                              "zeroed *after* the softmax is not the same as masked before: "
                              "the softmax ran over every key, j included, so every row's "
                              "denominator holds key j and all visible weights of every row "
                              "change. That is the leak."),
        "after_masked_entries": (_predicted({"after": lambda i, key, j, n: _ones(n, n)}),
                                 "zeroed after the softmax: the future entries are set to 0 "
                                 "before and after, so they cannot change; every other "
                                 "entry does."),
        "none_lower_only": (_predicted({"none": lambda i, key, j, n: _lower(i, key)}),
                            "without a mask nothing is zeroed: the entries above the diagonal "
                            "change too (every row reads key j, and row j has a new query)."),
        "none_like_causal": (_predicted({"none": lambda i, key, j, n: i >= j}),
                             "without a mask every row reads key j, earlier rows included: "
                             "all weights change."),
    }
    return run_check("changed_weights", fn, _changed_weights, cases, bugs,
                     hints={"wrong_dtype": "Return a bool tensor: True where a weight changes."})


# --------------------------------------------------------------------------- exercise 3


def _kv_step(model, tokens, cache):
    """The step of ``language.TinyLM`` through a KV cache, written out (the check's solution)."""
    start, n = len(cache), tokens.shape[-1]
    e = model.tok(tokens) + model.pos(torch.arange(start, start + n))
    attn = model.attn
    cache.append(split_heads(attn.w_k(e), attn.n_heads), split_heads(attn.w_v(e), attn.n_heads))
    out, _ = cache.attend(split_heads(attn.w_q(e), attn.n_heads))
    return model.out(attn.w_o(merge_heads(out)))


def _step_variant(mode: str):
    """A KV-cache step with one typical mistake."""
    def fn(model, tokens, cache):
        start, n = len(cache), tokens.shape[-1]
        first = 0 if mode == "positions_from_zero" else start
        e = model.tok(tokens) + model.pos(torch.arange(first, first + n))
        attn, h = model.attn, model.attn.n_heads
        if mode == "no_heads":
            cache.append(attn.w_k(e), attn.w_v(e))
            out, _ = cache.attend(attn.w_q(e))
            return model.out(attn.w_o(out))
        cache.append(split_heads(attn.w_k(e), h), split_heads(attn.w_v(e), h))
        q = split_heads(attn.w_q(e), h)
        if mode == "top_left":
            out = F.scaled_dot_product_attention(q, cache.k, cache.v, is_causal=True)
        elif mode == "chunk_sees_future":
            out = F.scaled_dot_product_attention(q, cache.k, cache.v)
        else:
            out, _ = cache.attend(q)
        merged = merge_heads(out)
        logits = model.out(merged if mode == "no_w_o" else attn.w_o(merged))
        return logits.softmax(dim=-1) if mode == "probabilities" else logits

    return fn


_STEP_BUGS = {
    "positions_from_zero": (_step_variant("positions_from_zero"),
                            "every step embeds its new words at positions 0, 1, ...: a new word "
                            "sits at position len(cache) (how many positions are cached before "
                            "this step), so add model.pos(torch.arange(len(cache), "
                            "len(cache) + n))."),
    "no_heads": (_step_variant("no_heads"),
                 "the keys, values and queries were not split into heads: this model has "
                 "several, each attending on its own slice (split_heads before the cache, "
                 "merge_heads after attending)."),
    "no_w_o": (_step_variant("no_w_o"),
               "the heads' merged output skipped the output projection model.attn.w_o."),
    "probabilities": (_step_variant("probabilities"),
                      "you returned probabilities (a softmax): return the logits, the "
                      "read-out model.out(...) itself."),
    "top_left": (_step_variant("top_left"),
                 "with several new words over a longer cache your mask is top-left aligned "
                 "(is_causal=True): the new words are the *last* positions, so the mask is "
                 "bottom-right aligned (cache.attend does it)."),
    "chunk_sees_future": (_step_variant("chunk_sees_future"),
                          "when several words arrive at once, each may read the later ones of "
                          "the same step: the new queries need the causal mask over the cache "
                          "(cache.attend applies it)."),
}

#: how the check feeds a sentence: a prompt of two words then one word per step, and chunks
_CHUNKINGS = ((2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1), (3, 4, 5))


def _steps(step, model, tokens, chunks, student: bool):
    """Feed ``tokens`` through ``step`` chunk by chunk with one new cache: the outputs. For the
    student's step, the cache must hold every position so far after each step."""
    cache, outputs, start = kv_cache.KVCache(), [], 0
    for k, n in enumerate(chunks):
        x = tokens[:, start:start + n]
        out = call_student(step, model, x, cache) if student else step(model, x, cache)
        outputs.append(out)
        start += n
        if student and len(cache) != start:
            raise CheckFailed("cache_length",
                              f"after step {k + 1} the cache holds {len(cache)} positions, "
                              f"expected {start}: append each new word's key and value exactly "
                              "once, to the cache passed in.")
    return outputs


def _model(n_heads: int, seed: int) -> language.TinyLM:
    torch.manual_seed(seed)
    return language.TinyLM(causal=True, d_model=16, n_heads=n_heads).eval()


def _same_outputs(a, b) -> bool:
    return all(isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.shape == y.shape
               and torch.allclose(x, y, rtol=1e-4, atol=1e-5) for x, y in zip(a, b, strict=True))


@register(_kv_step)
def check_kv_step(fn, verbose: bool = True) -> CheckResult:
    """``fn(model, tokens (B, n), cache) -> logits (B, n, V)``: one generation step of a
    :class:`utils.training.language.TinyLM` through a :class:`utils.kv_cache.KVCache` (append
    the new words' keys and values, attend over the cache). Compared with the model's full
    forward pass, word by word and in chunks, on untrained models with two heads."""
    forbid = (language.TinyLM.step, language.TinyLM.forward, language.generate,
              MultiHeadAttention.forward, kv_cache.incremental_self_attention)

    def body() -> str:
        checked = 0
        for seed, chunks in enumerate(_CHUNKINGS):
            model = _model(n_heads=2, seed=seed)
            tokens = language.sentences(2, torch.Generator().manual_seed(seed))
            with torch.no_grad():
                want = model(tokens)[0]
                try:
                    got = _steps(fn, model, tokens, chunks, student=True)
                except CheckFailed as failed:
                    if failed.diagnosis == "raised" and "cache is empty" in failed.message:
                        raise CheckFailed("attend_before_append",
                                          "attend found an empty cache: append the new words' "
                                          "keys and values *before* their queries attend (a "
                                          "word may read itself).") from None
                    raise
                bounds = torch.tensor((0, *chunks)).cumsum(0).tolist()
                for k, out in enumerate(got):
                    try:
                        compare(out, want[:, bounds[k]:bounds[k + 1]], atol=1e-5, rtol=1e-4,
                                returns=None,
                                context=f"step {k + 1}, words {bounds[k]}..{bounds[k + 1] - 1} "
                                        f"of a sentence fed in chunks {list(chunks)}")
                    except CheckFailed as failed:
                        if failed.diagnosis in ("values", "wrong_shape", "nan"):
                            for key, (bug, hint) in _STEP_BUGS.items():
                                if _same_outputs(got, _steps(bug, model, tokens, chunks, False)):
                                    raise CheckFailed(key, hint) from None
                        raise
            checked += len(chunks)
        return (f"the same logits as the full forward pass at every step ({checked} steps, "
                "word by word and in chunks).")

    return custom_check("kv_step", body, forbid=forbid, verbose=verbose)


# --------------------------------------------------------------------------- exercise 4


def _padded_causal_attention(q, k, v, key_padding):
    n = q.shape[-2]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    allowed = _ones(n, n).tril() & key_padding[:, None, :]
    weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
    weights = torch.nan_to_num(weights, nan=0.0)  # a row with no visible key: 0/0
    return weights @ v, weights


def _padded_reference(q, k, v, key_padding):
    return scaled_dot_product_attention(q, k, v, mask=causal_mask(q.shape[-2]),
                                        key_padding_mask=key_padding)


def _padded_variant(mask_mode: str, empty: str = "zero"):
    """Causal + padding with one mistake: the masks combined wrongly (``mask_mode``) and/or
    fully masked rows left as NaN or uniform (``empty``)."""
    def fn(q, k, v, key_padding):
        n = q.shape[-2]
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        causal = _ones(n, n).tril()
        keys = key_padding[:, None, :]
        mask = {"no_padding": causal.expand(scores.shape),
                "no_causal": keys.expand(scores.shape),
                "queries": causal & key_padding[:, :, None],
                "or": causal | keys}.get(mask_mode, causal & keys)
        if empty == "nan":
            weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
        elif empty == "uniform":
            weights = torch.softmax(scores.masked_fill(~mask, torch.finfo(scores.dtype).min), -1)
        elif empty == "uniform_1e9":
            weights = torch.softmax(scores.masked_fill(~mask, -1e9), dim=-1)
        else:
            weights = softmax(scores, mask=mask)
        return weights @ v, weights

    return fn


def _left_padded(lengths, n):
    return torch.arange(n)[None, :] >= n - torch.tensor(lengths)[:, None]


@register(_padded_causal_attention)
def check_padded_causal_attention(fn) -> CheckResult:
    """``fn(q, k, v (B, N, d), key_padding (B, N) bool, True = real token) -> (output,
    weights)``: causal and key padding masks combined, a query with no visible key gets zero
    weights and a zero output (no NaN, no uniform row)."""
    cases = [
        Case((_randn(2, 5, 3, seed=6), _randn(2, 5, 3, seed=7), _randn(2, 5, 2, seed=8),
              _left_padded([5, 3], 5)), label="left padding"),
        Case((_randn(2, 4, 3, seed=9), _randn(2, 4, 3, seed=10), _randn(2, 4, 4, seed=11),
              torch.arange(4)[None, :] < torch.tensor([[4], [2]])), label="right padding"),
        Case((_randn(3, 6, 2, seed=12), _randn(3, 6, 2, seed=13), _randn(3, 6, 3, seed=14),
              _left_padded([6, 1, 4], 6)), label="left padding, a sentence of one token"),
    ]
    bugs = {
        "as_given": (_padded_variant("queries", "nan"),
                     "this is still the function as given: NaN rows, and the padding mask on "
                     "the wrong axis. Look at what a left-padded batch gives, row by row."),
        "nan_fully_masked": (_padded_variant("keys", "nan"),
                             "the masks are right now, but a fully masked row still gives NaN: "
                             "with left padding a pad query sees only pad keys, every score is "
                             "-inf and softmax gives 0/0. Give such rows zero weights (and so a "
                             "zero output)."),
        "padding_on_queries": ((_padded_variant("queries"),
                                _padded_variant("queries", "uniform"),
                                _padded_variant("queries", "uniform_1e9")),
                               "no NaN now, but the padding mask is still applied to the query "
                               "rows (key_padding[:, :, None]): it must hide padded *keys* "
                               "from every query, key_padding[:, None, :]."),
        "uniform_fully_masked": ((_padded_variant("keys", "uniform"),
                                  _padded_variant("keys", "uniform_1e9")),
                                 "a fully masked row got uniform weights (a large negative fill "
                                 "such as -1e9 or finfo.min): it then reads every key, future "
                                 "and padding included. A row with nothing to attend to must be "
                                 "all zeros."),
        "no_padding": (_padded_variant("no_padding"),
                       "only the causal mask is applied: padded keys still get weight."),
        "no_causal": (_padded_variant("no_causal"),
                      "only the padding mask is applied: queries see the future."),
        "or_instead_of_and": (_padded_variant("or"),
                              "the masks are combined with | (either allows): a key must be "
                              "allowed by both, use &."),
    }
    return run_check("padded_causal_attention", fn, _padded_reference, cases, bugs,
                     returns=("output", "weights"), forbid=_ATTENTION)
