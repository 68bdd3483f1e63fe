"""Chapter 7's estimator lab: measure bias and variance of gradient estimators, and explore them.

The problem: J(θ) = E_{i ~ softmax(θ)}[f(e_i)] over K categories, whose exact gradient
:func:`utils.hard.exact_gradient` computes by enumeration. The maths lives in
:mod:`utils.hard` (:func:`~utils.hard.estimates`, :func:`~utils.hard.repeated_estimates`,
:func:`~utils.hard.bias_variance`, :func:`~utils.hard.lab_rewards`); this module only draws it.

:class:`EstimatorView` shows, for one estimator, reward, τ and batch size n, the spread of
``repeats`` independent gradient estimates (each the mean of n samples) around the exact one.
"""

from __future__ import annotations

import math

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.figure import Figure

from ..hard import ESTIMATORS, bias_variance, exact_gradient, repeated_estimates
from ..hard import lab_rewards as rewards
from ._core import Explorer, View

__all__ = ["EstimatorView", "estimator_explorer"]

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
