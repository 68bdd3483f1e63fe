"""Checks for chapter 7's exercises: sampling hard attention, REINFORCE with a baseline,
Gumbel-softmax, top-k attention.

Three of the four exercises are random, so their checks test *distributions*, not single
draws: the student's function runs on many seeded inputs and each statistic (frequencies,
means) must lie within ``Z`` standard errors of the reference's. The standard errors are
measured from the samples themselves; ``Z = 4.5`` makes a false alarm on a correct solution
(drawn with any other random stream) a one-in-tens-of-thousands event. When a statistic is
off, the same statistics of known buggy implementations say which bug it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .. import hard
from ..hard import exact_gradient, reinforce_gradient
from ._core import (
    Case,
    CheckFailed,
    CheckResult,
    call_student,
    custom_check,
    expect_generator,
    expect_tensor,
    register,
    run_check,
)

__all__ = [
    "check_gumbel_softmax", "check_hard_attention", "check_reinforce", "check_straight_through",
    "check_topk_attention",
]

D = torch.float64
Z = 4.5  # standard errors allowed between a statistic and its expected value


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _z(got: torch.Tensor, se_got: torch.Tensor, want: torch.Tensor,
       se_want: torch.Tensor | float = 0.0) -> float:
    """Largest |got - want| in combined standard errors (exact equality counts as 0)."""
    diff = (got - want).abs()
    se = (se_got**2 + torch.as_tensor(se_want, dtype=D) ** 2).sqrt()
    z = torch.where(diff <= 1e-12, torch.zeros_like(diff), diff / se.clamp_min(1e-300))
    return float(z.max())


def _frequencies(index: torch.Tensor, groups: torch.Tensor, n_groups: int, k: int):
    """Per-group category frequencies ``(n_groups, k)`` and their counts ``(n_groups,)``."""
    counts = torch.zeros(n_groups, k, dtype=D)
    counts.index_put_((groups, index), torch.ones(len(index), dtype=D), accumulate=True)
    n = counts.sum(-1)
    return counts / n[:, None], n


def _freq_z(freq: torch.Tensor, n: torch.Tensor, probs: torch.Tensor) -> float:
    """Largest deviation of frequencies from ``probs`` in binomial standard errors."""
    se = (probs * (1 - probs) / n[:, None]).sqrt()
    return _z(freq, torch.zeros_like(freq), probs, se)


# ----------------------------------------------------------------------------- exercise 1


def _alternating(rows: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` copies of the score rows ``(G, L)``, alternating: scores ``(n, L)``, group ``(n,)``."""
    groups = torch.arange(n) % rows.shape[0]
    return rows[groups], groups


HARD_ROWS = torch.tensor([[2.0, 0.5, 1.0, 0.1], [0.2, 1.5, 0.3, 1.0]], dtype=D)


def _hard_bug_probs(scores: torch.Tensor) -> dict[str, tuple[torch.Tensor, str]]:
    """Per-row sampling probabilities of typical bugs, for ``scores (n, L)``."""
    soft0 = torch.softmax(scores, dim=0)
    return {
        "argmax_not_sample": (
            torch.nn.functional.one_hot(scores.argmax(-1), scores.shape[-1]).to(D),
            "you always take the most likely position (argmax). Hard attention *samples* "
            "i ~ Categorical(α): use torch.multinomial(α, 1, generator=generator)."),
        "sampled_scores_not_softmax": (
            scores / scores.sum(-1, keepdim=True),
            "your draws follow the raw scores (torch.multinomial(scores, ...)), not "
            "α = softmax(scores): apply the softmax first."),
        "softmax_wrong_axis": (
            soft0 / soft0.sum(-1, keepdim=True),
            "softmax over the wrong axis (the batch axis): normalise each row, dim=-1."),
        "uniform": (
            torch.full_like(scores, 1 / scores.shape[-1]),
            "your positions are uniform: draw them from α = softmax(scores), not at random."),
    }


