"""Chapter 2's widgets: what a target token reads in the source, and key padding masks live.

* :func:`alignment_explorer`: pick a target (decoder) token and a temperature; the N × M
  weight matrix and an alignment drawing (source above, target below, one line per source
  token, as thick as its weight) update together.
* :func:`padding_explorer`: a batch of sources of different lengths, padded to one length M;
  toggle the key padding mask and watch the padded keys' weight go to exactly zero and the
  real tokens' weights renormalise back to those of the unpadded sentence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..attention import softmax
from ..masks import padding_mask
from ..plotting import BAR, HIGHLIGHT, show_heatmaps, to_numpy
from ._core import Explorer, View, log_steps_slider
from .self_attention import tempered_weights

__all__ = ["AlignmentView", "PaddingView", "alignment_explorer", "padded_weights",
           "padding_explorer"]

ACCENT = "#d55e00"
LINE = REAL = BAR
PADDED = "#e69f00"
PAD = "<pad>"


def _spread(n: int, width: float) -> np.ndarray:
    """``n`` positions spread evenly over ``[0, width]`` (the middle if n = 1)."""
    return np.linspace(0, width, n) if n > 1 else np.array([width / 2])


class AlignmentView(View):
    """Left: the N × M weights (target rows, source columns), the chosen target's row outlined.
    Right: the source above, the target below; a line from the chosen target token to every
    source token, as thick as its weight (the largest in orange). Thin grey lines: every
    target token's most-read source token, the alignment; crossing lines are reorderings."""

    def __init__(self, target_tokens: Sequence[str], source_tokens: Sequence[str],
                 q: torch.Tensor, k: torch.Tensor, target: int = 0):
        if q.dim() != 2 or k.dim() != 2:
            raise ValueError(f"q and k must be 2-D (N, d_k) and (M, d_k), got "
                             f"{tuple(q.shape)} and {tuple(k.shape)}")
        self.target_tokens, self.source_tokens = list(target_tokens), list(source_tokens)
        if len(self.target_tokens) != q.shape[0] or len(self.source_tokens) != k.shape[0]:
            raise ValueError(f"{len(self.target_tokens)} target and {len(self.source_tokens)} "
                             f"source tokens for q {tuple(q.shape)} and k {tuple(k.shape)}")
        self.q, self.k = q, k
        n, m = len(self.target_tokens), len(self.source_tokens)
        self.defaults = {"target": target, "temperature": 1.0}
        self.fig = Figure(figsize=(10, 4), dpi=72, layout="constrained")
        left, right = self.fig.subfigures(1, 2, width_ratios=[1, 1.3])
        w = tempered_weights(q, k, 1.0)
        show_heatmaps(w, self.source_tokens, self.target_tokens, vmax=1.0, fig=left,
                      colorbar=False, xlabel="source tokens (keys)",
                      ylabel="target tokens (queries)")
        self.heat = left.axes[0].images[0]
        self.outline = Rectangle((-0.5, target - 0.5), m, 1, fill=False, edgecolor="#d62728",
                                 linewidth=2.5)
        left.axes[0].add_patch(self.outline)

        ax = self.ax = right.subplots()
        width = max(n, m) - 1
        self.xs, self.xt = _spread(m, width), _spread(n, width)
        ax.set_xlim(-0.8, width + 0.8)
        ax.set_ylim(-0.42, 1.42)
        ax.axis("off")
        for x, tok in zip(self.xs, self.source_tokens, strict=True):
            ax.text(x, 1.1, tok, ha="center", va="bottom", fontsize=10)
        for x, tok in zip(self.xt, self.target_tokens, strict=True):
            ax.text(x, -0.1, tok, ha="center", va="top", fontsize=10)
        ax.text(-0.8, 1.36, "source", fontsize=9, style="italic", color="#555555")
        ax.text(-0.8, -0.4, "target", fontsize=9, style="italic", color="#555555")
        for i, j in enumerate(w.argmax(dim=-1).tolist()):  # the alignment (T-independent)
            ax.plot([self.xt[i], self.xs[j]], [0, 1], color="#bbbbbb", lw=1.2, zorder=1)
        self.lines = [ax.plot([0, 0], [0, 1], color=LINE, solid_capstyle="round", zorder=2)[0]
                      for _ in range(m)]
        self.values = [ax.text(x, 1.27, "", ha="center", va="bottom", fontsize=8)
                       for x in self.xs]
        self.marker = ax.text(0, -0.1, "", ha="center", va="top", fontsize=10, weight="bold",
                              bbox={"boxstyle": "round,pad=0.2", "facecolor": HIGHLIGHT,
                                    "edgecolor": "black"})
        self.title = ax.set_title(" ")
        self.dynamic = [self.heat, self.outline, *self.lines, *self.values, self.marker,
                        self.title]

    def update(self, target: int, temperature: float) -> dict:
        w = tempered_weights(self.q, self.k, temperature)
        row = to_numpy(w[target])
        top = int(row.argmax())
        self.heat.set_data(to_numpy(w))
        self.outline.set_y(target - 0.5)
        x0 = self.xt[target]
        for j, (line, text, h) in enumerate(zip(self.lines, self.values, row, strict=True)):
            line.set_data([x0, self.xs[j]], [0.0, 1.0])
            line.set_linewidth(0.5 + 11.0 * h)
            line.set_alpha(float(min(1.0, 0.15 + h)))
            line.set_color(ACCENT if j == top else LINE)
            text.set_text(f"{h:.2f}")
            text.set_weight("bold" if j == top else "normal")
        self.marker.set_position((x0, -0.1))
        self.marker.set_text(self.target_tokens[target])
        self.title.set_text(f"“{self.target_tokens[target]}” reads "
                            f"“{self.source_tokens[top]}” ({row[top]:.2f}), T = {temperature:.2f}")
        return {"weights": w, "row": w[target], "top": top}


