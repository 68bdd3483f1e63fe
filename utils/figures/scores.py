"""Chapter 6 diagrams: where the score function sits, and the six score functions."""

from __future__ import annotations

from . import figure
from ._draw import COLORS, arrow, box, canvas, title

#: (name, formula in mathtext, parameters, origin)
FUNCTIONS = [
    ("dot", r"$q^\top k$", "no parameters", "Luong et al. 2015"),
    ("scaled dot", r"$q^\top k\,/\,\sqrt{d_k}$", "no parameters", "Vaswani et al. 2017"),
    ("general", r"$q^\top W k$", r"$W$: $d_q \times d_k$", "Luong et al. 2015"),
    ("additive", r"$v^\top \tanh(W_q q + W_k k)$", r"$W_q, W_k, v$", "Bahdanau et al. 2015"),
    ("concat", r"$v^\top \tanh(W [q; k])$", r"$W, v$", "Luong et al. 2015"),
    ("cosine", r"$\cos(q, k)\,/\,T$", r"temperature $T$", "e.g. Swin Transformer V2"),
]


@figure("score-functions.svg")
def score_pipeline():
    """q_i and k_j -> one score function (six to choose from) -> softmax over j -> weights."""
    fig, ax = canvas(10, 4.4, xlim=(0, 12), ylim=(0, 5.2))
    title(ax, 6, 4.85, "The score function: the one part of attention that changes")
    box(ax, 1.0, 3.3, r"query $q_i$", w=1.5, h=0.7, color="query")
    box(ax, 1.0, 1.7, r"key $k_j$", w=1.5, h=0.7, color="key")
    # the pluggable box with its six options
    box(ax, 4.6, 2.5, "", w=3.6, h=3.5, color="input")
    ax.text(4.6, 4.0, r"score$(q_i, k_j)$", ha="center", va="center", fontsize=12, weight="bold")
    for i, (name, formula, _params, _origin) in enumerate(FUNCTIONS):
        y = 3.45 - i * 0.5
        ax.text(3.0, y, name, ha="left", va="center", fontsize=9.5)
        ax.text(4.35, y, formula, ha="left", va="center", fontsize=9.5)
    arrow(ax, (1.75, 3.3), (2.8, 2.9))
    arrow(ax, (1.75, 1.7), (2.8, 2.1))
    box(ax, 8.1, 2.5, "softmax\nover keys j", w=1.7, h=0.9, color="op")
    arrow(ax, (6.4, 2.5), (7.25, 2.5), text="scores")
    box(ax, 10.5, 2.5, r"weights $\alpha_{ij}$" + "\n(row sums to 1)", w=2.0, h=0.9,
        color="weights")
    arrow(ax, (8.95, 2.5), (9.5, 2.5))
    ax.text(6.0, 0.25, "queries, keys, values, softmax and weighted sum stay the same; "
            "only the scoring changes", ha="center", fontsize=10, style="italic")
    return fig


def _panel(ax, x0: float, y0: float, name: str, formula: str, params: str, origin: str, draw):
    """One cell of the grid: a framed panel with a title, its graph and a caption."""
    box(ax, x0 + 2.0, y0 + 1.6, "", w=3.8, h=3.1, color="#fafafa")
    ax.text(x0 + 2.0, y0 + 2.85, name, ha="center", fontsize=12, weight="bold")
    ax.text(x0 + 2.0, y0 + 2.45, formula, ha="center", fontsize=10.5)
    draw(ax, x0, y0)
    ax.text(x0 + 2.0, y0 + 0.35, f"{params} · {origin}", ha="center", fontsize=8,
            color="#444444")


def _qk(ax, x0, y0, qy=1.75, ky=1.0):
    box(ax, x0 + 0.55, y0 + qy, "q", w=0.55, h=0.42, color="query", fontsize=10)
    box(ax, x0 + 0.55, y0 + ky, "k", w=0.55, h=0.42, color="key", fontsize=10)


def _dot(ax, x0, y0, scale=None):
    _qk(ax, x0, y0)
    box(ax, x0 + 1.9, y0 + 1.37, "·", w=0.55, h=0.5, fontsize=14)
    arrow(ax, (x0 + 0.85, y0 + 1.75), (x0 + 1.6, y0 + 1.45))
    arrow(ax, (x0 + 0.85, y0 + 1.0), (x0 + 1.6, y0 + 1.3))
    end = x0 + 2.2
    if scale:
        box(ax, x0 + 2.85, y0 + 1.37, scale, w=0.75, h=0.5, fontsize=10)
        arrow(ax, (end, y0 + 1.37), (x0 + 2.45, y0 + 1.37))
        end = x0 + 3.25
    arrow(ax, (end, y0 + 1.37), (end + 0.45, y0 + 1.37))