def _hard_solution(scores, values, generator=None):
    alpha = torch.softmax(scores, dim=-1)
    index = torch.multinomial(alpha, 1, generator=generator).squeeze(-1)
    return values[torch.arange(values.shape[0]), index], index


def _hard_output(out, batch: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(context, index)`` of the right types, shapes and dtypes, or CheckFailed."""
    if out is None:
        raise CheckFailed("no_return", "your function returned None: did you forget `return`?")
    if not isinstance(out, tuple | list) or len(out) != 2:
        raise CheckFailed("wrong_output", "return a pair (context, index)")
    context = expect_tensor(out[0], "context", shape=(batch, d))
    index = expect_tensor(out[1], "index", shape=(batch,))
    if index.is_floating_point() or index.dtype == torch.bool:
        raise CheckFailed("wrong_index", "index must hold integer positions 0..L-1 (use .long())")
    expect_tensor(index, "index", dtype=torch.int64)
    expect_tensor(context, "context", dtype=D)
    return context, index


@register(_hard_solution)
def check_hard_attention(fn: Callable, verbose: bool = True) -> CheckResult:
    """``fn(scores (B, L), values (B, L, d), generator) -> (context (B, d), index (B,))``.

    Tests that context is the selected value, that the draws come from ``generator`` (the same
    seed gives the same draws whatever the global random state), and that the empirical
    distribution of 12 000 draws matches softmax(scores).
    """
    name = "hard attention"

    def body() -> str:
        scores = torch.randn(5, 4, generator=_gen(0), dtype=D)
        values = torch.randn(5, 4, 3, generator=_gen(1), dtype=D)
        context, index = _hard_output(call_student(fn, scores, values, generator=_gen(2)), 5, 3)
        if index.min() < 0 or index.max() >= 4:
            raise CheckFailed("wrong_index", "index must hold integer positions 0..L-1")
        picked = values[torch.arange(5), index]
        if not torch.allclose(context, picked):
            soft = torch.softmax(scores, -1).unsqueeze(-2) @ values
            if torch.allclose(context, soft.squeeze(-2)):
                raise CheckFailed("returned_soft", "context is the weighted average Σ α_i v_i: "
                                  "that is soft attention. Hard attention returns the one value "
                                  "v_i picked.")
            raise CheckFailed("context_not_selected", "context must be the value of the "
                              "selected position, values[b, index[b]], for every row b.")
        expect_generator(lambda g: call_student(fn, scores, values, generator=g), seed=2,
                        distinct=False, ignores="two calls with identically seeded generators "
                        "gave different draws: pass generator=generator to the sampling "
                        "function.")
        n = 12_000
        big, groups = _alternating(HARD_ROWS, n)
        big_values = torch.arange(4, dtype=D)[None, :, None].expand(n, 4, 2).contiguous()
        context, index = _hard_output(call_student(fn, big, big_values, generator=_gen(3)), n, 2)
        if index.min() < 0 or index.max() >= 4:
            raise CheckFailed("wrong_index", "index must hold integer positions 0..L-1")
        if not torch.equal(context, big_values[torch.arange(n), index]):
            raise CheckFailed("context_not_selected", "context must be the value of the "
                              "selected position, values[b, index[b]], for every row b.")
        if index.unique().numel() == 1:
            raise CheckFailed("one_draw_for_batch", "every row got the same position: draw one "
                              "sample per row, e.g. torch.multinomial(α, 1) on the (B, L) weights.")
        freq, counts = _frequencies(index, groups, 2, 4)
        z = _freq_z(freq, counts, torch.softmax(HARD_ROWS, -1))
        if z <= Z:
            return (f"context is the selected value, draws are reproducible, and {n} draws follow "
                    f"softmax(scores) (largest deviation {z:.1f} standard errors).")
        for key, (probs, hint) in _hard_bug_probs(big).items():
            if _freq_z(freq, counts, probs[:2]) <= Z:
                raise CheckFailed(key, hint)
        raise CheckFailed("wrong_distribution", f"the frequencies of your draws {_fmt(freq[0])} "
                          f"do not follow softmax(scores) = "
                          f"{_fmt(torch.softmax(HARD_ROWS[0], -1))} ({z:.0f} standard errors off).")

    return custom_check(name, body, forbid=(hard.hard_attention,), verbose=verbose)


def _fmt(x: torch.Tensor) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in x.tolist()) + "]"


# ----------------------------------------------------------------------------- exercise 2

GUMBEL_LOGITS = torch.tensor([1.5, 0.5, 0.0, -1.0], dtype=D)
GUMBEL_N = 20_000


def _gumbel_noise(shape, generator) -> torch.Tensor:
    u = torch.rand(shape, generator=generator, dtype=D).clamp(1e-300, 1 - 1e-16)
    return -torch.log(-torch.log(u))


def _gumbel_variant(kind: str) -> Callable:
    """The reference (``kind="ok"``) and typical buggy Gumbel-softmax implementations."""

    def fn(logits, tau, generator=None):
        u = torch.rand(logits.shape, generator=generator, dtype=D).clamp(1e-300, 1 - 1e-16)
        g = -torch.log(-torch.log(u))
        if kind == "wrong_sign":
            z = (logits - g) / tau
        elif kind == "log_u_noise":
            z = (logits + torch.log(u)) / tau
        elif kind == "tau_on_logits_only":
            z = logits / tau + g
        elif kind == "tau_on_noise_only":
            z = logits + g / tau
        elif kind == "multiplied_by_tau":
            z = (logits + g) * tau
        elif kind == "probs_not_logits":
            z = (torch.softmax(logits, -1) + g) / tau
        elif kind == "no_noise":
            z = logits / tau
        else:
            z = (logits + g) / tau
        y = torch.softmax(z, -1)
        if kind == "always_one_hot":
            y = torch.nn.functional.one_hot(y.argmax(-1), logits.shape[-1]).to(y.dtype)
        return y

    return fn


GUMBEL_BUGS = {
    "wrong_sign": "the noise has the wrong sign: g = -log(-log u) is *added* to the logits "
                  "(log α + g), and it is -log(-log u), not +log(-log u).",
    "log_u_noise": "log(u) is not Gumbel noise: use g = -log(-log u) with u ~ Uniform(0, 1).",
    "tau_on_logits_only": "τ divides only the logits: divide the *sum* (log α + g) by τ.",
    "tau_on_noise_only": "τ divides only the noise: divide the *sum* (log α + g) by τ.",
    "multiplied_by_tau": "you multiplied by τ: divide by it, softmax((log α + g) / τ), so that "
                         "τ → 0 gives one-hot samples.",
    "probs_not_logits": "the noise was added to the probabilities α; add it to the logits "
                        "log α (the scores).",
    "no_noise": "no randomness: without Gumbel noise this is a tempered softmax, not a sample.",
    "always_one_hot": "your samples are always exactly one-hot: return the soft sample "
                      "softmax((log α + g) / τ), which is only near one-hot for small τ.",
}


def _gumbel_sample(y, what: str, shape: tuple[int, int], tau: float) -> torch.Tensor:
    """A sample of the right type, shape and dtype with only finite values, or CheckFailed."""
    y = expect_tensor(y, what, shape=shape, dtype=D, finite=False)
    if not torch.isfinite(y).all():
        kind = "NaN" if torch.isnan(y).any() else "inf"
        raise CheckFailed("nan", f"at τ = {tau:g} your sample contains {kind}: is the noise ever "
                          "log(0), or does exp((logits + g) / τ) overflow for small τ? "
                          "torch.softmax subtracts the max first.")
    return y


def _gumbel_stats(fn: Callable, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Statistics of ``fn``'s samples: ``{name: (value, standard error)}``."""
    n, k = GUMBEL_N, GUMBEL_LOGITS.shape[0]
    logits = GUMBEL_LOGITS.expand(n, k)
    stats = {}
    for tau, stat in ((0.5, "argmax"), (1.0, "mean"), (0.01, "max"), (100.0, "max")):
        y = _gumbel_sample(call_student(fn, logits, tau, generator=_gen(seed)), "the sample",
                           (n, k), tau)
        if stat == "argmax":
            x = torch.nn.functional.one_hot(y.argmax(-1), k).to(D)
        elif stat == "mean":
            x = y
        else:
            x = y.max(-1).values[:, None]
        stats[f"{stat} at τ={tau:g}"] = (x.mean(0), x.std(0) / math.sqrt(n))
        seed += 1
    return stats


def _stats_z(a: dict, b: dict) -> tuple[float, str]:
    worst, where = 0.0, ""
    for key in a:
        z = _z(a[key][0], a[key][1], b[key][0], b[key][1])
        if z > worst:
            worst, where = z, key
    return worst, where


def _gumbel_solution(logits, tau, generator=None):
    u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype)
    return torch.softmax((logits - torch.log(-torch.log(u))) / tau, dim=-1)


