"""Checks for chapter 3's exercises.

1. **Design** a next-token head: ``W_Q``, ``W_K`` of one head on the designed example's inputs
   (:func:`check_next_token_head`).
2. **Debug** a ``split_heads`` / ``merge_heads`` pair that passes a round trip but gives each
   head the wrong columns (:func:`check_split_heads`, :func:`check_merge_heads`; the library's
   own ``split_heads`` / ``merge_heads`` are noticed and refused).
3. **Predict, then run**: what zeroing one head of the trained two-head model breaks
   (:func:`check_zeroed_heads`, against :func:`utils.training.heads.accuracy`).
4. **Extend** to grouped-query attention: H query heads share G key/value heads
   (:func:`check_grouped_query_attention`, against torch's
   ``scaled_dot_product_attention(..., enable_gqa=True)``).

Shape-changing bugs (forgetting the transpose after ``view``, returning the averaged weights)
are in the bug tables like the others, so the bug is named rather than the shapes.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from .. import multihead
from ..attention import softmax
from ..examples.heads import heads_example, position_code
from ._core import (
    Case,
    CheckFailed,
    CheckResult,
    call_student,
    custom_check,
    expect_tensor,
    register,
    run_check,
)
from ._core import randn as _randn

__all__ = [
    "NEXT_WEIGHT",
    "check_grouped_query_attention",
    "check_merge_heads",
    "check_next_token_head",
    "check_split_heads",
    "check_zeroed_heads",
]

ATOL = 1e-6

_VIEW_HINT = {"view_not_contiguous": (
    "view size is not compatible",
    "`.view` failed because the tensor is not contiguous after `transpose` (its memory is in "
    "the old order): use `.reshape(...)`, or `.contiguous().view(...)`.")}


# ------------------------------------------------------------------ 1. design: a next-token head

#: every word but the last must put more than this on the next word
NEXT_WEIGHT = 0.8


def _position_rows() -> slice:
    ex = heads_example()
    p0 = ex.dims.index("cos 60°·i")
    return slice(p0, p0 + 4)


def _rotation(steps: int) -> torch.Tensor:
    """``(4, 4)`` R with ``position_code(i) @ R == position_code(i + steps)``."""
    code = position_code(12)
    # the code of positions 0..3 spans R^4, so R is the exact solution of code[0:4] R = code[s:s+4]
    rows = torch.arange(4)
    r = torch.linalg.solve(code[rows], code[(rows + steps) % 12])
    return torch.where(r.abs() < 1e-12, 0.0, r)


def _next_token_solution():
    """One head (``d_head = 4``) whose query is the position code rotated one step forward."""
    ex = heads_example()
    w_q = torch.zeros(ex.d_model, ex.d_head, dtype=ex.x.dtype)
    w_k = torch.zeros(ex.d_model, ex.d_head, dtype=ex.x.dtype)
    rows = _position_rows()
    w_k[rows] = torch.eye(4, dtype=ex.x.dtype)
    w_q[rows] = 6.0 * _rotation(+1)
    return w_q, w_k


def _head_weights(x: torch.Tensor, w_q: torch.Tensor, w_k: torch.Tensor) -> torch.Tensor:
    q, k = x @ w_q, x @ w_k
    return softmax(q @ k.T / math.sqrt(q.shape[-1]))


def _where_it_looks(weights: torch.Tensor) -> tuple[int, float]:
    """The offset j − i that most queries (all but the last) read most, and their share."""
    n = weights.shape[0]
    top = weights[:-1].argmax(-1) - torch.arange(n - 1)
    offset = int(top.mode().values)
    share = (top == offset).double().mean().item()
    return offset, share


@register(_next_token_solution)
def check_next_token_head(fn, verbose: bool = True) -> CheckResult:
    """``fn() -> (W_Q, W_K)``, each ``(12, 4)`` float64: one head on the designed example's
    inputs ``ex.x`` in which every word but the last puts more than ``NEXT_WEIGHT`` of its
    weight on the next word; it must still do so when the words are shuffled (positions kept)."""
    ex = heads_example()
    shape = (ex.d_model, ex.d_head)
    perm = torch.arange(len(ex.tokens) - 1, -1, -1)  # the words in reverse order

    def body() -> str:
        out = call_student(fn)
        if out is None:
            raise CheckFailed("no_return", "your function returned None: did you forget "
                              "`return`? (`return w_q, w_k`)")
        if not isinstance(out, tuple | list) or len(out) != 2:
            raise CheckFailed("wrong_output", "return two matrices, `return w_q, w_k`; got "
                              f"{type(out).__name__}"
                              + (f" of {len(out)} values" if isinstance(out, tuple | list) else ""))
        w_q = expect_tensor(out[0], "your W_Q", shape=shape, dtype=ex.x.dtype)
        w_k = expect_tensor(out[1], "your W_K", shape=shape, dtype=ex.x.dtype)
        n = len(ex.tokens)
        for x, words in ((ex.x, "the running example"),
                         (ex.reorder(perm), "the running example's words in reverse order "
                                            "(positions kept)")):
            a = _head_weights(x, w_q, w_k)
            on_next = a[torch.arange(n - 1), torch.arange(1, n)]
            if bool((on_next > NEXT_WEIGHT).all()):
                continue
            offset, share = _where_it_looks(a)
            worst = int(on_next.argmin())
            detail = (f"on {words}, “{ex.tokens[worst]}” (position {worst}) puts "
                      f"{on_next[worst].item():.2f} on the next word (needs > {NEXT_WEIGHT})")
            if x is not ex.x:
                raise CheckFailed("reads_words", f"{detail}, though it passes on the sentence "
                                  "itself: your head uses the words' features. Only the position "
                                  "rows (the last four of W_Q and W_K) should be non-zero")
            if bool(((a - 1 / n).abs() < 1e-9).all()):
                raise CheckFailed("uniform", f"{detail}: every word spreads its weight evenly "
                                  f"(1/{n} on each word), so all its scores are equal: is W_Q "
                                  "or W_K still zero?")
            if bool((a[:-1].argmax(-1) == torch.arange(1, n)).all()):
                raise CheckFailed("too_flat", f"{detail}: every word reads the next one most, "
                                  "but not by enough. Scale the query up (the designed "
                                  "previous-token head uses 6)")
            if share >= 0.5 and offset == 1:
                miss = next(i for i in range(n - 1) if int(a[i].argmax()) != i + 1)
                raise CheckFailed("partly", f"{detail}: most words read the next word, but "
                                  f"“{ex.tokens[miss]}” (position {miss}) reads "
                                  f"“{ex.tokens[int(a[miss].argmax())]}”. The query must be "
                                  "the code of position i + 1 for every i: one rotation, the "
                                  "same for all positions")
            if share >= 0.5 and offset == -1:
                raise CheckFailed("looks_back", f"{detail}: most words read the word *before* "
                                  "them. Rotate the other way: the query of position i must "
                                  "be the code of position i + 1")
            if share >= 0.5 and offset == 0:
                raise CheckFailed("looks_at_itself", f"{detail}: most words read themselves, "
                                  "as when the query is the position code unrotated. Rotate "
                                  "it one step forward")
            where = ("most words read the word " + (f"{offset} after" if offset > 0 else
                                                    f"{-offset} before") + " them"
                     if share >= 0.5 else "the words read no common offset")
            raise CheckFailed("wrong_place", f"{detail}: {where}. The query of position i "
                              "must match the key of position i + 1")
        a = _head_weights(ex.x, w_q, w_k)
        least = a[torch.arange(n - 1), torch.arange(1, n)].min().item()
        return (f"every word but the last puts more than {NEXT_WEIGHT} on the next word "
                f"(least {least:.2f}), with the words shuffled too.")

    return custom_check("next-token head", body, verbose=verbose)


# ------------------------------------------------------------------ 2. debug: split and merge

def _split_cases() -> list[Case]:
    # L, H and D/H all differ, so every wrong layout gives different numbers
    return [Case((_randn(2, 5, 12), 3)), Case((_randn(1, 4, 6, seed=1), 2)),
            Case((_randn(3, 7, 8, seed=2), 4))]


def _split_reference(x, n_heads):
    b, length, d = x.shape
    return x.reshape(b, length, n_heads, d // n_heads).transpose(1, 2)


def _merge_reference(x):
    b, h, length, d_head = x.shape
    return x.transpose(1, 2).reshape(b, length, h * d_head)


def _dims(x, n_heads):
    b, length, d = x.shape
    return b, length, n_heads, d // n_heads


_LIBRARY_HINT = "Use `.view` (or `.reshape`) and `.transpose`."


@register(_split_reference)
def check_split_heads(fn, verbose: bool = True) -> CheckResult:
    """``fn(x, n_heads)``: ``(B, L, D) -> (B, H, L, D/H)``, head h = columns ``h·D/H:(h+1)·D/H``."""
    bugs = {
        "heads_interleaved": (
            lambda x, h: x.reshape(*_dims(x, h)[:2], _dims(x, h)[3], h).permute(0, 3, 1, 2),
            "your heads take every H-th column (interleaved), as the buggy version does: head "
            "h must own the *block* of columns h·D/H to (h+1)·D/H − 1. Which factor of D comes "
            "first in your view?"),
        "view_without_transpose": (
            lambda x, h: x.reshape(_dims(x, h)[0], h, _dims(x, h)[1], _dims(x, h)[3]),
            "you viewed (B, L, D) directly as (B, H, L, D/H): the shape is right but each head "
            "now holds pieces of *different tokens*. View as (B, L, H, D/H), then "
            "`.transpose(1, 2)`."),
        "missing_transpose": (
            lambda x, h: x.reshape(_dims(x, h)),
            "you returned (B, L, H, D/H): the view is right, now swap L and H with "
            "`.transpose(1, 2)` so that each head is a (L, D/H) matrix."),
        "wrong_transpose": (
            lambda x, h: x.reshape(_dims(x, h)).permute(0, 2, 3, 1),
            "you returned (B, H, D/H, L): transpose only L and H (`.transpose(1, 2)`), "
            "each head must be (L, D/H) with tokens as rows."),
    }
    return run_check("split_heads", fn, _split_reference, _split_cases(), bugs, atol=ATOL,
                     raised_hints=_VIEW_HINT, forbid=(multihead.split_heads,),
                     hints={"used_library": _LIBRARY_HINT}, verbose=verbose)


def _merge_cases() -> list[Case]:
    return [Case((_split_reference(*c.args).contiguous(),)) for c in _split_cases()]


@register(_merge_reference)
def check_merge_heads(fn, verbose: bool = True) -> CheckResult:
    """``fn(x)``: ``(B, H, L, D/H) -> (B, L, D)``, the inverse of ``split_heads``."""
    def flat(x):
        b, h, length, dh = x.shape
        return b, length, h * dh

    bugs = {
        "heads_interleaved": (
            lambda x: x.permute(0, 2, 3, 1).reshape(flat(x)),
            "your columns are interleaved (head h's features every H-th column), as the buggy "
            "version does: head h's d_head features must stay side by side, in columns "
            "h·D/H to (h+1)·D/H − 1."),
        "view_without_transpose": (
            lambda x: x.reshape(flat(x)),
            "you reshaped (B, H, L, D/H) straight to (B, L, D): rows of different heads and "
            "tokens get mixed. First `.transpose(1, 2)` to (B, L, H, D/H), then reshape."),
        "missing_reshape": (
            lambda x: x.transpose(1, 2),
            "you returned (B, L, H, D/H): flatten the last two dimensions into D "
            "(`.reshape(B, L, H * D/H)`)."),
    }
    return run_check("merge_heads", fn, _merge_reference, _merge_cases(), bugs, atol=ATOL,
                     raised_hints=_VIEW_HINT, forbid=(multihead.merge_heads,),
                     hints={"used_library": _LIBRARY_HINT}, verbose=verbose)


# ------------------------------------------------------------------ 3. predict, then run

#: the two outcomes a prediction can name, and what they mean (accuracy of a half)
OUTCOMES = {"right": "right more than 90 % of the time", "chance": "right less than 30 % of "
            "the time (a guess is right 1 time in 16)"}
#: the two experiments: the head zeroed (by its job) -> what each half of the output does
EXPERIMENTS = ("previous-word head zeroed", "first-word head zeroed")


def _zeroed_solution():
    return {"previous-word head zeroed": {"previous": "chance", "first": "right"},
            "first-word head zeroed": {"previous": "right", "first": "chance"}}


def _heads_task():
    """``utils.training.heads``, imported when a check needs it (it imports torch.optim's
    machinery: no cost for chapters that only import the checks)."""
    from ..training import heads

    return heads


@functools.lru_cache(maxsize=1)
def _default_model():
    """The notebook's model: two heads, seed 0 (trained once, on first use)."""
    return _heads_task().fit(2, seed=0).model