def _general(ax, x0, y0):
    _qk(ax, x0, y0)
    box(ax, x0 + 1.55, y0 + 1.75, "W", w=0.55, h=0.42, color=COLORS["weights"], fontsize=10)
    arrow(ax, (x0 + 0.85, y0 + 1.75), (x0 + 1.25, y0 + 1.75))
    box(ax, x0 + 2.45, y0 + 1.37, "·", w=0.55, h=0.5, fontsize=14)
    arrow(ax, (x0 + 1.85, y0 + 1.7), (x0 + 2.15, y0 + 1.5))
    arrow(ax, (x0 + 0.85, y0 + 1.0), (x0 + 2.15, y0 + 1.25))
    arrow(ax, (x0 + 2.75, y0 + 1.37), (x0 + 3.3, y0 + 1.37))


def _additive(ax, x0, y0, concat=False):
    _qk(ax, x0, y0)
    if concat:
        box(ax, x0 + 1.35, y0 + 1.37, "[q; k]", w=0.75, h=0.5, fontsize=9)
        arrow(ax, (x0 + 0.85, y0 + 1.75), (x0 + 1.05, y0 + 1.5))
        arrow(ax, (x0 + 0.85, y0 + 1.0), (x0 + 1.05, y0 + 1.25))
        box(ax, x0 + 2.1, y0 + 1.37, "W", w=0.45, h=0.42, color=COLORS["weights"], fontsize=10)
        arrow(ax, (x0 + 1.75, y0 + 1.37), (x0 + 1.87, y0 + 1.37))
        start = x0 + 2.33
    else:
        box(ax, x0 + 1.35, y0 + 1.75, r"$W_q$", w=0.6, h=0.42, color=COLORS["weights"], fontsize=9)
        box(ax, x0 + 1.35, y0 + 1.0, r"$W_k$", w=0.6, h=0.42, color=COLORS["weights"], fontsize=9)
        arrow(ax, (x0 + 0.85, y0 + 1.75), (x0 + 1.05, y0 + 1.75))
        arrow(ax, (x0 + 0.85, y0 + 1.0), (x0 + 1.05, y0 + 1.0))
        box(ax, x0 + 2.05, y0 + 1.37, "+", w=0.42, h=0.42, fontsize=12)
        arrow(ax, (x0 + 1.65, y0 + 1.7), (x0 + 1.84, y0 + 1.47))
        arrow(ax, (x0 + 1.65, y0 + 1.05), (x0 + 1.84, y0 + 1.27))
        start = x0 + 2.26
    box(ax, x0 + 2.75, y0 + 1.37, "tanh", w=0.6, h=0.42, fontsize=9)
    arrow(ax, (start, y0 + 1.37), (x0 + 2.45, y0 + 1.37))
    box(ax, x0 + 3.45, y0 + 1.37, "· v", w=0.5, h=0.42, color=COLORS["weights"], fontsize=9)
    arrow(ax, (x0 + 3.05, y0 + 1.37), (x0 + 3.2, y0 + 1.37))


def _cosine(ax, x0, y0):
    _qk(ax, x0, y0)
    box(ax, x0 + 1.45, y0 + 1.75, "q/|q|", w=0.75, h=0.42, fontsize=9)
    box(ax, x0 + 1.45, y0 + 1.0, "k/|k|", w=0.75, h=0.42, fontsize=9)
    arrow(ax, (x0 + 0.85, y0 + 1.75), (x0 + 1.07, y0 + 1.75))
    arrow(ax, (x0 + 0.85, y0 + 1.0), (x0 + 1.07, y0 + 1.0))
    box(ax, x0 + 2.3, y0 + 1.37, "·", w=0.5, h=0.5, fontsize=14)
    arrow(ax, (x0 + 1.83, y0 + 1.7), (x0 + 2.05, y0 + 1.5))
    arrow(ax, (x0 + 1.83, y0 + 1.05), (x0 + 2.05, y0 + 1.25))
    box(ax, x0 + 3.05, y0 + 1.37, "/ T", w=0.6, h=0.45, color=COLORS["weights"], fontsize=10)
    arrow(ax, (x0 + 2.55, y0 + 1.37), (x0 + 2.75, y0 + 1.37))


@figure("score-functions-zoo.svg")
def score_zoo():
    """The six score functions as small computation graphs (learned parameters in yellow)."""
    fig, ax = canvas(12, 7.6, xlim=(0, 12.6), ylim=(-0.35, 7.8))
    title(ax, 6.3, 7.45, "Six score functions: what each computes from a query q and a key k")
    drawers = [
        _dot,
        lambda a, x, y: _dot(a, x, y, scale=r"$/\sqrt{d_k}$"),
        _general,
        _additive,
        lambda a, x, y: _additive(a, x, y, concat=True),
        _cosine,
    ]
    for i, ((name, formula, params, origin), draw) in enumerate(zip(FUNCTIONS, drawers,
                                                                   strict=True)):
        x0, y0 = 0.2 + (i % 3) * 4.1, 3.7 - (i // 3) * 3.5
        _panel(ax, x0, y0, name, formula, params, origin, draw)
    ax.text(6.3, -0.15, "yellow boxes hold parameters (learned; T may also be fixed); every "
            "function returns one number per (query, key) pair", ha="center", fontsize=9.5, style="italic")
    return fig
