"""Checks for chapter 6's exercises: additive scores, general scores, the variance experiment."""

from __future__ import annotations

import math
import numbers

import torch

from .. import scores as _scores
from ..scores import additive, general
from ._core import (
    PASS,
    Case,
    CheckFailed,
    CheckResult,
    _type_name,
    call_student,
    compare,
    custom_check,
    expect_generator,
    register,
    run_check,
)
from ._core import randn as _randn

__all__ = ["check_additive_scores", "check_general_scores", "check_learned_cosine",
           "check_score_variance"]


def _staged(name: str, fn, reference, stages: list[list[Case]], bugs, forbid=()) -> CheckResult:
    """``run_check`` on each list of cases in turn; the first failure is the result.

    The first stage holds square cases (L_q = L_k, d_q = d_k), on which every typical bug still
    runs, so it can be named; later stages (different sizes, batches) would make those bugs raise
    a shape error instead.
    """
    for cases in stages:
        result = run_check(name, fn, reference, cases, bugs, forbid=forbid, verbose=False)
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


def _additive(q, k, w_q, w_k, v):
    return additive(q, k, w_q, w_k, v)


def _additive_solution(q, k, w_q, w_k, v):
    """The answer written out (the registered solution may not call a forbidden function)."""
    return torch.tanh((q @ w_q).unsqueeze(-2) + (k @ w_k).unsqueeze(-3)) @ v


#: ``utils`` functions that compute the additive score in one call (concat with [W_q; W_k]).
_ADDITIVE_LIBRARY = (_scores.additive, _scores.concat)
#: ... and the general score (dot(q @ w, k) is the general score too).
_GENERAL_LIBRARY = (_scores.general, _scores.dot, _scores.scaled_dot)


@register(_additive_solution)
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
    return _staged("additive scores", fn, _additive, [square, general_sizes], bugs,
                   forbid=_ADDITIVE_LIBRARY)


# --------------------------------------------------------------------------- general


def _general(q, k, w):
    return general(q, k, w)


def _general_solution(q, k, w):
    return q @ w @ k.transpose(-2, -1)


@register(_general_solution)
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
    return _staged("general scores", fn, _general, [square, general_sizes], bugs,
                   forbid=_GENERAL_LIBRARY)


# --------------------------------------------------------------------------- variance

#: (key, what the buggy experiment measures as a function of d_k, hint, named on statistics
#: alone?). "≈ 1 for every d_k" is not enough to name "scaled": the variance of the elementwise
#: products q_i k_i (a near miss, not summed) is ≈ 1 too. It is named only when the exact
#: computation is recognised (see ``_exact_match``).
_VARIANCE_BUGS = [
    ("scaled", lambda d: 1.0,
     "your measured variance is ≈ 1 for every d_k: that is the variance of the scaled score "
     "q·k/√d_k. Measure the raw dot product q·k, whose variance grows like d_k.", False),
    ("std", lambda d: math.sqrt(d),
     "your result grows like √d_k: that is the standard deviation. Return the variance "
     "(its square), e.g. scores.var().", True),
    ("mean_not_sum", lambda d: 1.0 / d,
     "your result shrinks like 1/d_k: you averaged q_i k_i (a mean) instead of summing them. "
     "The dot product is (q * k).sum(-1).", True),
    ("same_vector", lambda d: 2.0 * d,
     "your result is ≈ 2·d_k: you used the same vector as query and key (q·q = |q|² has "
     "variance 2·d_k). Draw q and k independently.", True),
    ("uniform", lambda d: 7.0 * d / 144.0,
     "your result is ≈ 0.05·d_k: q and k were drawn from torch.rand, uniform on [0, 1) (mean 1/2, "
     "variance 1/12). Draw them from a standard normal, torch.randn.", True),
]
_VARIANCE_HINTS = {key: hint for key, _, hint, _ in _VARIANCE_BUGS}


def _variance_solution(d_k, n_samples, generator=None):
    q = torch.randn(n_samples, d_k, generator=generator, dtype=torch.float64)
    k = torch.randn(n_samples, d_k, generator=generator, dtype=torch.float64)
    return (q * k).sum(-1).var().item()


