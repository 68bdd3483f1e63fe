"""Soft vs hard attention, and how to train through a discrete choice.

Soft attention blends every value with its softmax weight; hard attention picks one
position; top-k sits in between. A hard pick has no gradient, so the second half of this
module gives the classic ways around that (REINFORCE, Gumbel-softmax, straight-through),
each returning per-sample gradient estimates so their bias and variance can be measured
against `exact_gradient`.

Shapes: ``scores (..., L)``, ``values (..., L, d)``; leading batch dims broadcast.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from utils import _validate

Reward = torch.Tensor | Callable[[torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------- attention


def _softmaxable(name: str, x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Reject what would make softmax NaN: +inf, or a row (along ``dim``) all -inf."""
    if torch.isposinf(x).any():
        raise ValueError(f"{name} contains +inf (shape {tuple(x.shape)}); softmax would be NaN")
    if torch.isneginf(x).all(dim=dim).any():
        raise ValueError(f"{name} has a row that is all -inf (shape {tuple(x.shape)})")
    return x


def _scores_values(scores, values) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate and broadcast to ``scores (*B, L)`` and ``values (*B, L, d)``."""
    _softmaxable("scores", _validate.tensor("scores", scores))
    _validate.tensor("values", values, min_dim=2, finite=True)
    if scores.shape[-1] != values.shape[-2]:
        raise ValueError(
            f"scores cover L={scores.shape[-1]} positions but values have "
            f"{values.shape[-2]} (scores {tuple(scores.shape)}, values {tuple(values.shape)})"
        )
    try:
        batch = _validate.broadcast_shapes(scores.shape[:-1], values.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"batch dims of scores {tuple(scores.shape)} and values {tuple(values.shape)} "
            "do not broadcast"
        ) from None
    return scores.expand(*batch, -1), values.expand(*batch, *values.shape[-2:])


def soft_attention(scores: torch.Tensor, values: torch.Tensor):
    """Soft attention: c = Σ_i α_i v_i with α = softmax(scores).

    scores ``(..., L)`` (``-inf`` = masked, not a whole row; no NaN or ``+inf``), values
    ``(..., L, d)`` (finite) -> context ``(..., d)``, weights ``(..., L)``, in the promoted
    dtype of scores and values (float16 and bfloat16 are computed in float32).
    """
    scores, values = _scores_values(scores, values)
    dtype, scores, values = _work(scores, values)
    weights = torch.softmax(scores, dim=-1)
    return _weighted(weights, values).to(dtype), weights.to(dtype)


def _work(scores, values) -> tuple[torch.dtype, torch.Tensor, torch.Tensor]:
    """The promoted dtype of ``scores`` and ``values``, and both in at least float32."""
    dtype = torch.promote_types(scores.dtype, values.dtype)
    work = torch.promote_types(dtype, torch.float32)
    return dtype, scores.to(work), values.to(work)


def _weighted(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Σ_i weights_i values_i: ``(..., L)``, ``(..., L, d)`` -> ``(..., d)``."""
    return (weights.unsqueeze(-2) @ values).squeeze(-2)