def alignment_explorer(target_tokens: Sequence[str], source_tokens: Sequence[str],
                       q: torch.Tensor, k: torch.Tensor, target: int = 0,
                       temperature: float = 1.0) -> Explorer:
    """A target-token picker and a temperature slider (0.05 to 20, 10 log steps a decade)."""
    view = AlignmentView(target_tokens, source_tokens, q, k, target)
    options = [(f"{i}: {t}", i) for i, t in enumerate(target_tokens)]
    controls = {
        "target": widgets.Dropdown(options=options, value=target, description="target token",
                                   style={"description_width": "initial"}),
        "temperature": log_steps_slider(temperature, 0.05, 20.0),  # drawn in advance
    }
    return Explorer(view, controls, prerender="temperature")


def padded_weights(q: torch.Tensor, k: torch.Tensor, lengths: torch.Tensor,
                   masked: bool = True, temperature: float = 1.0) -> torch.Tensor:
    """``softmax(Q Kᵀ / (√d_k · T))`` for a padded batch: ``(B, N, d), (B, M, d) -> (B, N, M)``.

    With ``masked`` the key padding mask ``padding_mask(lengths, M)[:, None, :]`` is applied
    before the softmax (padded keys get exactly 0); without it padding is read like any token.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    mask = padding_mask(lengths, k.shape[-2])[:, None, :] if masked else None
    scores = q @ k.transpose(-2, -1) / (math.sqrt(q.shape[-1]) * temperature)
    return softmax(scores, mask=mask)


class PaddingView(View):
    """Top: one heatmap per sentence of the batch (its target rows × the padded source),
    masked keys grey. Bottom: the chosen target token's weights over the padded source
    (padding in orange); black outlines: the same sentence attended alone, without padding."""

    def __init__(self, target_tokens: Sequence[Sequence[str]],
                 source_tokens: Sequence[Sequence[str]], q: torch.Tensor, k: torch.Tensor,
                 query: tuple[int, int] = (0, 0), masked: bool = True,
                 temperature: float = 1.0):
        b, m = k.shape[0], k.shape[-2]
        if q.dim() != 3 or k.dim() != 3 or q.shape[0] != b:
            raise ValueError(f"q and k must be (B, N, d_k) and (B, M, d_k), got "
                             f"{tuple(q.shape)} and {tuple(k.shape)}")
        if len(target_tokens) != b or len(source_tokens) != b:
            raise ValueError(f"need {b} target and source token lists, got "
                             f"{len(target_tokens)} and {len(source_tokens)}")
        self.targets = [list(t) for t in target_tokens]
        self.sources = [list(s) + [PAD] * (m - len(s)) for s in source_tokens]
        self.lengths = torch.tensor([len(s) for s in source_tokens])
        self.q, self.k = q, k
        self.defaults = {"query": tuple(query), "masked": masked, "temperature": temperature}
        self.fig = Figure(figsize=(10, 6.6), dpi=72, layout="constrained")
        top, bottom = self.fig.subfigures(2, 1, height_ratios=[1.25, 1])
        panels = top.subfigures(1, b)
        panels = np.atleast_1d(panels)
        w = padded_weights(q, k, self.lengths, masked, temperature)
        self.heats, self.outlines = [], []
        for i, panel in enumerate(panels):
            n_i = len(self.targets[i])
            show_heatmaps(w[i, :n_i], self.sources[i], self.targets[i], vmax=1.0, fig=panel,
                          mask=self._key_mask(i, n_i, masked), colorbar=False,
                          titles=[f"sentence {i} (length {len(source_tokens[i])})"],
                          xlabel="padded source", ylabel="target" if i == 0 else "")
            ax = panel.axes[0]
            self.heats.append(ax.images[0])
            rect = Rectangle((-0.5, -0.5), m, 1, fill=False, edgecolor="#d62728", linewidth=2.5,
                             visible=False)
            ax.add_patch(rect)
            self.outlines.append(rect)
        self.ax = ax = bottom.subplots()
        self.sentence = query[0]
        ax.set_xticks(range(m), self.sources[self.sentence], rotation=45, ha="right")
        ax.set_xlim(-0.6, m - 0.4)
        ax.set_ylim(0, 1.12)
        ax.set_ylabel("weight")
        self.bars = ax.bar(range(m), np.zeros(m), color=REAL, width=0.7)
        self.ghosts = ax.bar(range(m), np.zeros(m), fill=False, edgecolor="black", width=0.82,
                             linewidth=1.5, linestyle="--", label="the sentence alone, no padding")
        ax.legend(loc="upper right", fontsize=9)
        self.labels = [ax.text(j, 0, "", ha="center", va="bottom", fontsize=8) for j in range(m)]
        self.title = ax.set_title(" ")
        self.dynamic = [*self.heats, *self.outlines, *self.bars, *self.ghosts, *self.labels,
                        self.title]

    def _key_mask(self, b: int, n: int, masked: bool) -> np.ndarray:
        """What the heatmap greys out: the padded keys when the mask is on."""
        real = np.arange(self.k.shape[-2]) < int(self.lengths[b])
        return np.broadcast_to(real if masked else np.ones_like(real), (n, real.size))

    def _alone(self, b: int, i: int, temperature: float) -> torch.Tensor:
        """Target token i of sentence b attending to its own source, unpadded: ``(M,)``."""
        n_src = int(self.lengths[b])
        w = tempered_weights(self.q[b, i : i + 1], self.k[b, :n_src], temperature)[0]
        return torch.cat([w, w.new_zeros(self.k.shape[-2] - n_src)])

    def update(self, query: tuple[int, int], masked: bool, temperature: float = 1.0) -> dict:
        b, i = query
        if b != self.sentence:  # new tick labels: redraw everything once
            self.sentence = b
            self.ax.set_xticks(range(len(self.sources[b])), self.sources[b], rotation=45,
                               ha="right")
            self.invalidate()
        w = padded_weights(self.q, self.k, self.lengths, masked, temperature)
        for s, (heat, rect) in enumerate(zip(self.heats, self.outlines, strict=True)):
            n_s = len(self.targets[s])
            keep = self._key_mask(s, n_s, masked)
            heat.set_data(np.ma.masked_array(to_numpy(w[s, :n_s]), mask=~keep))
            rect.set_visible(s == b)
            rect.set_y(i - 0.5 if s == b else -0.5)
        row, alone = w[b, i], self._alone(b, i, temperature)
        n_src = int(self.lengths[b])
        for j, (bar, ghost, label) in enumerate(zip(self.bars, self.ghosts, self.labels,
                                                    strict=True)):
            h = float(row[j])
            bar.set_height(h)
            bar.set_color(REAL if j < n_src else PADDED)
            ghost.set_height(float(alone[j]))
            label.set_y(max(h, float(alone[j])) + 0.01)
            label.set_text(f"{h:.2f}")
        pad = row[n_src:].sum()
        state = "key padding mask ON" if masked else "no mask"
        self.title.set_text(f"sentence {b}, “{self.targets[b][i]}”, T = {temperature:.2f} "
                            f"({state}): "
                            f"padding gets {pad.item():.3f}, max |w − alone| = "
                            f"{(row - alone).abs().max().item():.3f}")
        return {"weights": w, "row": row, "alone": alone, "pad_weight": pad}


def padding_explorer(target_tokens: Sequence[Sequence[str]],
                     source_tokens: Sequence[Sequence[str]], q: torch.Tensor, k: torch.Tensor,
                     query: tuple[int, int] = (0, 0), masked: bool = True,
                     temperature: float = 1.0) -> Explorer:
    """A (sentence, target token) picker, a key-padding-mask toggle and a temperature slider
    (0.05 to 20, log scale)."""
    view = PaddingView(target_tokens, source_tokens, q, k, query, masked, temperature)
    options = [(f"sentence {b}: {tok}", (b, i))
               for b, toks in enumerate(view.targets) for i, tok in enumerate(toks)]
    controls = {
        "query": widgets.Dropdown(options=options, value=tuple(query),
                                  description="target token",
                                  style={"description_width": "initial"}),
        "masked": widgets.Checkbox(value=masked, description="key padding mask",
                                   indent=False),
        "temperature": log_steps_slider(temperature, 0.05, 20.0),  # drawn in advance
    }
    return Explorer(view, controls, prerender="temperature")