def _outcome(accuracy: float) -> str:
    if accuracy > 0.9:
        return "right"
    if accuracy < 0.3:
        return "chance"
    return f"in between ({accuracy:.2f})"


def _measure(model) -> dict[str, dict[str, float]]:
    heads_task = _heads_task()
    jobs = heads_task.role_heads(heads_task.roles(model))
    if None in jobs.values() or jobs["previous"] == jobs["first"]:
        raise RuntimeError(f"the model's heads do not take one job each: {jobs}")
    return {experiment: heads_task.accuracy(model, ablate=jobs[job])
            for experiment, job in zip(EXPERIMENTS, heads_task.ROLES, strict=True)}


@register(_zeroed_solution)
def check_zeroed_heads(fn, model=None, verbose: bool = True) -> CheckResult:
    """``fn() -> {experiment: {"previous": outcome, "first": outcome}}`` for the two
    :data:`EXPERIMENTS`, each outcome ``"right"`` or ``"chance"``: a prediction of how often
    each half of the trained two-head model's output is right when one head's output is
    zeroed, compared with what runs (:func:`utils.training.heads.accuracy`).

    ``model``: the trained ``TwoRelationsModel`` with two heads (default: seed 0, trained here).
    """
    heads_task = _heads_task()

    def body() -> str:
        prediction = call_student(fn)
        if prediction is None:
            raise CheckFailed("no_return", "your function returned None: did you forget "
                              "`return`?")
        if not isinstance(prediction, dict) or set(prediction) != set(EXPERIMENTS):
            raise CheckFailed("wrong_type", f"return a dict with the keys {list(EXPERIMENTS)}, "
                              f"got {type(prediction).__name__} {prediction!r}"[:240])
        for experiment in EXPERIMENTS:
            halves = prediction[experiment]
            if not isinstance(halves, dict) or set(halves) != set(heads_task.ROLES) or any(
                    v not in OUTCOMES for v in halves.values()):
                raise CheckFailed("wrong_type", f"{experiment!r}: give "
                                  "{\"previous\": ..., \"first\": ...}, each \"right\" or "
                                  f"\"chance\"; got {halves!r}"[:240])
        measured = _measure(model if model is not None else _default_model())
        wrong = []
        for experiment in EXPERIMENTS:
            for half in heads_task.ROLES:
                runs = _outcome(measured[experiment][half])
                if prediction[experiment][half] != runs:
                    wrong.append(f"{experiment}, the {half} half: you predicted "
                                 f"{prediction[experiment][half]!r}, it runs {runs!r}")
        if wrong:
            raise CheckFailed("wrong_prediction", "; ".join(wrong) + ". Each head writes its "
                              "own d_head columns of the merged heads, and W_O and the read-out "
                              "are linear: what is lost with one head's columns?")
        return ("both predictions hold: zeroing one head sends its own half of the output to "
                "chance (< 30 % right) and leaves the other half right (> 90 %).")

    return custom_check("zeroed heads", body, verbose=verbose,
                        forbid=(heads_task.accuracy, heads_task.ablated))