def _draw(kind: str, dtype: torch.dtype, stacked: bool, n: int, d: int, seed: int):
    """q, k as a student may draw them from ``generator`` (two calls, or one stacked call)."""
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn if kind == "randn" else torch.rand
    if stacked:
        q, k = sample(2, n, d, generator=g, dtype=dtype).unbind(0)
    else:
        q = sample(n, d, generator=g, dtype=dtype)
        k = sample(n, d, generator=g, dtype=dtype)
    return q, k


def _candidates(q, k, d: int, kind: str) -> dict[str, list[float]]:
    """What the correct experiment (key None) and each bug return on these draws, with the
    unbiased and the population variance."""
    dot = (q * k).sum(-1)
    series = {None: dot, "scaled": dot / math.sqrt(d), "mean_not_sum": (q * k).mean(-1),
              "same_vector": (q * q).sum(-1)}
    if kind == "rand":  # uniform draws: only the correct formula is a known bug ("uniform")
        series = {"uniform": dot}
    out = {key: [x.var().item(), x.var(unbiased=False).item()] for key, x in series.items()}
    if kind == "randn":
        out["std"] = [dot.std().item(), dot.std(unbiased=False).item()]
    return out


def _exact_match(measured: list[float], dims, n_samples: int) -> tuple[bool, str | None]:
    """``(True, key)`` when the student's numbers are exactly those of the correct experiment
    (key None) or of a known bug, drawn from the generator in one of the usual ways."""
    for kind in ("randn", "rand"):
        for dtype in (torch.float64, torch.float32):
            for stacked in (False, True):
                tol = 1e-9 if dtype == torch.float64 else 1e-4
                keys = None
                for i, (d, m) in enumerate(zip(dims, measured, strict=True)):
                    q, k = _draw(kind, dtype, stacked, n_samples, d, seed=100 + i)
                    values = _candidates(q, k, d, kind)
                    hit = {key for key, vs in values.items()
                           if any(abs(m - v) <= tol * abs(v) + 1e-12 for v in vs)}
                    keys = hit if keys is None else keys & hit
                    if not keys:
                        break
                if keys:
                    return True, sorted(keys, key=str)[0] if None not in keys else None
    return False, None


def _measure(fn, d_k: int, n_samples: int, generator: torch.Generator) -> float:
    out = call_student(fn, d_k, n_samples, generator)
    if out is None:
        raise CheckFailed("no_return", "your function returned None: did you forget `return`?")
    if isinstance(out, torch.Tensor):
        if out.numel() != 1 or not out.is_floating_point():
            raise CheckFailed("wrong_type", f"your function returned a tensor of shape "
                              f"{tuple(out.shape)} and dtype {out.dtype}; return one number, "
                              "the variance (e.g. `.item()`).")
        out = out.item()
    elif not isinstance(out, numbers.Real) or isinstance(out, numbers.Integral):
        raise CheckFailed("wrong_type", f"your function returned {out!r} (a {_type_name(out)}); "
                          "return one float, the measured variance.")
    value = float(out)
    if not math.isfinite(value):
        shown = "NaN" if math.isnan(value) else value
        raise CheckFailed("nan", f"for d_k = {d_k} your function returned {shown}, not a "
                          "finite number.")
    return value


