"""Checks for chapter 1's exercises.

1. debug: :func:`check_self_attention`, a self-attention whose four bugs (``.T`` on a batch,
   √d_model, no max subtraction, the wrong softmax axis) the student fixes;
2. design: :func:`check_bought_reads_milk`, a W_Q with which "bought" reads "milk";
3. implement: :func:`check_sinusoidal`, the sinusoidal position code;
4. predict, then run: :func:`check_low_temperature`, the weights at T = 0.01.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from .. import attention, positions
from ..examples import running_example
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

__all__ = ["check_bought_reads_milk", "check_low_temperature", "check_self_attention",
           "check_sinusoidal"]

# ------------------------------------------------------------------ 1. debug: self-attention

#: the four bugs of the notebook's ``buggy_self_attention``, in its order, and their hints
_BUGS = {
    "transpose": "the keys are not transposed over their last two axes: on a batch "
                 "(B, N, d_k), `k.T` reverses every axis, (d_k, N, B), and `transpose(0, 1)` "
                 "swaps batch and tokens: use `k.transpose(-2, -1)` (or `k.mT`)",
    "sqrt_d_model": "the scale is 1/√d_k, the size of a query/key (`q.shape[-1]`), "
                    "not 1/√d_model (`x.shape[-1]`)",
    "overflow": "`exp` overflows for large scores (inf / inf = NaN): subtract each row's max "
                "first, or use `torch.softmax`",
    "wrong_axis": "the weights must sum to 1 over the keys, the last axis: "
                  "`e.sum(dim=-1, keepdim=True)`",
}


def _attention(transpose=False, sqrt_d_model=False, overflow=False, wrong_axis=False,
               stable="shift", query_axis=0):
    """Self-attention with the given bugs; ``stable``: how a fixed overflow is written
    ("shift": minus the row max; "softmax": ``torch.softmax``; "global": minus the max of
    the whole tensor); ``query_axis``: the axis a wrong-axis softmax runs over (0 as in the
    notebook's ``e.sum(dim=0)``, or -2 with ``keepdim``: the same on one sequence, not on a
    batch)."""

    def fn(x, w_q, w_k, w_v):
        q, k, v = x @ w_q, x @ w_k, x @ w_v
        k_t = k.T if transpose else k.transpose(-2, -1)
        scores = q @ k_t / math.sqrt(x.shape[-1] if sqrt_d_model else q.shape[-1])
        if not overflow and stable == "softmax":
            return _values(torch.softmax(scores, dim=query_axis if wrong_axis else -1), v)
        if overflow:
            e = scores.exp()
        elif stable == "global":
            e = (scores - scores.max()).exp()
        else:
            e = (scores - scores.amax(dim=-1, keepdim=True)).exp()
        if not wrong_axis:
            return _values(e / e.sum(dim=-1, keepdim=True), v)
        return _values(e / e.sum(dim=query_axis, keepdim=query_axis != 0), v)

    return fn


def _values(weights, v):
    return weights @ v, weights


def _reference_attention(x, w_q, w_k, w_v):
    return _attention()(x, w_q, w_k, w_v)


def _debug_bugs() -> dict:
    """Every combination of the four bugs left in (one bug first, then two, ...), each with
    the ways a student may have written the parts already fixed; then other known mistakes."""
    bugs = {}
    names = list(_BUGS)
    for size in range(1, len(names) + 1):
        for combo in itertools.combinations(names, size):
            flags = dict.fromkeys(combo, True)
            stables = ("shift",) if "overflow" in combo else ("shift", "softmax", "global")
            axes = (0, -2) if "wrong_axis" in combo else (0,)
            variants = tuple(_attention(**flags, stable=s, query_axis=a)
                             for s in stables for a in axes)
            left = "; ".join(_BUGS[n] for n in combo)
            hint = (left + "." if size == 1 else
                    f"{size} of the four bugs are still there: {left}.")
            bugs["+".join(combo)] = (variants, hint)
    scale = lambda q, x: 1 / math.sqrt(q.shape[-1])  # noqa: E731
    bugs["missing_scale"] = (_scaled(lambda q, x: 1.0), "the scores are not scaled at all: "
                             "divide Q Kᵀ by √d_k.")
    bugs["scale_d_k"] = (_scaled(lambda q, x: 1 / q.shape[-1]),
                         "divided by d_k; the scale is 1/√d_k (the square root).")
    bugs["transposed_scores"] = (_scaled(scale, transposed=True),
                                 "the scores are K Qᵀ (transposed): row i must hold query i's "
                                 "scores against every key, Q Kᵀ.")
    bugs["used_x_as_values"] = (_scaled(scale, x_values=True),
                                "the output averages x, not the values V = x W_v.")
    bugs["sqrt_d_v"] = (_scaled(None, norm="d_v"),
                        "the scale is 1/√d_k, the size of a query/key (`q.shape[-1]`), not of "
                        "a value (`v.shape[-1]`, d_v).")
    bugs["scale_axis_1"] = (_scaled(lambda q, x: 1 / math.sqrt(q.shape[1])),
                            "`q.shape[1]` is d_k for one sequence (N, d_k) but N for a batch "
                            "(B, N, d_k): count from the end, `q.shape[-1]`.")
    bugs["notebook_d_k"] = (_scaled(lambda q, x: 1 / 2),
                            "you divide by √4 = 2, the d_k of the running example (the "
                            "notebook's `d_k`); here queries have size 3: take d_k from the "
                            "input, `q.shape[-1]`.")
    bugs["scale_multiplied"] = (_scaled(lambda q, x: math.sqrt(q.shape[-1])),
                                "the scores are multiplied by √d_k: divide by it.")
    bugs["sum_no_keepdim"] = (_scaled(scale, norm="no_keepdim"),
                              "`e.sum(dim=-1)` without `keepdim=True` has shape (..., N) and "
                              "broadcasts as a row: entry (i, j) is divided by row j's sum, not "
                              "row i's. Keep the axis: `e.sum(dim=-1, keepdim=True)`.")
    bugs["sum_all"] = (_scaled(scale, norm="all"),
                       "the weights are divided by the sum of the whole tensor: each row (the "
                       "keys of one query) must sum to 1, `e.sum(dim=-1, keepdim=True)`.")
    bugs["max_not_row"] = ((_scaled(scale, norm="no_keepdim_max"),
                            _scaled(scale, norm="column_max")),
                           "the max you subtract is not each row's own: without `keepdim=True` "
                           "the maxima (..., N) broadcast as a row, so entry (i, j) loses row "
                           "j's max; with `dim=-2` they are the columns'. Subtract "
                           "`scores.amax(dim=-1, keepdim=True)`.")
    bugs["global_max"] = (_scaled(scale, norm="global_max"),
                          "you subtract the max of the whole tensor: a row whose scores are all "
                          "far below it underflows, exp gives 0 everywhere and 0 / 0 = NaN. "
                          "Subtract each row's own max, `scores.amax(dim=-1, keepdim=True)`.")
    return bugs


def _scaled(scale_of, transposed=False, x_values=False, norm="softmax"):
    """Self-attention with the four bugs fixed and another mistake: scores times
    ``scale_of(q, x)``, K Qᵀ, x for the values, or ``norm``: "d_v": scaled by 1/√d_v
    (``scale_of`` unused); a softmax written by hand with "no_keepdim": the sum without
    ``keepdim``, "all": the sum of the whole tensor; "no_keepdim_max", "column_max",
    "global_max": a max that is not the row's own."""
    def fn(x, w_q, w_k, w_v):
        q, k, v = x @ w_q, x @ w_k, x @ w_v
        s = (k @ q.transpose(-2, -1)) if transposed else (q @ k.transpose(-2, -1))
        s = s / math.sqrt(v.shape[-1]) if norm == "d_v" else s * scale_of(q, x)
        if norm in ("softmax", "d_v"):
            w = torch.softmax(s, dim=-1)
        elif norm in ("no_keepdim_max", "column_max", "global_max"):
            m = {"no_keepdim_max": lambda: s.amax(dim=-1), "global_max": s.max,
                 "column_max": lambda: s.amax(dim=-2, keepdim=True)}[norm]()
            e = (s - m).exp()
            w = e / e.sum(dim=-1, keepdim=True)
        else:
            e = (s - s.amax(dim=-1, keepdim=True)).exp()
            w = e / (e.sum(dim=-1) if norm == "no_keepdim" else e.sum())
        return w @ (x if x_values else v), w

    return fn