def _gather(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values ``(*B, L, d)``, index ``(*B)`` -> ``values[..., index, :]`` of shape ``(*B, d)``."""
    idx = index[..., None, None].expand(*index.shape, 1, values.shape[-1])
    return torch.take_along_dim(values, idx, dim=-2).squeeze(-2)


def _generator(generator) -> torch.Generator | None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__}"
        )
    return generator


def _sample(probs: torch.Tensor, n: int, generator) -> torch.Tensor:
    """Draw ``n`` indices from every row of ``probs (*B, L)`` -> ``(*B, n)`` long."""
    flat = probs.detach().reshape(-1, probs.shape[-1]).double()
    draws = torch.multinomial(flat, n, replacement=True, generator=generator)
    return draws.reshape(*probs.shape[:-1], n)


def hard_attention(scores, values, generator=None, mode: str = "sample"):
    """Hard attention: pick one position i and return its value, c = v_i.

    ``mode="sample"`` draws i ~ Categorical(softmax(scores)); ``mode="argmax"`` takes the
    most likely position. scores ``(..., L)``, values ``(..., L, d)`` ->
    context ``(..., d)``, index ``(...)`` (long). No gradient reaches the scores.
    """
    if mode not in ("sample", "argmax"):
        raise ValueError(f"mode must be 'sample' or 'argmax', got {mode!r}")
    _generator(generator)
    scores, values = _scores_values(scores, values)
    if mode == "argmax":
        index = scores.argmax(dim=-1)
    else:
        work = torch.promote_types(scores.dtype, torch.float32)
        index = _sample(torch.softmax(scores.to(work), dim=-1), 1, generator).squeeze(-1)
    return _gather(values, index), index


def topk_attention(scores, values, k: int):
    """Top-k attention: keep the k largest weights, renormalise, zero the rest.

    α_i = exp(s_i) / Σ_{j ∈ topk} exp(s_j) for i in the top k, else 0; c = Σ_i α_i v_i.
    k = L is soft attention, k = 1 is argmax hard attention. Differentiable w.r.t. the
    kept scores. scores ``(..., L)``, values ``(..., L, d)`` -> context ``(..., d)``,
    weights ``(..., L)``.
    """
    scores, values = _scores_values(scores, values)
    n = scores.shape[-1]
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an int, got {type(k).__name__} {k!r}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..L (L={n} positions), got k={k}")
    dtype, scores, values = _work(scores, values)
    keep = torch.zeros_like(scores, dtype=torch.bool)
    keep.scatter_(-1, scores.topk(k, dim=-1).indices, True)
    weights = torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=-1)
    return _weighted(weights, values).to(dtype), weights.to(dtype)


# ----------------------------------------------------------------------------- Gumbel


def _uniform(shape, generator) -> torch.Tensor:
    """U(0, 1) draws in float64 (the same noise whatever the logits' dtype)."""
    return torch.rand(shape, generator=generator, dtype=torch.float64)


def _gumbel(shape, dtype, generator) -> torch.Tensor:
    """Standard Gumbel noise g = -log(-log u), never inf: u is kept inside [tiny, 1 - eps]."""
    info = torch.finfo(torch.float64)
    u = _uniform(shape, generator).clamp(info.tiny, 1 - info.eps)
    return (-torch.log(-torch.log(u))).to(dtype)


def _tau_dtype(dtype: torch.dtype, tau: float) -> torch.dtype:
    """``dtype``, or float64 if ``τ`` is too small for it (below its smallest normal number)."""
    return dtype if tau >= torch.finfo(dtype).tiny else torch.float64


def _soft_sample(logits, tau, generator, dim) -> torch.Tensor:
    """y = softmax((logits + g) / τ) along ``dim``, computed in at least float32.

    Softmax is shift invariant, so the maximum of z = logits + g is subtracted before the
    division by τ: (z - max z) / τ <= 0 may underflow to -inf (weight 0) for a tiny τ but
    never overflows to +inf, which would make the softmax NaN. A τ below the dtype's
    smallest normal number (it would round to 0, and 0/0 is NaN) is computed in float64.
    """
    work = _tau_dtype(torch.promote_types(logits.dtype, torch.float32), tau)
    z = logits.to(work) + _gumbel(logits.shape, work, generator)
    z = z - z.detach().amax(dim=dim, keepdim=True)
    return torch.softmax(z / tau, dim=dim).to(logits.dtype)


def gumbel_softmax(logits, tau: float = 1.0, hard: bool = False, generator=None, dim: int = -1):
    """Gumbel-softmax sample y = softmax((logits + g) / τ), g ~ Gumbel(0, 1) i.i.d.

    As τ -> 0 the sample becomes the one-hot of argmax(logits + g) ~ Categorical(softmax).
    With ``hard=True`` the value is that exact one-hot but the gradient is the soft
    sample's (straight-through: y_hard + (y_soft - y_soft.detach())). Same semantics as
    ``torch.nn.functional.gumbel_softmax``, reproducible through ``generator``.
    logits ``(..., K, ...)`` -> same shape.
    """
    _validate.tensor("logits", logits)
    _validate.positive("tau", tau)
    if not isinstance(hard, bool):
        raise TypeError(f"hard must be a bool, got {type(hard).__name__}")
    dim = _validate.dim("dim", logits, dim)
    _softmaxable("logits", logits, dim)
    y_soft = _soft_sample(logits, tau, _generator(generator), dim)
    if not hard:
        return y_soft
    index = y_soft.argmax(dim=dim, keepdim=True)
    y_hard = torch.zeros_like(y_soft).scatter_(dim, index, 1.0)
    return y_hard + (y_soft - y_soft.detach())  # exactly one-hot forward, soft backward


# ----------------------------------------------------------------------------- estimators


def _check_logits(logits) -> torch.Tensor:
    _softmaxable("logits", _validate.tensor("logits", logits))
    if logits.dim() != 1:
        raise ValueError(f"logits must be 1-D of shape (K,), got shape {tuple(logits.shape)}")
    return logits.detach()


def _check_f(f, k: int, dtype) -> Reward:
    if callable(f):
        return f
    if not isinstance(f, torch.Tensor):
        raise TypeError(
            f"f must be a reward tensor of shape (K,) or a callable, got {type(f).__name__}"
        )
    _validate.tensor("f", f)
    if not torch.isfinite(f).all():
        raise ValueError(f"f must hold finite rewards, got {f.tolist()}")
    if f.shape != (k,):
        raise ValueError(f"f must have shape (K,) = ({k},) like logits, got {tuple(f.shape)}")
    return f.detach().to(dtype)


def _rewards(f: Reward, y: torch.Tensor) -> torch.Tensor:
    """f at a batch of (relaxed) one-hot rows ``y (n, K)`` -> ``(n,)``."""
    if isinstance(f, torch.Tensor):
        return y @ f
    out = f(y)
    if not isinstance(out, torch.Tensor) or out.shape != y.shape[:1]:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"f must map a batch (n, K) to rewards (n,) = ({y.shape[0]},), got {got}")
    return out


def _reward_grad(f: Reward, y: torch.Tensor) -> torch.Tensor:
    """Row-wise ∇_y f(y) for ``y (n, K)`` -> ``(n, K)``.

    f acts on each row separately, so one backward of Σ_s f(y_s) gives every row's gradient.
    """
    if isinstance(f, torch.Tensor):
        return f.expand_as(y)
    with torch.enable_grad():
        y = y.detach().requires_grad_(True)
        out = _rewards(f, y)
        if not out.requires_grad:  # f ignores y smoothly (e.g. via argmax): zero gradient
            return torch.zeros_like(y)
        (grad,) = torch.autograd.grad(out.sum(), y, allow_unused=True)
    return torch.zeros_like(y) if grad is None else grad


def _softmax_vjp(p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """J_softmaxᵀ g = p ⊙ (g - p·g), row-wise; the softmax Jacobian is diag(p) - p pᵀ."""
    return p * (g - (p * g).sum(-1, keepdim=True))


def _onehot(index: torch.Tensor, k: int, dtype) -> torch.Tensor:
    return torch.nn.functional.one_hot(index, k).to(dtype)


def exact_gradient(logits, f) -> torch.Tensor:
    """∇_θ J(θ) for J(θ) = E_{i~softmax(θ)}[f(i)] = Σ_i α_i f(e_i), by enumeration.

    Closed form: ∂J/∂θ_i = α_i (f_i - Σ_j α_j f_j). logits ``(K,)``, f rewards ``(K,)`` or a
    callable on one-hot rows ``(n, K) -> (n,)``. Returns ``(K,)``.
    """
    theta = _check_logits(logits)
    k = theta.shape[0]
    f = _check_f(f, k, theta.dtype)
    with torch.no_grad():
        r = _rewards(f, torch.eye(k, dtype=theta.dtype)).detach()
    return _softmax_vjp(torch.softmax(theta, -1), r)


def reinforce_gradient(logits, f, n_samples: int, baseline=None, generator=None):
    """REINFORCE (score-function) estimates (f(i) - b) ∇_θ log α_i = (f(i) - b)(e_i - α).

    i ~ Categorical(α = softmax(θ)). ``baseline``: None (b = 0), a number, or ``"mean"``
    (b_s = mean of the batch's other rewards, leave-one-out, so still unbiased; needs
    n_samples >= 2). logits ``(K,)`` -> ``(n_samples, K)`` per-sample estimates.
    """
    theta = _check_logits(logits)
    k = theta.shape[0]
    f = _check_f(f, k, theta.dtype)
    _validate.positive("n_samples", n_samples, integer=True)
    _check_baseline(baseline, n_samples)
    alpha = torch.softmax(theta, -1)
    y = _onehot(_sample(alpha, n_samples, _generator(generator)), k, theta.dtype)
    with torch.no_grad():
        r = _rewards(f, y).detach()
    if baseline == "mean":
        b = (r.sum() - r) / (n_samples - 1)
    else:
        b = 0.0 if baseline is None else float(baseline)
    return (r - b)[:, None] * (y - alpha)


def _check_baseline(baseline, n_samples: int) -> None:
    if baseline is None:
        return
    if isinstance(baseline, str):
        if baseline != "mean":
            raise ValueError(f"baseline must be None, a number or 'mean', got {baseline!r}")
        if n_samples < 2:
            raise ValueError(f"baseline='mean' needs n_samples >= 2, got n_samples={n_samples}")
        return
    if isinstance(baseline, bool) or not isinstance(baseline, int | float):
        raise TypeError(
            f"baseline must be None, a number or 'mean', got {type(baseline).__name__}"
        )
    if not abs(baseline) < float("inf"):
        raise ValueError(f"baseline must be a finite number, got {baseline!r}")


def gumbel_softmax_gradient(logits, f, tau: float, n_samples: int, generator=None):
    """Pathwise Gumbel-softmax estimates ∇_θ f(y), y = softmax((θ + g) / τ).

    ∇_θ f(y) = (1/τ) J_softmax(y)ᵀ ∇_y f(y) = y ⊙ (∇_y f - y·∇_y f) / τ. Biased for
    τ > 0 (it differentiates E[f(y_τ)], not E[f(i)]); the bias shrinks as τ -> 0 while the
    variance grows. f as a reward vector means f(y) = y·f. logits ``(K,)`` ->
    ``(n_samples, K)``.
    """
    theta = _check_logits(logits)
    k = theta.shape[0]
    f = _check_f(f, k, theta.dtype)
    _validate.positive("tau", tau)
    _validate.positive("n_samples", n_samples, integer=True)
    y = _soft_sample(theta.expand(n_samples, k), tau, _generator(generator), -1)
    work = _tau_dtype(theta.dtype, tau)
    estimates = (_softmax_vjp(y.to(work), _reward_grad(f, y).to(work)) / tau).to(theta.dtype)
    if not _validate.finite_sum(estimates):
        raise ValueError(
            f"tau={tau!r} is too small for {theta.dtype}: the estimates (of size up to |f|/tau) "
            "overflow; use a larger tau or float64 logits"
        )
    return estimates


def straight_through_gradient(logits, f, n_samples: int, generator=None):
    """Straight-through estimates: forward the hard one-hot, backward through α = softmax(θ).

    y = e_i + α - stop_grad(α), i ~ Categorical(α), so ∇_θ f(y) = J_softmax(θ)ᵀ ∇_y f(e_i)
    = α ⊙ (∇_y f - α·∇_y f). For a linear f(y) = y·r this is α ⊙ (r - α·r), the exact
    gradient with zero variance; for a nonlinear f it is biased. logits ``(K,)`` ->
    ``(n_samples, K)``.
    """
    theta = _check_logits(logits)
    k = theta.shape[0]
    f = _check_f(f, k, theta.dtype)
    _validate.positive("n_samples", n_samples, integer=True)
    alpha = torch.softmax(theta, -1)
    y = _onehot(_sample(alpha, n_samples, _generator(generator)), k, theta.dtype)
    return _softmax_vjp(alpha.expand(n_samples, k), _reward_grad(f, y))


# ----------------------------------------------------------------------------- the lab

#: the estimators :func:`estimates` knows, by the name chapter 7's lab and explorer use
ESTIMATORS = ("REINFORCE", "REINFORCE + baseline", "Gumbel-softmax", "straight-through")
#: the constant the lab adds to every reward (a reward offset REINFORCE must cope with)
OFFSET = 10.0


def lab_rewards(r: torch.Tensor, offset: float = OFFSET) -> dict[str, torch.Tensor | Callable]:
    """Chapter 7's three rewards built on a reward vector ``r (K,)``: f(y) = y·r ("linear"),
    f(y) = y·(r + offset) (the same gradient, a larger reward) and f(y) = (y·r)² ("nonlinear").
    Returned as ``{name: f}``, each ``f`` a reward vector or a function of one-hot rows."""
    r = _validate.tensor("r", r, finite=True).detach()

    def square(y: torch.Tensor) -> torch.Tensor:
        return (y @ r.to(y.dtype)) ** 2

    return {"linear": r, f"linear + {offset:g}": r + offset, "nonlinear (y·r)²": square}


def estimates(name: str, logits: torch.Tensor, f, n_samples: int, tau: float = 1.0,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """``n_samples`` per-sample gradient estimates ``(n_samples, K)`` of ∇_θ E[f] by estimator
    ``name`` (one of :data:`ESTIMATORS`):

    * "REINFORCE": :func:`reinforce_gradient`, f(e_i) (e_i - α) (Williams 1992);
    * "REINFORCE + baseline": the same with b = the mean of the other samples' rewards
      (leave-one-out, needs ``n_samples >= 2``);
    * "Gumbel-softmax": :func:`gumbel_softmax_gradient` at temperature ``tau`` (Jang et al.
      2016, Maddison et al. 2016), the only one that uses ``tau``;
    * "straight-through": :func:`straight_through_gradient` (Bengio et al. 2013).
    """
    if name == "REINFORCE":
        return reinforce_gradient(logits, f, n_samples, generator=generator)
    if name == "REINFORCE + baseline":
        return reinforce_gradient(logits, f, n_samples, baseline="mean", generator=generator)
    if name == "Gumbel-softmax":
        return gumbel_softmax_gradient(logits, f, tau, n_samples, generator=generator)
    if name == "straight-through":
        return straight_through_gradient(logits, f, n_samples, generator=generator)
    raise ValueError(f"estimator must be one of {ESTIMATORS}, got {name!r}")


def bias_variance(est: torch.Tensor, exact: torch.Tensor) -> dict[str, torch.Tensor | float]:
    """Bias and variance of gradient estimates ``est (n, K)`` of the gradient ``exact (K,)``.

    Returns ``mean (K,)`` the mean estimate, ``bias`` = ‖mean - exact‖, ``se (K,)`` the
    standard errors of the mean (std / √n), ``z`` = the largest |mean - exact| / se over the K
    components (≈ |N(0, 1)| if unbiased, so z > 4 detects a bias; 0 when the estimates are
    exact), ``noise`` = ‖se‖ (the bias an unbiased estimator shows by chance) and
    ``variance`` = Σ_j Var(est_j), the total variance of one estimate.
    """
    n = est.shape[0]
    mean = est.mean(0)
    se = est.std(0) / math.sqrt(n) if n > 1 else torch.full_like(mean, float("inf"))
    diff = (mean - exact).abs()
    exact_match = diff <= 1e-12 * (1 + exact.abs())
    z = torch.where(exact_match, torch.zeros_like(diff), diff / se.clamp_min(1e-300))
    return {"mean": mean, "bias": float((mean - exact).norm()), "se": se, "z": float(z.max()),
            "noise": float(se.norm()), "variance": float(est.var(0).sum()) if n > 1 else 0.0}


def repeated_estimates(name: str, logits: torch.Tensor, f, n_samples: int, repeats: int,
                       tau: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """``repeats`` independent gradient estimates, each the mean of ``n_samples`` per-sample
    estimates of :func:`estimates`: ``(repeats, K)``."""
    if name == "REINFORCE + baseline":  # the baseline is computed within each batch
        return torch.stack([estimates(name, logits, f, n_samples, tau, generator).mean(0)
                            for _ in range(repeats)])
    est = estimates(name, logits, f, n_samples * repeats, tau, generator)
    return est.reshape(repeats, n_samples, -1).mean(1)
