"""Checks for chapter 6's exercises: additive scores, general scores, the variance experiment."""

from __future__ import annotations

import math

import torch

from ..scores import additive, general
from ._core import FAIL, NOT_ATTEMPTED, PASS, Case, CheckResult, run_check
from ._core import randn as _randn

__all__ = ["check_additive_scores", "check_general_scores", "check_score_variance"]



def _staged(name: str, fn, reference, stages: list[list[Case]], bugs) -> CheckResult:
    """``run_check`` on each list of cases in turn; the first failure is the result.

    The first stage holds square cases (L_q = L_k, d_q = d_k), on which every typical bug still
    runs, so it can be named; later stages (different sizes, batches) would make those bugs raise
    a shape error instead.
    """
    for cases in stages:
        result = run_check(name, fn, reference, cases, bugs, verbose=False)
        if not result:
            print(result.message)
            return result
    n = sum(len(cases) for cases in stages)
    result = CheckResult(name, PASS, f"✅ {name}: correct on {n} test case(s).")
    print(result.message)
    return result


# --------------------------------------------------------------------------- additive


def _additive_no_tanh(q, k, w_q, w_k, v):
    return ((q @ w_q).unsqueeze(-2) + (k @ w_k).unsqueeze(-3)) @ v


def _additive_diagonal(q, k, w_q, w_k, v):
    # query i only meets key i: no new axes, so the sum is taken position by position
    return torch.tanh(q @ w_q + k @ w_k) @ v


def _additive_transposed(q, k, w_q, w_k, v):
    # the new axes swapped: (..., 1, Lq, h) + (..., Lk, 1, h) -> (..., Lk, Lq)
    return torch.tanh((q @ w_q).unsqueeze(-3) + (k @ w_k).unsqueeze(-2)) @ v


def _additive_sum_not_v(q, k, w_q, w_k, v):
    return torch.tanh((q @ w_q).unsqueeze(-2) + (k @ w_k).unsqueeze(-3)).sum(-1)


def _additive_one_projection(q, k, w_q, w_k, v):
    return torch.tanh((q @ w_q).unsqueeze(-2) + (k @ w_q).unsqueeze(-3)) @ v


def check_additive_scores(fn) -> CheckResult:
    """``fn(q, k, w_q, w_k, v) -> (..., Lq, Lk)``: Bahdanau's ``v^T tanh(q W_q + k W_k)``."""
    square = [
        Case((_randn(4, 3), _randn(4, 3, seed=1), _randn(3, 5, seed=2), _randn(3, 5, seed=3),
              _randn(5, seed=4))),
        Case((_randn(2, 5, 3, seed=15), _randn(2, 5, 3, seed=16), _randn(3, 4, seed=17),
              _randn(3, 4, seed=18), _randn(4, seed=19))),
    ]
    general_sizes = [
        Case((_randn(3, 4, seed=5), _randn(6, 2, seed=6), _randn(4, 5, seed=7),
              _randn(2, 5, seed=8), _randn(5, seed=9))),
        Case((_randn(2, 3, 4, seed=10), _randn(2, 5, 3, seed=11), _randn(4, 6, seed=12),
              _randn(3, 6, seed=13), _randn(6, seed=14))),
    ]
    bugs = {
        "no_tanh": (_additive_no_tanh,
                    "no tanh: v·(q W_q + k W_k) splits into a query term plus a key term, and "
                    "the query term cancels in the softmax (every query gets the same weights). "
                    "Apply torch.tanh before multiplying by v."),
        "wrong_broadcast": (_additive_diagonal,
                            "wrong broadcast: q W_q + k W_k adds query i to key i only. Give every "
                            "query every key: (q W_q).unsqueeze(-2) is (..., Lq, 1, h), "
                            "(k W_k).unsqueeze(-3) is (..., 1, Lk, h); their sum is (..., Lq, Lk, h)."),
        "transposed": (_additive_transposed,
                       "the scores come out (Lk, Lq), transposed: unsqueeze the query "
                       "projection at -2 and the key projection at -3, so row i is query i."),
        "no_v": (_additive_sum_not_v,
                 "you summed the hidden units; the score is their weighted sum with v: "
                 "tanh(...) @ v."),
        "one_projection": (_additive_one_projection,
                           "the keys were projected with W_q: keys use their own matrix W_k."),
    }
    return _staged("additive scores", fn, additive, [square, general_sizes], bugs)


# --------------------------------------------------------------------------- general


