"""Chapter 1 diagrams."""

from __future__ import annotations

from . import figure
from ._draw import arrow, box, canvas, title


@figure("self-attention.svg")
def self_attention_flow():
    """X -> Q, K, V (three projections of the same input) -> softmax(QKᵀ/√d_k) V."""
    fig, ax = canvas(10, 4.2, xlim=(0, 12), ylim=(0, 5))
    title(ax, 6, 4.6, "Self-attention: Q, K and V all come from the same X")
    box(ax, 1.1, 2.5, "X\n(N × d_model)", w=1.8, h=1.0, color="input")
    for y, name, color in ((3.7, "Q = X W_q", "query"), (2.5, "K = X W_k", "key"),
                           (1.3, "V = X W_v", "value")):
        box(ax, 3.9, y, name, w=2.0, h=0.75, color=color,
            textcolor="white" if color == "value" else "black")
        arrow(ax, (2.0, 2.5), (2.9, y))
    box(ax, 6.6, 3.1, "scores\nQ Kᵀ / √d_k\n(N × N)", w=2.0, h=1.1)
    arrow(ax, (4.9, 3.7), (5.6, 3.3))
    arrow(ax, (4.9, 2.5), (5.6, 2.9))
    box(ax, 9.0, 3.1, "A = softmax\n(each row sums to 1)", w=2.2, h=1.0, color="weights")
    arrow(ax, (7.6, 3.1), (7.9, 3.1))
    box(ax, 9.0, 1.3, "output = A V\n(N × d_v)", w=2.2, h=0.9, color="output")
    arrow(ax, (9.0, 2.6), (9.0, 1.75))
    arrow(ax, (4.9, 1.3), (7.9, 1.3))
    ax.text(6.4, 0.55, "every token's output is a weighted average of every token's value",
            ha="center", fontsize=10, style="italic")
    return fig


@figure("self-attention-matrix.svg")
def self_attention_matrix():
    """N tokens attend to the same N tokens: an N × N weight matrix."""
    fig, ax = canvas(6, 4.4, xlim=(0, 8), ylim=(-0.6, 6))
    tokens = ["John", "went", "…", "He", "…"]
    for i, t in enumerate(tokens):
        ax.text(2.3 + i * 1.0, 5.2, t, ha="center", fontsize=10)
        ax.text(1.4, 4.4 - i * 0.9, t, ha="right", va="center", fontsize=10)
    for i in range(5):
        for j in range(5):
            strong = (i, j) == (3, 0)
            box(ax, 2.3 + j * 1.0, 4.4 - i * 0.9, "", w=0.9, h=0.8,
                color="weights" if strong else "input")
    ax.text(4.3, 5.75, "keys (the same tokens)", ha="center", fontsize=10)
    ax.text(0.25, 2.6, "queries", rotation=90, va="center", fontsize=10)
    ax.text(4.3, -0.2, "row “He”: most weight on “John”", ha="center", fontsize=10,
            style="italic")
    return fig