@register(_gumbel_solution)
def check_gumbel_softmax(fn: Callable, verbose: bool = True) -> CheckResult:
    """``fn(logits (..., K), tau, generator) -> y (..., K)``: one Gumbel-softmax sample per row.

    Tests that samples are valid distributions (finite, at every τ), random but reproducible
    through ``generator``, one-hot as τ → 0, uniform as τ → ∞, with argmax distributed as
    softmax(logits), by comparing statistics of 20 000 samples with the reference's.
    """
    name = "Gumbel-softmax"

    def body() -> str:
        logits = torch.randn(3, 4, generator=_gen(0), dtype=D)
        y = _gumbel_sample(call_student(fn, logits, 0.5, generator=_gen(1)), "the sample",
                           (3, 4), 0.5)
        if not torch.allclose(y.sum(-1), torch.ones(3, dtype=D), atol=1e-6):
            if torch.allclose(y.sum(0), torch.ones(4, dtype=D), atol=1e-6):
                raise CheckFailed("wrong_axis", "your samples sum to 1 over the batch axis: take "
                                  "the softmax over the last axis (the categories), dim=-1.")
            raise CheckFailed("not_normalised", "each sample must sum to 1 over the categories: "
                              "apply a softmax to (logits + g) / τ.")
        if (y < 0).any():
            raise CheckFailed("not_normalised", "a sample has negative entries: apply a softmax.")
        try:
            expect_generator(lambda g: call_student(fn, logits, 0.5, generator=g), seed=1,
                            ignores="two calls with identically seeded generators gave "
                            "different samples: pass generator=generator to torch.rand.")
        except CheckFailed as failed:
            if failed.diagnosis != "not_random":
                raise
            raise CheckFailed("no_noise", GUMBEL_BUGS["no_noise"]) from None
        student = _gumbel_stats(fn, 10)
        reference = _gumbel_stats(_gumbel_variant("ok"), 20)
        z, where = _stats_z(student, reference)
        if z <= Z:
            probs = torch.softmax(GUMBEL_LOGITS, -1)
            freq = student["argmax at τ=0.5"][0]
            sharp = student["max at τ=0.01"][0].item()
            return (f"samples sum to 1, are one-hot as τ → 0 (mean max {sharp:.3f} "
                    f"at τ = 0.01), near uniform as τ → ∞, and their argmax follows softmax(logits) "
                    f"({_fmt(freq)} vs {_fmt(probs)}; all within {z:.1f} standard errors).")
        for key, hint in GUMBEL_BUGS.items():
            if _stats_z(student, _gumbel_stats(_gumbel_variant(key), 30))[0] <= Z:
                raise CheckFailed(key, hint)
        hints = {
            "argmax": "the argmax of your samples does not follow softmax(logits)",
            "mean": "the average of your samples at τ = 1 differs from the reference's",
            "max at τ=0.01": "your samples are not one-hot as τ → 0",
            "max at τ=100": "your samples are not near uniform as τ → ∞",
        }
        hint = next(v for k, v in hints.items() if where.startswith(k))
        raise CheckFailed("wrong_distribution", f"{hint} ({z:.0f} standard errors off, "
                          f"'{where}').")

    return custom_check(name, body, verbose=verbose,
                        forbid=(hard.gumbel_softmax, torch.nn.functional.gumbel_softmax))