# ------------------------------------------------------------------ 4. extend: grouped-query


def _gqa_reference(x, w_q, w_k, w_v, w_o, n_heads, n_groups):
    """Grouped-query self-attention, output from torch's SDPA with ``enable_gqa=True``."""
    q = multihead.split_heads(x @ w_q, n_heads)  # (B, H, N, d_head)
    k = multihead.split_heads(x @ w_k, n_groups)  # (B, G, N, d_head)
    v = multihead.split_heads(x @ w_v, n_groups)
    out = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    k_per_head = k.repeat_interleave(n_heads // n_groups, dim=-3)  # head h reads group h // (H/G)
    weights = softmax(q @ k_per_head.transpose(-2, -1) / math.sqrt(q.shape[-1]))
    return multihead.merge_heads(out) @ w_o, weights


def _gqa_solution(x, w_q, w_k, w_v, w_o, n_heads, n_groups):
    """A correct answer written as a student would (the registered solution)."""
    b, n, d = x.shape
    d_head = d // n_heads
    q = (x @ w_q).view(b, n, n_heads, d_head).transpose(1, 2)
    k = (x @ w_k).view(b, n, n_groups, d_head).transpose(1, 2)
    v = (x @ w_v).view(b, n, n_groups, d_head).transpose(1, 2)
    k = k.repeat_interleave(n_heads // n_groups, dim=1)
    v = v.repeat_interleave(n_heads // n_groups, dim=1)
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d_head), dim=-1)
    return (weights @ v).transpose(1, 2).reshape(b, n, d) @ w_o, weights


def _gqa_variant(*, repeat="interleave", scale="d_head", project=True, axis=-1,
                 split_q=None, average=False):
    def fn(x, w_q, w_k, w_v, w_o, n_heads, n_groups):
        q = (split_q or multihead.split_heads)(x @ w_q, n_heads)
        k = multihead.split_heads(x @ w_k, n_groups)
        v = multihead.split_heads(x @ w_v, n_groups)
        r = n_heads // n_groups
        if repeat == "interleave":
            k, v = k.repeat_interleave(r, dim=1), v.repeat_interleave(r, dim=1)
        else:  # tiled: head h reads group h % G
            k, v = k.repeat(1, r, 1, 1), v.repeat(1, r, 1, 1)
        d = {"d_head": q.shape[-1], "d_model": x.shape[-1], "none": 1}[scale]
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), dim=axis)
        out = multihead.merge_heads(weights @ v)
        out = out @ w_o if project else out
        return out, (weights.mean(1) if average else weights)

    return fn