def check_general_scores(fn) -> CheckResult:
    """``fn(q, k, w) -> (..., Lq, Lk)``: Luong's general (bilinear) ``q W k^T``, w ``(d_q, d_k)``."""
    # square first (d_q = d_k, Lq = Lk) with a non-symmetric W, so a transposed W or
    # transposed scores still give an output of the right shape to compare
    square = [
        Case((_randn(4, 3), _randn(4, 3, seed=1), _randn(3, 3, seed=2))),
        Case((_randn(2, 5, 4, seed=3), _randn(2, 5, 4, seed=4), _randn(4, 4, seed=5))),
    ]
    general_sizes = [
        Case((_randn(3, 4, seed=6), _randn(6, 2, seed=7), _randn(4, 2, seed=8))),
        Case((_randn(2, 3, 4, seed=9), _randn(2, 5, 2, seed=10), _randn(4, 2, seed=11))),
    ]
    bugs = {
        "w_transposed": (lambda q, k, w: q @ w.T @ k.transpose(-2, -1),
                         "you used Wᵀ: with w of shape (d_q, d_k) the score is q @ w @ kᵀ "
                         "(q W maps the query into key space). A square W hides this "
                         "mistake until d_q ≠ d_k."),
        "transposed": (lambda q, k, w: k @ w.T @ q.transpose(-2, -1),
                       "the scores are (Lk, Lq), transposed: row i must hold query i's scores, "
                       "q @ w @ kᵀ."),
        "no_w": (lambda q, k, w: q @ k.transpose(-2, -1),
                 "W is ignored: that is the plain dot product. The general score is q W kᵀ."),
        "scaled": (lambda q, k, w: q @ w @ k.transpose(-2, -1) / math.sqrt(k.shape[-1]),
                   "divided by √d: Luong's general score has no scale (W can learn one)."),
    }
    return _staged("general scores", fn, general, [square, general_sizes], bugs)


# --------------------------------------------------------------------------- variance

#: (key, what the buggy experiment measures as a function of d_k, hint)
_VARIANCE_BUGS = [
    ("scaled", lambda d: 1.0,
     "your measured variance is ≈ 1 for every d_k: that is the variance of the scaled score "
     "q·k/√d_k. Measure the raw dot product q·k, whose variance grows like d_k."),
    ("std", lambda d: math.sqrt(d),
     "your result grows like √d_k: that is the standard deviation. Return the variance "
     "(its square), e.g. scores.var()."),
    ("mean_not_sum", lambda d: 1.0 / d,
     "your result shrinks like 1/d_k: you averaged q_i k_i (a mean) instead of summing them. "
     "The dot product is (q * k).sum(-1)."),
    ("same_vector", lambda d: 2.0 * d,
     "your result is ≈ 2·d_k: you used the same vector as query and key (q·q = |q|² has "
     "variance 2·d_k). Draw q and k independently."),
    ("uniform", lambda d: 7.0 * d / 144.0,
     "your result is ≈ 0.05·d_k: q and k were drawn from torch.rand, uniform on [0, 1) (mean 1/2, "
     "variance 1/12). Draw them from a standard normal, torch.randn."),
]


def _measure(fn, d_k: int, n_samples: int, seed: int):
    out = fn(d_k, n_samples, torch.Generator().manual_seed(seed))
    if isinstance(out, torch.Tensor):
        if out.numel() != 1:
            raise TypeError(f"returned a tensor of shape {tuple(out.shape)}; return one number")
        out = out.item()
    return float(out)


def check_score_variance(fn, dims: tuple[int, ...] = (1, 16, 256), n_samples: int = 4000,
                         rtol: float = 0.15, verbose: bool = True) -> CheckResult:
    """``fn(d_k, n_samples, generator) -> float``: the measured variance of ``q·k`` for
    ``n_samples`` independent pairs ``q, k ~ N(0, I_{d_k})``. Theory: ``d_k``.

    The measurement is random, so it is compared with ``d_k`` within ``rtol`` (relative): with
    4000 samples the relative standard error is at most √(8/4000) ≈ 4.5%.
    """
    name = "variance experiment"
    result = _check_variance(fn, name, dims, n_samples, rtol)
    if verbose:
        print(result.message)
    return result


def _check_variance(fn, name, dims, n_samples, rtol) -> CheckResult:
    measured = []
    for i, d in enumerate(dims):
        try:
            value = _measure(fn, d, n_samples, seed=100 + i)
        except NotImplementedError:
            return CheckResult(name, NOT_ATTEMPTED,
                               f"⏳ {name}: not attempted yet — fill in the function above, "
                               "then rerun this cell.")
        except Exception as err:  # the student's error, reported rather than raised
            return CheckResult(name, FAIL, f"❌ {name}: your function raised "
                               f"{type(err).__name__}: {err}", "raised")
        if not math.isfinite(value):
            return CheckResult(name, FAIL, f"❌ {name}: for d_k = {d} your function returned "
                               f"{value}, not a finite number.", "nan")
        measured.append(value)
    shown = ", ".join(f"d_k={d}: {m:.3g}" for d, m in zip(dims, measured, strict=True))

    def close(expected) -> bool:
        return all(abs(m - expected(d)) <= rtol * expected(d)
                   for d, m in zip(dims, measured, strict=True))

    if close(lambda d: float(d)):
        return CheckResult(name, PASS, f"✅ {name}: measured {shown} — the variance of q·k "
                           f"is d_k (within {rtol:.0%}).")
    for key, expected, hint in _VARIANCE_BUGS:
        if close(expected):
            return CheckResult(name, FAIL, f"❌ {name}: {hint} (measured {shown})", key)
    return CheckResult(name, FAIL, f"❌ {name}: measured {shown}; expected about d_k for each "
                       f"(within {rtol:.0%}). Draw n_samples independent pairs q, k with "
                       "torch.randn(n_samples, d_k, generator=generator) and return the "
                       "variance of (q * k).sum(-1).", "values")