# ----------------------------------------------------------------------------- exercise 3

RF_LOGITS = torch.tensor([1.0, 0.0, 0.5, -0.5], dtype=D)
RF_REWARDS = torch.tensor([1.0, 3.0, -1.0, 0.0], dtype=D) + 10.0  # an offset of 10
RF_CALLS, RF_SAMPLES = 1500, 4


def _reinforce_variant(kind: str) -> Callable:
    """Typical buggy REINFORCE-with-baseline implementations (per-sample estimates)."""

    def fn(logits, rewards, n_samples, generator=None):
        alpha = torch.softmax(logits, -1)
        i = torch.multinomial(alpha, n_samples, replacement=True, generator=generator)
        r = rewards[i]
        onehot = torch.nn.functional.one_hot(i, logits.shape[-1]).to(logits.dtype)
        b = (r.sum() - r) / (n_samples - 1)
        if kind == "baseline_includes_own_reward":
            b = r.mean().expand_as(r)
        if kind == "no_baseline":
            b = torch.zeros_like(r)
        score = onehot - alpha
        if kind == "grad_p_not_log_p":
            score = alpha[i][:, None] * (onehot - alpha)
        if kind == "wrong_sign":
            score = alpha - onehot
        return (r - b)[:, None] * score

    return fn


REINFORCE_BUGS = {
    "baseline_includes_own_reward": "your baseline includes the sample's own reward (the plain "
                                    "batch mean): it is correlated with the sample, so the "
                                    "estimate is biased. Leave the sample out: b_s = mean of the "
                                    "other rewards.",
    "wrong_sign": "the sign is flipped: ∇_θ log α_i = e_i - α (one-hot minus the weights).",
    "grad_p_not_log_p": "you used ∇α_i, not ∇ log α_i = ∇α_i / α_i = e_i - α.",
}