#: an axis counted from the front that one sequence (N, d) does not have
_AXIS_HINT = {"axis_from_front": (
    "Dimension out of range", "an axis counted from the front (1, 2, …) does not exist for one "
    "sequence (N, d): count from the end (-1, -2) so that the same code works with and without "
    "a batch, e.g. `k.transpose(-2, -1)`")}


@register(_reference_attention)
def check_self_attention(fn, verbose: bool = True) -> CheckResult:
    """``fn(x, w_q, w_k, w_v) -> (output, weights)``: the fixed ``buggy_self_attention``."""
    # d_model = 6, d_k = 3, d_v = 2: a wrong scale or a transpose shows, and none is the
    # notebook's d_k = 4 (a function that reads the global `d_k` is caught)
    cases = [
        Case((_randn(5, 6), _randn(6, 3, seed=1), _randn(6, 3, seed=2), _randn(6, 2, seed=3))),
        Case((_randn(2, 4, 6, seed=4), _randn(6, 3, seed=5), _randn(6, 3, seed=6),
              _randn(6, 2, seed=7)), label="a batch of 2 sequences"),
        Case((40 * _randn(4, 6, seed=8), _randn(6, 3, seed=9), _randn(6, 3, seed=10),
              _randn(6, 2, seed=11)), label="large scores (x × 40)"),
    ]
    return run_check("self_attention", fn, _reference_attention, cases, _debug_bugs(),
                     returns=("output", "weights"), raised_hints=_AXIS_HINT,
                     forbid=(attention.self_attention, attention.scaled_dot_product_attention,
                             torch.nn.functional.scaled_dot_product_attention),
                     verbose=verbose)


