"""Chapter 1's widget: pick a query token, slide the temperature, watch its weights."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..attention import softmax
from ..plotting import BAR, bar_weights, show_heatmaps, to_numpy
from ._core import Explorer, View, log_steps_slider, set_bars, token_dropdown

__all__ = ["AttentionView", "attention_explorer", "tempered_weights"]


def tempered_weights(q: torch.Tensor, k: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax(Q Kᵀ / (√d_k · T))``: ``(Lq, d), (Lk, d) -> (Lq, Lk)``. T = 1 is standard."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    return softmax(q @ k.transpose(-2, -1) / (math.sqrt(q.shape[-1]) * temperature))


class AttentionView(View):
    """Left: the full weight matrix with the chosen query's row outlined.
    Right: that row as bars, its largest weight highlighted."""

    def __init__(self, tokens: Sequence[str], q: torch.Tensor, k: torch.Tensor,
                 key_tokens: Sequence[str] | None = None, query: int = 0):
        self.tokens, self.key_tokens = list(tokens), list(key_tokens or tokens)
        self.q, self.k = q, k
        self.defaults = {"query": query, "temperature": 1.0}
        self.fig = Figure(figsize=(9, 3.6), dpi=72, layout="constrained")
        left, right = self.fig.subfigures(1, 2, width_ratios=[1, 1.15])
        w = tempered_weights(q, k, 1.0)
        show_heatmaps(w, self.key_tokens, self.tokens, vmax=1.0, fig=left, colorbar=False)
        self.heat = left.axes[0].images[0]
        self.outline = Rectangle((-0.5, query - 0.5), len(self.key_tokens), 1, fill=False,
                                 edgecolor="#d62728", linewidth=2.5)
        left.axes[0].add_patch(self.outline)
        self.ax = right.subplots()
        self.bars = bar_weights(w[query], self.key_tokens, self.ax, color=BAR)
        self.labels = [self.ax.text(i, 0, "", ha="center", va="bottom", fontsize=8)
                       for i in range(len(self.key_tokens))]
        self.title = self.ax.set_title(" ")
        self.dynamic = [self.heat, self.outline, *self.bars, *self.labels, self.title]

    def update(self, query: int, temperature: float) -> dict:
        w = tempered_weights(self.q, self.k, temperature)
        row = to_numpy(w[query])
        self.heat.set_data(to_numpy(w))
        self.outline.set_y(query - 0.5)
        set_bars(self.bars, self.labels, row, highlight=int(row.argmax()))
        self.title.set_text(f"query “{self.tokens[query]}”, T = {temperature:.2f}")
        return {"weights": w, "row": w[query]}


def attention_explorer(tokens: Sequence[str], q: torch.Tensor, k: torch.Tensor,
                       key_tokens: Sequence[str] | None = None, query: int = 0,
                       temperature: float = 1.0) -> Explorer:
    """A query-token picker and a temperature slider (0.05 to 20, 10 log steps a decade)."""
    view = AttentionView(tokens, q, k, key_tokens, query)
    controls = {
        "query": token_dropdown(tokens, query),
        # every temperature is drawn in advance: the slider answers in the browser
        "temperature": log_steps_slider(temperature, 0.05, 20.0),
    }
    return Explorer(view, controls, prerender="temperature")