def _estimates(out, n_samples: int) -> torch.Tensor:
    return expect_tensor(out, "the estimates", shape=(n_samples, RF_LOGITS.shape[0]), dtype=D)


def _repeat(fn: Callable, seed: int) -> torch.Tensor:
    """``RF_CALLS`` calls of ``fn`` with one generator -> per-call estimates ``(calls, n, K)``."""
    g = _gen(seed)
    return torch.stack([_estimates(call_student(fn, RF_LOGITS, RF_REWARDS, RF_SAMPLES,
                                                generator=g), RF_SAMPLES)
                        for _ in range(RF_CALLS)])


def _mean_se(per_call: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard error of per-call averages (samples within a call are correlated)."""
    m = per_call.mean(1)
    return m.mean(0), m.std(0) / math.sqrt(m.shape[0])


def _reinforce_solution(logits, rewards, n_samples, generator=None):
    alpha = torch.softmax(logits, dim=-1)
    index = torch.multinomial(alpha, n_samples, replacement=True, generator=generator)
    reward = rewards[index]
    baseline = (reward.sum() - reward) / (n_samples - 1)
    onehot = torch.nn.functional.one_hot(index, logits.shape[-1]).to(logits.dtype)
    return (reward - baseline)[:, None] * (onehot - alpha)


#: every reward the same: the leave-one-out baseline equals the sample's reward, so every
#: estimate is exactly 0 (3.0 is exact in every usual way of computing the mean of the others)
RF_EQUAL_REWARDS = torch.full((4,), 3.0, dtype=D)


@register(_reinforce_solution)
def check_reinforce(fn: Callable, verbose: bool = True) -> CheckResult:
    """``fn(logits (K,), rewards (K,), n_samples, generator) -> (n_samples, K)``: REINFORCE
    estimates (R_s - b_s) ∇_θ log α_{i_s} with the leave-one-out baseline b_s.

    Checks that the draws come from ``generator``, that equal rewards give exactly 0, then
    compares the mean of 1 500 calls with the exact gradient (within 4.5 standard errors) and
    the variance with REINFORCE without a baseline, on rewards with an offset of 10.
    """
    name = "REINFORCE with a baseline"

    def body() -> str:
        _estimates(call_student(fn, RF_LOGITS, RF_REWARDS, 5, generator=_gen(0)), 5)
        expect_generator(lambda g: call_student(fn, RF_LOGITS, RF_REWARDS, 5, generator=g),
                        seed=0, distinct=False, ignores="two calls with identically seeded "
                        "generators gave different estimates: pass generator=generator to "
                        "torch.multinomial.")
        per_call = _repeat(fn, 1)
        if (per_call == 0).all():
            raise CheckFailed("zero_gradient", "every estimate is zero: either the baseline "
                              "equals the sample's own reward (so R - b = 0) or every sample "
                              "picks the same position (argmax instead of sampling).")
        if ((per_call != 0).sum(-1) <= 1).all():  # one nonzero entry per estimate
            raise CheckFailed("onehot_not_score", "you multiplied (R - b) by the one-hot e_i: "
                              "the gradient of log α_i with respect to the logits is e_i - α.")
        exact = exact_gradient(RF_LOGITS, RF_REWARDS)
        mean, se = _mean_se(per_call)
        z = _z(mean, se, exact)
        g = _gen(2)
        no_baseline = torch.stack([reinforce_gradient(RF_LOGITS, RF_REWARDS, RF_SAMPLES, generator=g)
                                   for _ in range(RF_CALLS)])
        var_student = per_call.mean(1).var(0).sum().item()
        var_plain = no_baseline.mean(1).var(0).sum().item()
        if z <= Z and var_student < 0.5 * var_plain:
            equal = _estimates(call_student(fn, RF_LOGITS, RF_EQUAL_REWARDS, 5,
                                            generator=_gen(4)), 5)
            if (equal != 0).any():
                idx = tuple(int(i) for i in (equal != 0).nonzero()[0])
                raise CheckFailed("equal_rewards_not_zero", "with equal rewards (all 3.0) every "
                                  "estimate must be exactly 0: the baseline b_s, the mean of the "
                                  "*other* samples' rewards, equals R_s. Yours gives "
                                  f"{equal[idx].item():.4g} at index {idx} (is b_s divided by "
                                  "n_samples - 1, the number of other samples?).")
            return (f"unbiased (mean within {z:.1f} standard errors of the exact gradient) and "
                    f"{var_plain / var_student:.0f}× less variance than without a baseline.")
        if z <= Z:
            raise CheckFailed("no_baseline", f"unbiased, but the variance ({var_student:.2f}) is "
                              f"not reduced (no baseline: {var_plain:.2f}): subtract the baseline "
                              "b_s = mean of the other samples' rewards.")
        for key, hint in REINFORCE_BUGS.items():
            bug_mean, bug_se = _mean_se(_repeat(_reinforce_variant(key), 3))
            if _z(mean, se, bug_mean, bug_se) <= Z:
                raise CheckFailed(key, hint)
        raise CheckFailed("biased", f"the mean of your estimates {_fmt(mean)} differs from the "
                          f"exact gradient {_fmt(exact)} ({z:.0f} standard errors).")

    return custom_check(name, body, verbose=verbose,
                        forbid=(hard.reinforce_gradient, hard.estimates))


# ----------------------------------------------------------------------------- exercise 4


def _topk_variant(kind: str) -> Callable:
    def fn(scores, values, k):
        n = scores.shape[-1]
        kk = min(k + 1, n) if kind == "off_by_one" else k
        idx = scores.topk(kk, dim=-1, largest=kind != "bottom_k").indices
        keep = torch.zeros_like(scores, dtype=torch.bool).scatter(-1, idx, True)
        if kind == "not_renormalised":
            w = torch.softmax(scores, -1) * keep
        elif kind == "masked_with_zero":
            w = torch.softmax(scores.masked_fill(~keep, 0.0), -1)
        elif kind == "softmax_of_weights":
            w = torch.softmax(torch.softmax(scores, -1).masked_fill(~keep, float("-inf")), -1)
        else:
            w = torch.softmax(scores.masked_fill(~keep, float("-inf")), -1)
        return (w.unsqueeze(-2) @ values).squeeze(-2), w

    return fn


def _topk_solution(scores, values, k):
    keep = torch.zeros_like(scores, dtype=torch.bool).scatter(-1, scores.topk(k, dim=-1).indices,
                                                              True)
    weights = torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=-1)
    return (weights.unsqueeze(-2) @ values).squeeze(-2), weights


@register(_topk_solution)
def check_topk_attention(fn: Callable, verbose: bool = True) -> CheckResult:
    """``fn(scores (..., L), values (..., L, d), k) -> (context (..., d), weights (..., L))``."""
    g = _gen(0)
    s1, v1 = torch.randn(6, generator=g, dtype=D), torch.randn(6, 3, generator=g, dtype=D)
    s2, v2 = torch.randn(2, 7, generator=g, dtype=D), torch.randn(2, 7, 2, generator=g, dtype=D)
    cases = [Case((s1, v1, 3)), Case((s2, v2, 2)), Case((s1, v1, 1)), Case((s2, v2, 7))]
    bugs = {
        "not_renormalised": (_topk_variant("not_renormalised"),
                             "the kept weights do not sum to 1: after dropping the others, "
                             "renormalise (softmax over the kept scores only)."),
        "masked_with_zero": (_topk_variant("masked_with_zero"),
                             "dropped positions still get weight: you set their scores to 0; "
                             "set them to -inf before the softmax."),
        "bottom_k": (_topk_variant("bottom_k"),
                     "you kept the k *smallest* scores: topk(..., largest=True)."),
        "off_by_one": (_topk_variant("off_by_one"), "you kept k + 1 positions, not k."),
        "softmax_of_weights": (_topk_variant("softmax_of_weights"),
                               "you applied the softmax twice (to the weights α): renormalise "
                               "the kept α_i by their sum, or softmax the kept *scores*."),
    }
    return run_check("top-k attention", fn, _topk_solution, cases, bugs,
                     returns=("context", "weights"), forbid=(hard.topk_attention,),
                     verbose=verbose)


# ----------------------------------------------------------------------------- straight-through

ST_LOGITS = torch.tensor([[1.0, 0.0, 0.5, -0.5, 0.2], [0.3, 2.0, -1.0, 0.0, 0.1],
                          [0.0, 0.0, 0.0, 0.0, 0.0], [-1.0, 0.5, 1.5, 0.2, -0.3]], dtype=D)
ST_TAU = 0.5
_ST_WEIGHTS = torch.linspace(-1.0, 2.0, 20, dtype=D).reshape(4, 5)  # a loss Σ w·y to backprop


def _st_solution(logits, tau, generator=None):
    y_soft = _gumbel_solution(logits, tau, generator)
    index = y_soft.argmax(dim=-1, keepdim=True)
    y_hard = torch.zeros_like(y_soft).scatter(-1, index, 1.0)
    return y_hard + y_soft - y_soft.detach()


def _st_probe(fn: Callable) -> Callable:
    """Call ``fn`` on a leaf copy of the logits; return its value and the gradient of Σ w·y."""

    def probe(logits, tau, generator=None):
        leaf = torch.zeros_like(logits, requires_grad=True)
        theta = logits + leaf  # not a leaf: an in-place change raises no autograd error
        y = fn(theta, tau, generator=generator)
        if not torch.equal(theta.detach(), logits):  # changed in place: show it on the input
            logits.copy_(theta.detach())
        grad = None
        if isinstance(y, torch.Tensor) and y.requires_grad and y.shape == theta.shape:
            (grad,) = torch.autograd.grad((y * _ST_WEIGHTS.to(y.dtype)).sum(), leaf,
                                          allow_unused=True)
        return (y.detach() if isinstance(y, torch.Tensor) else y), grad

    probe.__name__ = getattr(fn, "__name__", "probe")
    return probe


def _st_reference(seed: int, soft: str = "gumbel") -> tuple[torch.Tensor, torch.Tensor]:
    theta = ST_LOGITS.clone().requires_grad_(True)
    if soft == "gumbel":
        y_soft = _gumbel_solution(theta, ST_TAU, _gen(seed))
    else:  # the lab's straight-through: backward through α = softmax(logits)
        y_soft = torch.softmax(theta, -1)
    (grad,) = torch.autograd.grad((y_soft * _ST_WEIGHTS).sum(), theta)
    return _st_solution(ST_LOGITS, ST_TAU, _gen(seed)).detach(), grad


@register(_st_solution)
def check_straight_through(fn: Callable, verbose: bool = True) -> CheckResult:
    """``fn(logits (B, K), tau, generator) -> y (B, K)``: straight-through Gumbel-softmax.

    The value must be exactly the one-hot of argmax(softmax((logits + g)/τ)) (g drawn as in
    the Gumbel-softmax exercise, from ``generator``), and the gradient of any loss the
    gradient through the relaxed sample softmax((logits + g)/τ) (Jang et al. 2016, §2.2).
    """
    name = "straight-through Gumbel-softmax"
    probe = _st_probe(fn)

    def body() -> str:
        y, grad = call_student(probe, ST_LOGITS, ST_TAU, generator=_gen(1))
        y = expect_tensor(y, "y", shape=tuple(ST_LOGITS.shape), dtype=D)
        want_y, want_grad = _st_reference(1)
        # y_hard + (y_soft - y_soft.detach()) is one-hot up to round-off (about 1e-16)
        one_hot = bool(((y.abs() < 1e-12) | ((y - 1).abs() < 1e-12)).all()) and bool(
            ((y - 1).abs() < 1e-12).sum(-1).eq(1).all())
        if not one_hot:
            soft = bool((y > 0).all()) and torch.allclose(y.sum(-1), torch.ones(4, dtype=D))
            raise CheckFailed("not_one_hot", (
                "the forward value is the relaxed sample, not a one-hot: return y_hard + "
                "(y_soft - y_soft.detach()), whose value is exactly y_hard." if soft else
                f"the forward value must be exactly one-hot per row; got {_fmt(y[0])} in row 0."))
        if not torch.allclose(y, want_y, rtol=0, atol=1e-12):
            raise CheckFailed("wrong_sample", (
                "your one-hot is not at the argmax of y_soft = softmax((logits + g)/τ) with "
                "g = -log(-log u), u = torch.rand(logits.shape, generator=generator, "
                "dtype=logits.dtype), drawn as in the Gumbel-softmax exercise."))
        if grad is None or not bool(grad.abs().sum() > 0):
            raise CheckFailed("no_gradient", (
                "no gradient reaches the logits: the one-hot alone is a constant. Add the relaxed "
                "sample minus its detached copy, whose value is 0 but whose gradient is y_soft's."))
        if torch.allclose(grad, -want_grad, atol=1e-10):
            raise CheckFailed("wrong_sign", (
                "the gradient has the wrong sign: y_hard + y_soft - y_soft.detach(), not "
                "y_hard - y_soft + y_soft.detach()."))
        if torch.allclose(grad, _st_reference(1, "softmax")[1], atol=1e-10):
            raise CheckFailed("softmax_backward", (
                "your backward goes through softmax(logits), the lab's straight-through; here it "
                "goes through the Gumbel-softmax sample softmax((logits + g)/τ) that chose y."))
        if not torch.allclose(grad, want_grad, atol=1e-10, rtol=1e-8):
            raise CheckFailed("values", (
                f"the gradient of Σ w·y differs from the relaxed sample's: row 0 expected "
                f"{_fmt(want_grad[0])}, got {_fmt(grad[0])}. Is y_soft divided by τ?"))
        expect_generator(lambda g: call_student(probe, ST_LOGITS, ST_TAU, generator=g)[0], seed=1)
        return ("a one-hot forward (up to round-off), the relaxed sample's gradient backward, drawn from "
                "the generator")

    return custom_check(name, body, verbose=verbose,
                        forbid=(hard.gumbel_softmax, torch.nn.functional.gumbel_softmax))
