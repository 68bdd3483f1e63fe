"""Chapter 7's estimator lab: measure bias and variance of gradient estimators, and explore them.

The problem: J(θ) = E_{i ~ softmax(θ)}[f(e_i)] over K categories, whose exact gradient
:func:`utils.hard.exact_gradient` computes by enumeration. Every estimator of
:mod:`utils.hard` returns per-sample estimates ``(n, K)``; :func:`bias_variance` measures them
against the exact gradient, with standard errors, so "unbiased" is a measured statement
(the bias is within a few standard errors of 0), not an assumption.

:class:`EstimatorView` shows, for one estimator, reward, τ and batch size n, the spread of
``repeats`` independent gradient estimates (each the mean of n samples) around the exact one.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.figure import Figure

from ..hard import (
    exact_gradient,
    gumbel_softmax_gradient,
    reinforce_gradient,
    straight_through_gradient,
)
from ._core import Explorer, View

__all__ = [
    "ESTIMATORS",
    "EstimatorView",
    "bias_variance",
    "estimates",
    "estimator_explorer",
    "repeated_estimates",
    "rewards",
]

#: the estimators, by the name the lab and the explorer use
ESTIMATORS = ("REINFORCE", "REINFORCE + baseline", "Gumbel-softmax", "straight-through")
OFFSET = 10.0


def rewards(r: torch.Tensor, offset: float = OFFSET) -> dict[str, torch.Tensor | Callable]:
    """The lab's three rewards built on a reward vector ``r (K,)``: f(y) = y·r (linear),
    y·(r + offset) (the same with an offset), and (y·r)² (nonlinear)."""
    r = r.detach()

    def square(y: torch.Tensor) -> torch.Tensor:
        return (y @ r.to(y.dtype)) ** 2

    return {"linear": r, f"linear + {offset:g}": r + offset, "nonlinear (y·r)²": square}


def estimates(name: str, logits: torch.Tensor, f, n_samples: int, tau: float = 1.0,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """``n_samples`` per-sample gradient estimates ``(n_samples, K)`` of estimator ``name``.

    "REINFORCE + baseline" uses the leave-one-out batch mean (needs n_samples >= 2);
    ``tau`` is only used by "Gumbel-softmax".
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
    """Bias and variance of estimates ``est (n, K)`` of the gradient ``exact (K,)``.

    Returns ``mean (K,)``, ``bias`` = ‖mean - exact‖, ``se (K,)`` the standard errors of the
    mean, ``z`` = the largest |mean - exact| / se (≈ N(0, 1) if unbiased; 0 when the
    estimates are exact), ``noise`` = ‖se‖ (the bias an unbiased estimator shows by chance),
    and ``variance`` = the total variance Σ_j Var(est_j) of one estimate.
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
    """``repeats`` independent gradient estimates, each the mean of ``n_samples``: ``(repeats, K)``."""
    if name == "REINFORCE + baseline":  # the baseline is computed within each batch
        return torch.stack([estimates(name, logits, f, n_samples, tau, generator).mean(0)
                            for _ in range(repeats)])
    est = estimates(name, logits, f, n_samples * repeats, tau, generator)
    return est.reshape(repeats, n_samples, -1).mean(1)


class EstimatorView(View):
    """``repeats`` gradient estimates per component (dots) around the exact gradient (red)."""

    def __init__(self, logits: torch.Tensor, r: torch.Tensor, repeats: int = 100, seed: int = 0):
        self.logits = logits.detach().double()
        self.rewards = rewards(r.double())
        self.repeats, self.seed, self.draw = repeats, seed, 0
        k = self.logits.shape[0]
        self.defaults = {"estimator": "REINFORCE", "reward": "linear + 10", "tau": 0.5,
                         "n_samples": 10}
        rng = np.random.default_rng(seed)
        self.jitter = rng.uniform(-0.28, 0.28, size=(repeats, k))
        self.fig = Figure(figsize=(9, 3.8), dpi=72, layout="constrained")
        self.ax = self.fig.subplots()
        self.dots = self.ax.scatter(np.zeros(repeats * k), np.zeros(repeats * k), s=10,
                                    color="#3b528b", alpha=0.45, label="one estimate (mean of n)")
        self.exact_lines = [self.ax.plot([j - 0.38, j + 0.38], [0, 0], color="#d55e00",
                                         linewidth=3, label="exact ∇J" if j == 0 else None)[0]
                            for j in range(k)]
        self.mean_lines = [self.ax.plot([j - 0.38, j + 0.38], [0, 0], color="black", linewidth=1.5,
                                        linestyle="--",
                                        label="mean of the estimates" if j == 0 else None)[0]
                           for j in range(k)]
        self.ax.axhline(0, color="#999999", linewidth=0.6)
        self.ax.set_xticks(range(k), [f"∂J/∂θ_{j + 1}" for j in range(k)])
        self.ax.set_xlim(-0.6, k - 0.4)
        self.ax.set_ylim(-1, 1)
        self.ax.legend(loc="upper left", fontsize=8, ncols=3)
        self.title = self.ax.set_title(" ", fontsize=10)
        self.dynamic = [self.dots, *self.exact_lines, *self.mean_lines, self.title]

    def resample(self) -> None:
        self.draw += 1

    def _rescale(self, lo: float, hi: float) -> None:
        """Refit the y-axis when the data leave it or fill less than a quarter of it."""
        pad = 0.12 * (hi - lo) + 1e-6
        lo, hi = lo - pad, hi + pad * 2.5  # room for the legend
        cur_lo, cur_hi = self.ax.get_ylim()
        if lo < cur_lo or hi > cur_hi or (hi - lo) < 0.25 * (cur_hi - cur_lo):
            self.ax.set_ylim(lo, hi)
            self.invalidate()  # axes changed: the explorer redraws everything once

    def update(self, estimator: str, reward: str, tau: float, n_samples: int) -> dict:
        if reward not in self.rewards:
            raise ValueError(f"reward must be one of {list(self.rewards)}, got {reward!r}")
        if estimator == "REINFORCE + baseline" and n_samples < 2:
            raise ValueError("REINFORCE + baseline needs n_samples >= 2 (leave-one-out)")
        f = self.rewards[reward]
        exact = exact_gradient(self.logits, f)
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.draw)
        est = repeated_estimates(estimator, self.logits, f, int(n_samples), self.repeats, tau,
                                 generator)
        stats = bias_variance(est, exact)
        k = self.logits.shape[0]
        x = (np.arange(k)[None, :] + self.jitter).ravel()
        y = est.numpy().ravel()
        self.dots.set_offsets(np.column_stack([x, y]))
        for j in range(k):
            self.exact_lines[j].set_ydata([exact[j].item()] * 2)
            self.mean_lines[j].set_ydata([stats["mean"][j].item()] * 2)
        values = np.concatenate([y, exact.numpy()])
        self._rescale(float(values.min()), float(values.max()))
        spread = math.sqrt(stats["variance"])
        verdict = ("exact" if stats["z"] == 0 and spread == 0 else
                   "no bias detected" if stats["z"] <= 4 else "biased")
        tau_text = f", τ = {tau:.2f}" if estimator == "Gumbel-softmax" else ""
        self.title.set_text(
            f"{estimator}{tau_text}, reward {reward}, n = {n_samples} per estimate\n"
            f"‖bias‖ = {stats['bias']:.3f} (noise level ± {2 * stats['noise']:.3f}: {verdict}), "
            f"spread of the estimates (√total variance) = {spread:.3f}")
        return {"estimates": est, "exact": exact, **stats, "spread": spread}


def estimator_explorer(logits: torch.Tensor, r: torch.Tensor, repeats: int = 100,
                       seed: int = 0) -> Explorer:
    """Pick an estimator, a reward, τ (Gumbel-softmax) and the batch size n."""
    view = EstimatorView(logits, r, repeats, seed)
    d = view.defaults
    style = {"description_width": "initial"}
    controls = {
        "estimator": widgets.Dropdown(options=list(ESTIMATORS), value=d["estimator"],
                                      description="estimator", style=style),
        "reward": widgets.Dropdown(options=list(view.rewards), value=d["reward"],
                                   description="reward", style=style),
        "tau": widgets.FloatLogSlider(value=d["tau"], base=10, min=-1.3, max=np.log10(5),
                                      step=0.01, description="τ (Gumbel)", style=style,
                                      continuous_update=False),
        "n_samples": widgets.SelectionSlider(options=[2, 5, 10, 20, 50, 100, 200, 500],
                                             value=d["n_samples"], description="n per estimate",
                                             style=style, continuous_update=False),
    }
    return Explorer(view, controls, {"resample": lambda ex: ex.view.resample()})
