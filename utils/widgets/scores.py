"""Chapter 6's widgets: pick a score function and d_k; slide a cosine temperature."""

from __future__ import annotations

import math
from collections.abc import Sequence

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.figure import Figure

from .. import scores
from ..attention import softmax
from ..plotting import BAR, HIGHLIGHT, bar_weights, to_numpy
from ._core import Explorer, View, log_steps_slider, set_bars, token_dropdown

__all__ = [
    "CosineTemperatureView",
    "ScoreFunctionView",
    "cosine_temperature_explorer",
    "score_explorer",
    "softmax_stats",
]

GAUGE = "#35b779"
D_K_OPTIONS = tuple(2**i for i in range(11))  # 1 .. 1024
#: histogram bins of the scores: width 1.5 on [-45, 45]; values beyond go to the end bins
HIST_EDGES = np.linspace(-45.0, 45.0, 61)


def softmax_stats(s: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-row softmax statistics of scores ``s (..., Lk)``: the weights, their maximum,
    entropy (nats) and the Frobenius norm of the softmax Jacobian ``diag(p) - p pᵀ``,
    ``‖J‖²_F = Σp² − 2Σp³ + (Σp²)²``. Each statistic has shape ``(...)``."""
    p = softmax(s, dim=-1)
    entropy = -(p * p.clamp_min(torch.finfo(p.dtype).tiny).log()).sum(-1)
    p2, p3 = (p**2).sum(-1), (p**3).sum(-1)
    jac = (p2 - 2 * p3 + p2**2).clamp_min(0).sqrt()
    return {"weights": p, "max_weight": p.amax(-1), "entropy": entropy, "jacobian_norm": jac}


def _randn(*shape, generator) -> torch.Tensor:
    return torch.randn(*shape, generator=generator, dtype=torch.float64)


class ScoreFunctionView(View):
    """Random unit-variance queries and keys of size d_k, scored by one function.

    Left: histogram of all scores. Middle: one query's weights, sorted (the largest in
    yellow). Right: the mean max
    weight, entropy (as a fraction of log N) and softmax-Jacobian norm over the queries.
    The queries and keys of size d_k are the first d_k coordinates of fixed draws of size
    1024, so moving the slider adds coordinates instead of drawing new vectors. The
    parameters of general, additive and concat are random, scaled like a standard
    initialisation (entries of variance 1/fan-in), untrained.
    """

    def __init__(self, n_queries: int = 16, n_keys: int = 32, hidden: int = 64, query: int = 0,
                 seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        d = max(D_K_OPTIONS)
        self.query, self.hidden, self.n_keys = query, hidden, n_keys
        self.q, self.k = _randn(n_queries, d, generator=g), _randn(n_keys, d, generator=g)
        self.w = _randn(d, d, generator=g)
        self.w_q, self.w_k = _randn(d, hidden, generator=g), _randn(d, hidden, generator=g)
        self.w_c = _randn(2 * d, hidden, generator=g)
        self.v, self.v_c = _randn(hidden, generator=g), _randn(hidden, generator=g)
        self.defaults = {"function": "dot", "d_k": 64, "temperature": 1.0}

        self.fig = Figure(figsize=(10, 3.5), dpi=72, layout="constrained")
        ax_h, ax_w, ax_g = self.fig.subplots(1, 3, width_ratios=[1.25, 1.25, 0.8])
        # step patches: one artist each, fast to create and to redraw
        self.hist = ax_h.stairs(np.zeros(len(HIST_EDGES) - 1), HIST_EDGES, fill=True, color=BAR)
        ax_h.set(xlim=(HIST_EDGES[0], HIST_EDGES[-1]), ylim=(0, 1), xlabel="score",
                 ylabel="fraction of scores", title="all scores (clipped to ±45)")
        self.bars = ax_w.stairs(np.zeros(n_keys), np.arange(n_keys + 1) + 0.5, fill=True,
                                color=BAR)
        self.top = ax_w.stairs([0.0], [0.5, 1.5], fill=True, color=HIGHLIGHT)
        ax_w.set(xlim=(0.5, n_keys + 0.5), ylim=(0, 1), ylabel="weight",
                 xlabel=f"{n_keys} keys, largest first", title=f"query {query}: weights, sorted")
        ax_w.axhline(1 / n_keys, color="#777777", linestyle="--", linewidth=1)
        names = ["max weight", "entropy\n/ log N", "‖J‖_F"]
        self.gauges = ax_g.bar(range(3), np.zeros(3), color=GAUGE)
        ax_g.set(xticks=range(3), ylim=(0, 1), title="mean over queries")
        ax_g.set_xticks(range(3), names, fontsize=9)
        self.gauge_labels = [ax_g.text(i, 0, "", ha="center", va="bottom", fontsize=9)
                             for i in range(3)]
        self.title = self.fig.suptitle(" ")
        self.dynamic = [self.hist, self.bars, self.top, *self.gauges, *self.gauge_labels,
                        self.title]

    def score_matrix(self, function: str, d_k: int, temperature: float = 1.0) -> torch.Tensor:
        """The ``(n_queries, n_keys)`` scores of ``function`` at size ``d_k``."""
        if function not in scores.SCORE_FUNCTIONS:
            raise ValueError(f"function must be one of {sorted(scores.SCORE_FUNCTIONS)}, "
                             f"got {function!r}")
        if not 1 <= d_k <= self.q.shape[-1]:
            raise ValueError(f"d_k must be between 1 and {self.q.shape[-1]}, got {d_k}")
        q, k, d, h = self.q[:, :d_k], self.k[:, :d_k], self.q.shape[-1], self.hidden
        fan_in, v_scale = 1 / math.sqrt(d_k), 1 / math.sqrt(h)
        if function == "general":
            return scores.general(q, k, self.w[:d_k, :d_k] * fan_in)
        if function == "additive":
            return scores.additive(q, k, self.w_q[:d_k] * fan_in, self.w_k[:d_k] * fan_in,
                                   self.v * v_scale)
        if function == "concat":
            w = torch.cat([self.w_c[:d_k], self.w_c[d : d + d_k]]) / math.sqrt(2 * d_k)
            return scores.concat(q, k, w, self.v_c * v_scale)
        if function == "cosine":
            return scores.cosine(q, k, temperature)
        return scores.SCORE_FUNCTIONS[function](q, k)

    def update(self, function: str, d_k: int, temperature: float = 1.0) -> dict:
        s = self.score_matrix(function, d_k, temperature)
        stats = softmax_stats(s)
        counts, _ = np.histogram(np.clip(to_numpy(s), HIST_EDGES[0], HIST_EDGES[-1]), HIST_EDGES)
        fractions = counts / s.numel()
        self.hist.set_data(fractions)
        row = np.sort(to_numpy(stats["weights"][self.query]))[::-1]
        self.bars.set_data(row)
        self.top.set_data(row[:1])
        gauges = np.array([stats["max_weight"].mean().item(),
                           stats["entropy"].mean().item() / math.log(self.n_keys),
                           stats["jacobian_norm"].mean().item()])
        set_bars(self.gauges, self.gauge_labels, gauges)
        extra = f", T = {temperature:.2f}" if function == "cosine" else ""
        self.title.set_text(f"{function}{extra}, d_k = {d_k}: score std {s.std().item():.2f}")
        return {"scores": s, "histogram": fractions, "row": row, "gauges": gauges, **stats}


def score_explorer(n_queries: int = 16, n_keys: int = 32, hidden: int = 64, query: int = 0,
                   function: str = "dot", d_k: int = 64, temperature: float = 1.0,
                   seed: int = 0) -> Explorer:
    """A score-function picker, a d_k slider (1 to 1024) and a temperature slider (cosine)."""
    view = ScoreFunctionView(n_queries, n_keys, hidden, query, seed)
    style = {"description_width": "initial"}
    controls = {
        "function": widgets.Dropdown(options=list(scores.SCORE_FUNCTIONS), value=function,
                                     description="score"),
        "d_k": widgets.SelectionSlider(options=list(D_K_OPTIONS), value=d_k, description="d_k",
                                       continuous_update=True),
        "temperature": widgets.FloatLogSlider(value=temperature, base=10, min=-2, max=1,
                                              step=0.01, description="T (cosine only)",
                                              continuous_update=True, style=style),
    }
    return Explorer(view, controls)


class CosineTemperatureView(View):
    """Cosine scores divided by T for one query. Left: its weights over the key tokens.
    Right: the entropy of those weights against T, with the current T marked."""

    T_GRID = np.logspace(-2, 1, 121)

    def __init__(self, tokens: Sequence[str], q: torch.Tensor, k: torch.Tensor,
                 key_tokens: Sequence[str] | None = None, query: int = 0):
        self.tokens, self.key_tokens = list(tokens), list(key_tokens or tokens)
        self.cos = scores.cosine(q, k)  # T = 1; dividing by T is all the slider does
        n = len(self.key_tokens)
        self.defaults = {"query": query, "temperature": 1.0}
        self.fig = Figure(figsize=(9, 3.5), dpi=72, layout="constrained")
        ax_w, ax_e = self.fig.subplots(1, 2, width_ratios=[1.2, 1])
        self.bars = bar_weights(np.zeros(n), self.key_tokens, ax_w, color=BAR)
        ax_w.axhline(1 / n, color="#777777", linestyle="--", linewidth=1)
        ax_w.text(n - 0.5, 0.96, "dashed: uniform 1/N", ha="right", va="top", fontsize=8,
                  color="#555555")
        self.labels = [ax_w.text(i, 0, "", ha="center", va="bottom", fontsize=8) for i in range(n)]
        ax_e.set(xscale="log", xlim=(self.T_GRID[0], self.T_GRID[-1]),
                 ylim=(0, 1.08 * math.log(n)), xlabel="temperature T", ylabel="entropy (nats)",
                 title="entropy of the weights against T")
        ax_e.axhline(math.log(n), color="#777777", linestyle="--", linewidth=1)
        ax_e.text(self.T_GRID[0] * 1.2, math.log(n) * 1.01, "uniform: log N", va="bottom",
                  fontsize=8, color="#555555")
        (self.curve,) = ax_e.plot(self.T_GRID, np.zeros_like(self.T_GRID), color=BAR)
        (self.marker,) = ax_e.plot([1.0], [0.0], "o", color="#d62728", markersize=8)
        self.title = self.fig.suptitle(" ")
        self.dynamic = [*self.bars, *self.labels, self.curve, self.marker, self.title]

    def weights(self, query: int, temperature: float) -> torch.Tensor:
        """``softmax(cos(q_query, k_j) / T)`` over the keys ``j``."""
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        return softmax(self.cos[query] / temperature)

    def update(self, query: int, temperature: float) -> dict:
        w = self.weights(query, temperature)
        row = to_numpy(w)
        top = int(row.argmax())
        set_bars(self.bars, self.labels, row, highlight=top)
        grid = torch.as_tensor(self.T_GRID, dtype=self.cos.dtype)
        curve = softmax_stats(self.cos[query][None, :] / grid[:, None])["entropy"]
        entropy = softmax_stats(self.cos[query] / temperature)["entropy"]
        self.curve.set_ydata(to_numpy(curve))
        self.marker.set_data([temperature], [entropy.item()])
        self.title.set_text(f"cos(q, k) / T for query “{self.tokens[query]}”, T = {temperature:.2f}: "
                            f"max weight {row[top]:.2f} on “{self.key_tokens[top]}”, "
                            f"entropy {entropy.item():.2f} nats")
        return {"weights": w, "entropy": entropy, "curve": curve}


def cosine_temperature_explorer(tokens: Sequence[str], q: torch.Tensor, k: torch.Tensor,
                                key_tokens: Sequence[str] | None = None, query: int = 0,
                                temperature: float = 1.0) -> Explorer:
    """A query-token picker and a temperature slider (0.01 to 10, 10 log steps a decade)
    for cosine scores."""
    view = CosineTemperatureView(tokens, q, k, key_tokens, query)
    controls = {
        "query": token_dropdown(tokens, query),
        "temperature": log_steps_slider(temperature, 0.01, 10.0),  # drawn in advance
    }
    return Explorer(view, controls, prerender="temperature")