# ------------------------------------------------------------------ 2. design: bought -> milk

#: what the design must reach
BOUGHT_MILK, HE_JOHN = 0.8, 0.9


def _design_solution():
    ex = running_example()
    w_q = ex.w_q.clone()
    action = ex.features.index("action")
    w_q[action] = 0.0
    w_q[action, ex.roles.index("food")] = 3.0
    return w_q


@register(_design_solution)
def check_bought_reads_milk(fn, verbose: bool = True) -> CheckResult:
    """``fn() -> W_Q (7, 4)``: with the designed W_K and W_V, "bought" reads "milk" with weight
    > 0.8 and "He" still reads "John" with weight > 0.9."""
    ex = running_example()

    def body() -> str:
        w_q = expect_tensor(call_student(fn), "your W_Q", shape=tuple(ex.w_q.shape),
                            dtype=ex.w_q.dtype)
        _, a = attention.self_attention(ex.x, w_q, ex.w_k, ex.w_v)
        bought, milk, he, john = (ex.index(t) for t in ("bought", "milk", "He", "John"))
        w_milk, w_john = a[bought, milk].item(), a[he, john].item()
        top = a[bought].argmax().item()
        changed = [f for i, f in enumerate(ex.features) if not torch.equal(w_q[i], ex.w_q[i])]
        reads = f"“bought” reads “{ex.tokens[top]}” most ({a[bought, top].item():.2f})"
        if w_milk <= BOUGHT_MILK:
            if "action" not in changed:
                rows = ", ".join(changed) if changed else "none"
                raise CheckFailed("wrong_row", f"{reads}. Rows of W_Q you changed: {rows}. "
                                  "“bought” has one feature, action: its query is the action "
                                  "row of W_Q")
            if top != milk:
                raise CheckFailed("wrong_role", f"{reads}, “milk” only {w_milk:.2f}: the key "
                                  "of “milk” offers the food role (see W_K), and “bought” "
                                  "must ask for it more than for the roles other keys offer")
            others = a[bought].clone()
            others[milk] = -1
            second = others.argmax().item()
            raise CheckFailed("too_weak", f"“bought” reads “milk” most, but only {w_milk:.2f} "
                              f"(needs > {BOUGHT_MILK}), and “{ex.tokens[second]}” next "
                              f"({a[bought, second].item():.2f}): make the score of “milk” "
                              "stand out more, or lower the others")
        if w_john <= HE_JOHN:
            raise CheckFailed("broke_he", f"“bought” → “milk” {w_milk:.2f}, but “He” → “John” "
                              f"fell to {w_john:.2f} (needs > {HE_JOHN}): “He” asks with its "
                              "male and pronoun rows; what else did you change?")
        went = ex.index("went")
        return (f"“bought” → “milk” {w_milk:.2f}, “He” → “John” {w_john:.2f} (and “went” → "
                f"“milk” {a[went, milk].item():.2f}: same embedding as “bought”).")

    return custom_check("bought reads milk", body, verbose=verbose)


# ------------------------------------------------------------------ 3. the sinusoidal code