@register(_variance_solution)
def check_score_variance(fn, dims: tuple[int, ...] = (1, 16, 256), n_samples: int = 4000,
                         rtol: float = 0.15, verbose: bool = True) -> CheckResult:
    """``fn(d_k, n_samples, generator) -> float``: the measured variance of ``q·k`` for
    ``n_samples`` independent pairs ``q, k ~ N(0, I_{d_k})``. Theory: ``d_k``.

    The measurement is random, so it is compared with ``d_k`` within ``rtol`` (relative): with
    4000 samples the relative standard error is at most √(8/4000) ≈ 4.5%. The draws must come
    from ``generator``. A known bug is named when its exact numbers are recognised (the usual
    ways of drawing q and k from the generator), or when its statistics are unmistakable.
    """
    name = "variance experiment"

    def body() -> str:
        measured = [_measure(fn, d, n_samples, torch.Generator().manual_seed(100 + i))
                    for i, d in enumerate(dims)]
        shown = ", ".join(f"d_k={d}: {m:.3g}" for d, m in zip(dims, measured, strict=True))
        expect_generator(lambda g: _measure(fn, dims[1], 200, g), seed=100,
                        not_random="your result is the same for every generator seed: measure "
                        "it on q, k drawn with torch.randn(..., generator=generator).")

        def close(expected) -> bool:
            return all(abs(m - expected(d)) <= rtol * expected(d)
                       for d, m in zip(dims, measured, strict=True))

        # the first two sizes identify the computation (d_k = 1 alone cannot: there a sum and
        # a mean, scaled and unscaled, are the same); the largest would only cost time
        exact, key = _exact_match(measured[:2], dims[:2], n_samples)
        if exact and key is not None:
            raise CheckFailed(key, f"{_VARIANCE_HINTS[key]} (measured {shown})")
        if exact or close(lambda d: float(d)):
            return (f"measured {shown} — the variance of q·k is d_k (within {rtol:.0%}).")
        for key, expected, hint, by_statistics in _VARIANCE_BUGS:
            if by_statistics and close(expected):
                raise CheckFailed(key, f"{hint} (measured {shown})")
        raise CheckFailed("values", f"measured {shown}; expected about d_k for each (within "
                          f"{rtol:.0%}). Draw n_samples independent pairs q, k with "
                          "torch.randn(n_samples, d_k, generator=generator) and return the "
                          "variance of (q * k).sum(-1).")

    return custom_check(name, body, verbose=verbose)


# --------------------------------------------------------------------------- learned temperature


class _LearnedCosine(torch.nn.Module):
    """β·cos(q_i, k_j) with β = exp(b), b a learned scalar starting at 0 (β = 1)."""

    def __init__(self):
        super().__init__()
        self.b = torch.nn.Parameter(torch.zeros(()))

    def forward(self, q, k):
        def unit(x):
            return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)

        return torch.exp(self.b) * (unit(q) @ unit(k).transpose(-2, -1))


def _unit_along(x, dim):
    return x / x.norm(dim=dim, keepdim=True).clamp_min(1e-300)


#: (key, β·cos written wrong as a function of (q, k, b), hint)
_COSINE_BUGS = [
    ("not_exponentiated", lambda q, k, b: b * _scores.cosine(q, k),
     "your scores are b·cos, not exp(b)·cos: β = exp(b) keeps β positive whatever b becomes "
     "(b = 0 must give β = 1, not 0)."),
    ("inverse", lambda q, k, b: math.exp(-b) * _scores.cosine(q, k),
     "your scores are cos / exp(b): β = exp(b) multiplies the cosine (it is 1/T, a strength)."),
    ("not_normalised", lambda q, k, b: math.exp(b) * (q @ k.mT),
     "your scores are β·q·k: divide each query and each key by its own length first."),
    ("whole_norm", lambda q, k, b: math.exp(b) * (q / q.norm()) @ (k / k.norm()).mT,
     "you divided q and k by the norm of the whole matrix: normalise each row, "
     "x.norm(dim=-1, keepdim=True)."),
    ("wrong_axis", lambda q, k, b: math.exp(b) * _unit_along(q, -2) @ _unit_along(k, -2).mT,
     "you normalised along the wrong axis (each column): normalise each row (dim=-1), one "
     "query or key vector."),
]


