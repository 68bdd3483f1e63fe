"""Chapter 3 diagrams: the multi-head data flow, how heads are split, what heads read."""

from __future__ import annotations

import torch
from matplotlib.patches import FancyArrowPatch, Rectangle

from ..examples.heads import heads_example
from ..multihead import split_heads
from . import figure
from ._draw import COLORS, arrow, box, canvas, title

#: one fill per head (colour-blind-safe viridis samples)
HEAD_COLORS = ["#b5de2b", "#35b779", "#31688e"]
TOKEN_COLORS = ["#fde725", "#6ece58", "#9ecae1"]
#: line colours per head (Okabe-Ito: colour-blind safe, dark enough on white)
LINE_COLORS = ["#0072b2", "#009e73", "#d55e00"]


@figure("multi-head-attention.svg")
def multi_head_flow():
    """X -> Q, K, V -> split into H heads -> H attentions side by side -> merge -> W_o."""
    fig, ax = canvas(11, 4.4, xlim=(0, 13.2), ylim=(0, 5.3))
    title(ax, 6.6, 4.85, "Multi-head attention: H small attentions side by side, then one projection")
    box(ax, 0.95, 2.5, "X\n(B, N, D)", w=1.5, h=1.0, color="input")
    for y, name, color in ((3.6, "Q = X W_q", "query"), (2.5, "K = X W_k", "key"),
                           (1.4, "V = X W_v", "value")):
        box(ax, 3.05, y, f"{name}\n(B, N, D)", w=1.8, h=0.8, color=color, fontsize=10,
            textcolor="white" if color == "value" else "black")
        arrow(ax, (1.7, 2.5), (2.15, y))
        arrow(ax, (3.95, y), (4.6, 2.5))
    box(ax, 5.35, 2.5, "split heads\nview (B, N, H, D/H)\ntranspose →\n(B, H, N, D/H)", w=1.5,
        h=1.5, fontsize=9)
    for i, (y, label) in enumerate(zip((3.55, 2.75, 1.55), ("head 0: columns 0 … D/H−1",
                                                          "head 1: columns D/H … 2D/H−1",
                                                          "head H−1: the last D/H columns"),
                                       strict=True)):
        box(ax, 7.85, y, label, w=2.9, h=0.6, color=HEAD_COLORS[i], fontsize=9,
            textcolor="white" if i == 2 else "black")
        arrow(ax, (6.1, 2.5), (6.4, y))
        arrow(ax, (9.3, y), (9.7, 2.5))
    ax.text(7.85, 2.15, "⋮", ha="center", va="center", fontsize=14)
    ax.text(7.85, 0.95, "in every head: softmax(Q_h K_hᵀ / √(D/H)) V_h,\n"
            "all heads at once as a batch: weights (B, H, N, N)",
            ha="center", va="center", fontsize=9, style="italic")
    box(ax, 10.45, 2.5, "merge heads\ntranspose, reshape\n(B, N, D)", w=1.5, h=1.2, fontsize=9)
    box(ax, 12.3, 2.5, "output\n= merged · W_o\n(B, N, D)", w=1.5, h=1.2, color="output",
        fontsize=9)
    arrow(ax, (11.2, 2.5), (11.55, 2.5))
    ax.text(6.6, 0.45, "parameters: W_q, W_k, W_v, W_o are D × D whatever H is — "
            "4D² (+ 4D biases), the same as one big head", ha="center", fontsize=10,
            color=COLORS["accent"])
    return fig