def _sinusoidal(p, d, exponent="pair", layout="interleaved", swap=False, divide=True,
                positions_from=None):
    """The code of positions ``p`` (n,), in ``p``'s dtype, with the given mistakes
    (``positions_from``: the code of ``positions_from, positions_from + 1, ...`` whatever
    ``p`` holds)."""
    if positions_from is not None:
        p = positions_from + torch.arange(p.shape[0], dtype=p.dtype)
    p = p[:, None]
    if exponent == "column":  # every column its own frequency: 10000^(j/d)
        j = torch.arange(d, dtype=p.dtype)
        angle = p / 10000 ** (j / d)
        return torch.where(torch.arange(d) % 2 == 0, torch.sin(angle), torch.cos(angle))
    i = torch.arange(0, d, 2, dtype=p.dtype) / {"pair": d, "i": 2 * d, "4i": d / 2}[exponent]
    angle = p / 10000 ** i if divide else p * 10000 ** i
    first, second = (torch.cos, torch.sin) if swap else (torch.sin, torch.cos)
    if layout == "halves":
        return torch.cat([first(angle), second(angle)], dim=1)
    code = torch.zeros(p.shape[0], d, dtype=p.dtype)
    code[:, 0::2], code[:, 1::2] = first(angle), second(angle)
    return code


def _solution_sinusoidal(p, d):
    return _sinusoidal(p, d)


@register(_solution_sinusoidal)
def check_sinusoidal(fn, verbose: bool = True) -> CheckResult:
    """``fn(p (n,), d) -> (n, d)`` in ``p``'s dtype: the sinusoidal code of positions ``p``
    (Vaswani et al. 2017, §3.5), compared with :func:`utils.positions.sinusoidal`."""
    def reference(p, d):
        return positions.sinusoidal(int(p.max()) + 1, d, dtype=p.dtype)[p.long()]

    f64 = torch.float64
    cases = [Case((torch.arange(6, dtype=f64), 8)), Case((torch.arange(11, dtype=f64), 20)),
             Case((torch.arange(5, 9, dtype=f64), 4), label="positions 5 to 8 (a continuation)"),
             Case((torch.zeros(1, dtype=f64), 2), label="position 0 alone")]
    bugs = {
        "sin_cos_swapped": (lambda p, d: _sinusoidal(p, d, swap=True),
                            "sin and cos are swapped: even columns (0, 2, …) are sin."),
        "halves": (lambda p, d: _sinusoidal(p, d, layout="halves"),
                   "sin fills the first half of the columns and cos the second: the formula "
                   "interleaves them, sin in column 2i and cos in column 2i + 1."),
        "column_exponent": (lambda p, d: _sinusoidal(p, d, exponent="column"),
                            "each column has its own frequency: a sin/cos pair shares one, "
                            "1 / 10000^(2i/d) with 2i the pair's even column."),
        "i_over_d": (lambda p, d: _sinusoidal(p, d, exponent="i"),
                     "the exponent is i/d: it is 2i/d (i counts pairs)."),
        "multiplied": (lambda p, d: _sinusoidal(p, d, divide=False),
                       "p is multiplied by 10000^(2i/d): divide, so that the frequencies fall."),
        "exponent_doubled": (lambda p, d: _sinusoidal(p, d, exponent="4i"),
                             "the exponent is 4i/d: `torch.arange(0, d, 2)` already gives 2i "
                             "(the even columns 0, 2, 4, …), don't multiply it by 2 again."),
        "ignores_p": (lambda p, d: _sinusoidal(p, d, positions_from=0),
                      "your code gives positions 0, 1, … whatever `p` holds: for positions 5 "
                      "to 8 it must code 5 to 8, so compute the angles from `p` itself."),
        "shifted_positions": ((lambda p, d: _sinusoidal(p + 1, d),
                               lambda p, d: _sinusoidal(p - 1, d)),
                              "your code codes position p ± 1: position 0 is sin 0 = 0 in the "
                              "even columns and cos 0 = 1 in the odd ones."),
    }
    return run_check("sinusoidal position code", fn, reference, cases, bugs,
                     forbid=(positions.sinusoidal,), verbose=verbose)


# ------------------------------------------------------------------ 4. predict, then run

#: the queries to predict and the temperature
QUERIES, LOW_T = ("He", "milk", "the"), 0.01