@register(_LearnedCosine)
def check_learned_cosine(cls, verbose: bool = True) -> CheckResult:
    """``cls()`` builds an ``nn.Module`` with one learned scalar ``b`` (starting at 0) whose
    ``forward(q, k)`` returns ``exp(b) · cos(q_i, k_j)``, ``(..., Lq, Lk)``.

    Checked: one parameter of one entry; values against ``utils.scores.cosine`` times ``exp(b)``
    for several ``b`` (the parameter is set by the check); the gradient that reaches ``b``; a
    zero query or key gives scores 0, not NaN; ``b`` starts at 0 (β = 1).
    """
    name = "learned cosine temperature"
    q, k = _randn(4, 3, seed=30), 3.0 * _randn(5, 3, seed=31)
    qb, kb = _randn(2, 3, 4, seed=32), _randn(2, 6, 4, seed=33)

    def body() -> str:
        model = call_student(cls)
        if model is None:
            raise CheckFailed("no_return", "building your module gave None: call the class, "
                              "LearnedCosine(), and make sure it is a class, not a function "
                              "without `return`.")
        if not isinstance(model, torch.nn.Module):
            raise CheckFailed("wrong_type", f"{cls.__name__ if hasattr(cls, '__name__') else 'it'}"
                              f"() built {_type_name(model)}, not an nn.Module: subclass "
                              "torch.nn.Module and call super().__init__().")
        params = list(model.parameters())
        if len(params) != 1 or params[0].numel() != 1:
            raise CheckFailed("no_parameter", f"expected one learnable parameter b with one entry "
                              f"(self.b = nn.Parameter(torch.zeros(()))), found {len(params)} "
                              f"parameter(s) with {sum(p.numel() for p in params)} entries.")
        b = params[0]
        b0 = b.detach().double().reshape(()).item()
        with torch.enable_grad():
            for value in (0.7, -1.5, 0.0):
                with torch.no_grad():
                    b.fill_(value)
                for qq, kk in ((q, k), (qb, kb)):
                    out = call_student(model, qq, kk)
                    want = math.exp(value) * _scores.cosine(qq, kk)
                    if isinstance(out, torch.Tensor) and out.shape == want.shape:
                        got = out.detach().double()
                        for key, bug, hint in _COSINE_BUGS:
                            if torch.allclose(got, bug(qq, kk, value).double(), atol=1e-5, rtol=1e-4):
                                if not torch.allclose(got, want, atol=1e-5, rtol=1e-4):
                                    raise CheckFailed(key, hint)
                    compare(out.detach() if isinstance(out, torch.Tensor) else out, want,
                            context=f"with b = {value}")
            with torch.no_grad():
                b.fill_(0.3)
            b.grad = None
            out = call_student(model, q, k)
            if not out.requires_grad:
                raise CheckFailed("no_gradient", "b gets no gradient: the scores do not depend "
                                  "on it through autograd (b.item(), a float, math.exp or "
                                  "torch.no_grad cut the graph). Use torch.exp(self.b).")
            out.sum().backward()
            want_grad = (math.exp(0.3) * _scores.cosine(q, k)).sum().item()
            if b.grad is None or not math.isclose(b.grad.double().item(), want_grad,
                                                  rel_tol=1e-4, abs_tol=1e-6):
                got = None if b.grad is None else b.grad.double().item()
                raise CheckFailed("no_gradient", f"the gradient reaching b is {got}, expected "
                                  f"{want_grad:.4f} (d(exp(b)·cos)/db = exp(b)·cos).")
        zq, zk = q.clone(), k.clone()
        zq[1], zk[2] = 0.0, 0.0
        with torch.no_grad():
            b.fill_(0.0)
            out = call_student(model, zq, zk)
        if isinstance(out, torch.Tensor) and out.is_floating_point() and not torch.isfinite(out).all():
            raise CheckFailed("zero_vector", "a zero query or key gives NaN (0/0): clamp each "
                              "row's norm, x.norm(dim=-1, keepdim=True).clamp_min(1e-12), so a "
                              "zero vector has cosine 0 with everything.")
        compare(out, _scores.cosine(zq, zk), context="with a zero query and a zero key")
        if b0 != 0.0:
            raise CheckFailed("init", f"b starts at {b0:g}, so β = exp(b) = {math.exp(b0):.3g}: "
                              "start with β = 1, b = 0 (torch.zeros(())).")
        return ("exp(b)·cos for b = 0.7, -1.5, 0, batched too; b gets its gradient; a zero "
                "vector scores 0; β starts at 1.")

    return custom_check(name, body, forbid=(_scores.cosine,), verbose=verbose)