def _split_view_only(x, n_heads):
    b, length, d = x.shape
    return x.reshape(b, n_heads, length, d // n_heads)


def _gqa_case(b, n, d, h, g, seed):
    dh = d // h
    x = _randn(b, n, d, seed=seed)
    w_q, w_k, w_v, w_o = (_randn(d, d, seed=seed + 1) / 3, _randn(d, g * dh, seed=seed + 2) / 3,
                          _randn(d, g * dh, seed=seed + 3) / 3, _randn(d, d, seed=seed + 4) / 3)
    return Case((x, w_q, w_k, w_v, w_o, h, g), label=f"D = {d}, H = {h}, G = {g}")


@register(_gqa_solution)
def check_grouped_query_attention(fn, verbose: bool = True) -> CheckResult:
    """``fn(x, w_q, w_k, w_v, w_o, n_heads, n_groups) -> (output (B, N, D), weights (B, H, N, N))``:
    ``w_q, w_o`` are ``(D, D)``, ``w_k, w_v`` are ``(D, G·d_head)``, ``d_head = D/H``; query head
    h reads key/value head ``h // (H/G)``. The output is compared with torch's
    ``scaled_dot_product_attention(q, k, v, enable_gqa=True)``."""
    cases = [_gqa_case(2, 5, 12, 6, 2, 0), _gqa_case(1, 4, 12, 6, 3, 10),
             _gqa_case(2, 3, 8, 4, 1, 20), _gqa_case(1, 4, 8, 2, 2, 30)]
    bugs = {
        "groups_tiled": (
            _gqa_variant(repeat="tile"),
            "your query heads read the wrong key/value head: head h must read group h // (H/G) "
            "(heads 0, 1, 2 share group 0 when H/G = 3), yours reads group h % G. Repeat each "
            "group H/G times in place (`repeat_interleave`), not the whole stack (`repeat`)."),
        "sqrt_d_model": (
            _gqa_variant(scale="d_model"),
            "you scaled by √d_model; each head's scores are scaled by √d_head = √(D/H)."),
        "missing_scale": (
            _gqa_variant(scale="none"),
            "the scores are not scaled: divide each head's Q Kᵀ by √d_head."),
        "missing_output_projection": (
            _gqa_variant(project=False),
            "the weights are right but the output is not: multiply the merged heads by W_o."),
        "wrong_axis": (
            _gqa_variant(axis=-2),
            "softmax over the wrong axis: each query's weights over the keys (the last axis) "
            "must sum to 1."),
        "view_without_transpose": (
            _gqa_variant(split_q=_split_view_only),
            "the queries were split with a plain view (no transpose): each head mixes pieces of "
            "different tokens. View as (B, N, H, D/H), then transpose(1, 2)."),
        "averaged_weights": (
            _gqa_variant(average=True),
            "the output is right, but return the weights of every query head, (B, H, N, N), "
            "not their average."),
    }
    kv_hint = ("K and V have only G·d_head columns (`w_k` is D × G·d_head): split them into "
               "n_groups heads, not n_heads, then give each query head its group's.")
    raised = {**_VIEW_HINT, "kv_split_into_h": ("must divide the model dimension", kv_hint),
              "kv_viewed_as_h": ("is invalid for input of size", kv_hint)}
    return run_check("grouped-query attention", fn, _gqa_reference, cases, bugs, atol=ATOL,
                     returns=("output", "weights"), raised_hints=raised,
                     forbid=(_gqa_reference,), verbose=verbose)