def _predict_solution():
    return {"He": [1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            "milk": [0, 0.5, 0, 0, 0, 0, 0, 0.5, 0, 0],
            "the": [0.1] * 10}


def _low_temperature_weights() -> torch.Tensor:
    ex = running_example()
    q, k = ex.x @ ex.w_q, ex.x @ ex.w_k
    return torch.softmax(q @ k.T / (math.sqrt(q.shape[-1]) * LOW_T), dim=-1)


def _row(value, query: str, n: int) -> torch.Tensor:
    if isinstance(value, torch.Tensor | np.ndarray) and value.ndim == 1:
        value = value.tolist()
    if not isinstance(value, list | tuple) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        raise CheckFailed("wrong_type", f"“{query}”: give a list of {n} numbers, one weight per "
                          f"token, got {type(value).__name__} {value!r}"[:200])
    if len(value) != n:
        raise CheckFailed("wrong_shape", f"“{query}”: {len(value)} weights; give {n}, one per "
                          "token in sentence order (“.” appears twice)")
    row = torch.tensor(value, dtype=torch.float64)
    if not torch.isfinite(row).all() or (row < 0).any() or abs(row.sum().item() - 1) > 0.01:
        raise CheckFailed("not_weights", f"“{query}”: weights are >= 0 and sum to 1; yours sum "
                          f"to {row.sum().item():.3g}")
    return row


def _shown(row: torch.Tensor, tokens: list[str]) -> str:
    if torch.allclose(row, row.mean().expand_as(row), atol=0.005):
        return f"{row.mean().item():.2f} each (uniform)"
    return ", ".join(f"{t} {w:.2f}" for t, w in zip(tokens, row.tolist(), strict=True)
                     if w > 0.005)


#: what computes the weights instead of predicting them (``widgets.tempered_weights`` calls
#: ``attention.softmax``; the Tensor methods are listed for when the framework notices bound
#: methods: it notices builtins called as functions only)
_COMPUTES = (torch.softmax, torch.nn.functional.softmax, torch.log_softmax,
             torch.nn.functional.log_softmax, torch.exp, math.exp, np.exp, torch.Tensor.softmax,
             torch.Tensor.exp, attention.softmax, attention.self_attention,
             attention.scaled_dot_product_attention)


@register(_predict_solution)
def check_low_temperature(fn, verbose: bool = True) -> CheckResult:
    """``fn() -> {"He": [10 weights], "milk": [...], "the": [...]}``: a prediction of the
    designed example's weights at T = 0.01, compared with what runs."""
    ex = running_example()
    n = len(ex.tokens)

    def body() -> str:
        try:
            prediction = call_student(fn)
        except CheckFailed as failed:
            if failed.diagnosis != "used_library":
                raise
            called = failed.message.split(":")[0].removeprefix("your function calls ")
            raise CheckFailed("used_library", f"your function calls {called}: this exercise "
                              "asks for a prediction, not a computation. Reason from the W_Q "
                              "and W_K heatmaps and type the weights you expect; the check "
                              "then runs them.") from None
        if prediction is None:
            raise CheckFailed("no_return", "your function returned None: did you forget "
                              "`return`?")
        if not isinstance(prediction, dict):
            raise CheckFailed("wrong_type", "return a dict {query: weights}, got a "
                              f"{type(prediction).__name__}")
        missing = [q for q in QUERIES if q not in prediction]
        if missing:
            raise CheckFailed("missing_query", f"no prediction for {', '.join(missing)}: the "
                              f"dict needs the keys {list(QUERIES)}")
        actual = _low_temperature_weights()
        for query in QUERIES:
            row = _row(prediction[query], query, n)
            runs = actual[ex.index(query)]
            if (row - runs).abs().max() <= 0.02:
                continue
            what = f"at T = {LOW_T} it runs as: {_shown(runs, ex.tokens)}"
            raise CheckFailed(f"wrong_{query.lower()}", f"“{query}”: {_WHY[query]}; {what}")
        return ("all three right. " + "; ".join(
            f"“{q}” → {_shown(actual[ex.index(q)], ex.tokens)}" for q in QUERIES) + ".")

    return custom_check("low temperature", body, verbose=verbose,
                        forbid=_COMPUTES)



_WHY = {
    "He": "as T → 0 the largest score takes all the weight; “He” asks for a person and "
          "“John” offers one most",
    "milk": "“milk” asks for an action (its food row of W_Q); “went” and “bought” have the "
            "same key, so their scores tie and share the weight equally as T → 0",
    "the": "a function word's row of W_Q is zero, so the query of “the” is 0 and all its "
           "scores are 0 whatever T is: the weights stay uniform",
}
