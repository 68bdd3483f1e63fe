"""Chapter 7 diagrams: soft vs hard attention on the running example ("He" → John)."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from ..examples import running_example
from . import figure
from ._draw import COLORS, arrow, box, canvas, title

#: the explainer's weights for "He": John 0.85, went 0.05, store 0.10
CANDIDATES = ("John", "went", "store")
ALPHA = (0.85, 0.05, 0.10)
SOFT = "#21918c"
BLOCKED = "#d55e00"
GOOD = "#1a7f37"


def _example():
    ex = running_example()
    values = ex.x[[ex.index(t) for t in CANDIDATES]]
    alpha = torch.tensor(ALPHA, dtype=values.dtype)
    return ex, values, alpha, alpha @ values


@figure("soft-vs-hard-attention.svg")
def soft_vs_hard_flow() -> Figure:
    """Soft: every value flows into a weighted sum. Hard: a sample lets exactly one through."""
    fig, ax = canvas(10, 4.4, xlim=(0, 12), ylim=(0, 5.2))
    title(ax, 3.0, 4.85, "Soft attention: blend every value")
    title(ax, 9.0, 4.85, "Hard attention: pick one value")
    ax.plot([6.0, 6.0], [0.3, 4.6], color="#bbbbbb", linewidth=1, linestyle=":")
    ys = (3.7, 2.6, 1.5)
    for x0, hard in ((0.0, False), (6.0, True)):
        for y, name, a in zip(ys, CANDIDATES, ALPHA, strict=True):
            box(ax, x0 + 1.0, y, f"v({name})", w=1.5, h=0.65, color="value", textcolor="white",
                fontsize=10)
            ax.text(x0 + 1.0, y - 0.5, f"α = {a:.2f}", ha="center", fontsize=8.5,
                    color=BLOCKED)
        if not hard:
            box(ax, x0 + 3.6, 2.6, "Σ α_i v_i", w=1.4, h=0.8, color="weights")
            for y, a in zip(ys, ALPHA, strict=True):
                arrow(ax, (x0 + 1.8, y), (x0 + 2.9, 2.6), lw=0.8 + 6 * a, color=SOFT)
            box(ax, x0 + 5.2, 2.6, "c\n(a blend)", w=1.2, h=0.9, color="output")
            arrow(ax, (x0 + 4.3, 2.6), (x0 + 4.6, 2.6))
            ax.text(x0 + 3.0, 0.45, "differentiable: ∂c/∂α_i = v_i", ha="center", fontsize=10,
                    color=GOOD)
        else:
            box(ax, x0 + 3.4, 2.6, "sample\ni ~ Cat(α)", w=1.5, h=0.9, color="weights")
            arrow(ax, (x0 + 1.8, ys[0]), (x0 + 2.65, 2.75), lw=2.5, color="#333333")
            for y in ys[1:]:
                arrow(ax, (x0 + 1.8, y), (x0 + 2.65, 2.55), lw=1.0, color="#bbbbbb",
                      style="-")
            box(ax, x0 + 5.2, 2.6, "c = v(John)\n(one value)", w=1.5, h=0.9, color="output")
            arrow(ax, (x0 + 4.15, 2.6), (x0 + 4.45, 2.6))
            ax.text(x0 + 3.0, 0.45, "not differentiable: the sample blocks ∂c/∂α", ha="center",
                    fontsize=10, color=BLOCKED)
    return fig


@figure("soft-vs-hard-overview.svg")
def soft_vs_hard_overview() -> Figure:
    """Side by side, on the running example: weights, output, and what the backward pass sees."""
    ex, values, alpha, soft = _example()
    hard = values[0]  # the draw "John" (the most likely one)
    fig = Figure(figsize=(11, 6.4))
    grid = fig.add_gridspec(3, 2, height_ratios=[1, 1.15, 0.85], hspace=0.75, wspace=0.18,
                            left=0.07, right=0.98, top=0.9, bottom=0.04)
    fig.text(0.29, 0.965, "Soft attention", ha="center", fontsize=15, weight="bold")
    fig.text(0.775, 0.965, "Hard attention", ha="center", fontsize=15, weight="bold")
    k = len(CANDIDATES)
    onehot = np.zeros(k)
    onehot[0] = 1.0
    for col, (w, label) in enumerate(((alpha.numpy(), "weights α (all positive, sum 1)"),
                                      (onehot, "one draw i ~ Categorical(α): a one-hot"))):
        ax = fig.add_subplot(grid[0, col])
        bars = ax.bar(range(k), w, color=COLORS["value"])
        bars[0].set_color(COLORS["weights"])
        bars[0].set_edgecolor("black")
        for i, h in enumerate(w):
            ax.text(i, h + 0.03, f"{h:.2f}", ha="center", fontsize=9)
        ax.set_xticks(range(k), CANDIDATES)
        ax.set_ylim(0, 1.2)
        ax.set_title(f"“He” attends: {label}", fontsize=11)
    feats = ex.features
    for col, (c, label) in enumerate(((soft.numpy(), "output c = Σ α_i v_i: a blend of features"),
                                      (hard.numpy(), "output c = v(John): John's features only"))):
        ax = fig.add_subplot(grid[1, col])
        ax.bar(range(len(feats)), c, color=SOFT if col == 0 else COLORS["weights"],
               edgecolor="black" if col else SOFT)
        ax.set_xticks(range(len(feats)), feats, rotation=30, ha="right", fontsize=9)
        ax.set_ylim(0, 1.2)
        ax.set_title(label, fontsize=11)
        for i, h in enumerate(c):
            if h > 0:
                ax.text(i, h + 0.03, f"{h:.2f}", ha="center", fontsize=8.5)
    for col in range(2):
        ax = fig.add_subplot(grid[2, col])
        ax.set_xlim(0, 10)
        ax.set_ylim(0, 2.2)
        ax.axis("off")
        ax.text(5, 2.05, "backward pass", ha="center", fontsize=11, style="italic")
        box(ax, 1.2, 1.2, "scores", w=1.6, h=0.6, fontsize=10)
        box(ax, 4.0, 1.2, "α" if col == 0 else "sample i", w=1.6, h=0.6, color="weights",
            fontsize=10)
        box(ax, 6.8, 1.2, "c", w=1.2, h=0.6, color="output", fontsize=10)
        box(ax, 9.0, 1.2, "loss", w=1.3, h=0.6, fontsize=10)
        arrow(ax, (8.3, 1.2), (7.45, 1.2), color=GOOD, lw=2)
        if col == 0:
            arrow(ax, (6.15, 1.2), (4.85, 1.2), color=GOOD, lw=2)
            arrow(ax, (3.15, 1.2), (2.05, 1.2), color=GOOD, lw=2)
            ax.text(5, 0.25, "gradients flow all the way back: ordinary backprop", ha="center",
                    fontsize=10, color=GOOD)
        else:
            arrow(ax, (6.15, 1.2), (4.85, 1.2), color=GOOD, lw=2)
            ax.text(2.6, 1.2, "✗", ha="center", va="center", fontsize=22, color=BLOCKED)
            ax.text(5, 0.1, "no gradient through the sample: train with REINFORCE,\n"
                    "Gumbel-softmax or straight-through instead", ha="center", fontsize=10,
                    color=BLOCKED)
    return fig