def _layout_labels(n_tokens: int, d: int, n_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices of every cell after the right split and after a plain view."""
    idx = torch.arange(n_tokens * d, dtype=torch.float64).reshape(1, n_tokens, d)
    right = split_heads(idx, n_heads)[0]  # (H, N, D/H)
    wrong = idx.reshape(1, n_heads, n_tokens, d // n_heads)[0]  # view without transpose
    return right.long(), wrong.long()


def _grid(ax, x0: float, y0: float, cells: torch.Tensor, d: int, names: str, size: float = 0.5):
    """Draw a matrix of cell indices as labelled squares, coloured by token."""
    for r, row in enumerate(cells.tolist()):
        for c, flat in enumerate(row):
            tok, col = divmod(flat, d)
            box(ax, x0 + c * size, y0 - r * size, f"{names[tok]}{col}", w=size * 0.92,
                h=size * 0.92, color=TOKEN_COLORS[tok], fontsize=9)


@figure("split-heads.svg")
def split_heads_layout():
    """view + transpose gives each head whole tokens; a plain view mixes tokens."""
    n, d, h = 3, 6, 2
    dh = d // h
    names = "abc"
    right, wrong = _layout_labels(n, d, h)
    fig, ax = canvas(10, 5.2, xlim=(0, 12), ylim=(-0.3, 6.0))
    title(ax, 6, 5.65, "Splitting D = 6 features of N = 3 tokens (a, b, c) into H = 2 heads")
    ax.text(1.9, 4.85, "x: (N, D)\nrow = one token", ha="center", fontsize=10)
    flat = torch.arange(n * d).reshape(n, d)
    _grid(ax, 0.65, 3.9, flat, d, names)
    for k in range(h):  # the block of columns each head should own
        ax.add_patch(_frame(0.4 + k * dh * 0.5, 2.65, dh * 0.5, n * 0.5, HEAD_COLORS[k * 2]))
        ax.text(0.4 + (k + 0.5) * dh * 0.5, 2.35, f"head {k}'s columns", ha="center", fontsize=8)
    ax.text(8.1, 4.85, "✔ view (N, H, D/H), then transpose → (H, N, D/H)", ha="center",
            fontsize=10, color="#1a7f37")
    for k in range(h):
        ax.text(5.1 + k * 2.3, 4.4, f"head {k}", ha="center", fontsize=9)
        _grid(ax, 4.6 + k * 2.3, 3.9, right[k], d, names)
    ax.text(8.1, 2.25, "✘ view (H, N, D/H) directly: same shape, wrong rows", ha="center",
            fontsize=10, color=COLORS["accent"])
    for k in range(h):
        ax.text(5.1 + k * 2.3, 1.8, f"head {k}", ha="center", fontsize=9)
        _grid(ax, 4.6 + k * 2.3, 1.3, wrong[k], d, names)
    ax.text(11.0, 3.4, "each row is\none whole token's\nslice", ha="center", fontsize=9)
    ax.text(11.0, 0.8, "a “token” row is\nhalf of one token:\nheads mix tokens", ha="center",
            fontsize=9, color=COLORS["accent"])
    arrow(ax, (3.7, 3.4), (4.25, 3.4))
    arrow(ax, (3.7, 3.0), (4.25, 1.0), color=COLORS["accent"])
    return fig


def _frame(x, y, w, h, color):
    return Rectangle((x, y), w, h, fill=False, edgecolor=color, linewidth=2.5)


@figure("heads-patterns.svg")
def heads_patterns():
    """What the query “bought” reads in each of the three designed heads (computed)."""
    ex = heads_example()
    with torch.no_grad():
        weights = ex.module()(ex.x[None], ex.x[None], ex.x[None])[1][0]  # (H, N, N)
    query = ex.index("bought")
    n, gap = len(ex.tokens), 1.5
    fig, ax = canvas(10, 4.4, xlim=(-2.0, n - 0.4), ylim=(-0.75, (ex.n_heads - 1) * gap + 1.0))
    for h in range(ex.n_heads):
        y, color = (ex.n_heads - 1 - h) * gap, LINE_COLORS[h]
        ax.text(-1.95, y + 0.1, f"head {h}\n{ex.head_names[h]}", ha="left", va="center",
                fontsize=10, weight="bold", color=color)
        for j, tok in enumerate(ex.tokens):
            ax.text(j, y, tok, ha="center", va="center", fontsize=11,
                    weight="bold" if j == query else "normal",
                    bbox={"boxstyle": "round,pad=0.2", "edgecolor": "#999999",
                          "facecolor": COLORS["weights"] if j == query else "white"})
        for j in range(n):
            w = weights[h, query, j].item()
            if w < 0.1:
                continue
            if j == query:  # a small loop: the query reads itself
                start, end, rad, top = (j + 0.25, y + 0.22), (j - 0.25, y + 0.22), 1.6, 0.45
            else:
                dist = abs(query - j)
                rad = (0.9 if j < query else -0.9) / dist  # arcs of the same height
                start, end, top = (query, y + 0.22), (j, y + 0.22), 0.45
            ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12,
                                         linewidth=0.6 + 3 * w, color=color,
                                         connectionstyle=f"arc3,rad={rad}", shrinkA=4,
                                         shrinkB=4))
            ax.text((query + j) / 2, y + 0.22 + top, f"{w:.2f}", ha="center", va="bottom",
                    fontsize=9, color=color)
    ax.text((n - 2.4) / 2, -0.6, "arrows: where the query “bought” looks in each head "
            "(weights ≥ 0.10, computed from the chapter's example)", ha="center", fontsize=9,
            style="italic")
    return fig
