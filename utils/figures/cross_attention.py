"""Chapter 2 diagrams: the cross-attention data flow, N × N versus N × M, key padding masks."""

from __future__ import annotations

from . import figure
from ._draw import COLORS, arrow, box, canvas, title

SOURCE = ["the", "black", "cat", "sat"]
TARGET = ["le", "chat", "noir", "s'est", "assis"]
ALIGN = {0: 0, 1: 2, 2: 1, 3: 3, 4: 3}  # target -> source


@figure("cross-attention.svg")
def cross_attention_flow():
    """Encoder states -> K, V; decoder states -> Q; softmax(QKᵀ/√d_k) V, N × M weights."""
    fig, ax = canvas(10, 4.6, xlim=(0, 12), ylim=(0, 5.5))
    title(ax, 6, 5.1, "Cross-attention: Q from the decoder, K and V from the encoder")
    box(ax, 1.3, 1.9, "encoder states\nX_enc (M × d_enc)\n“the black cat sat”", w=2.3, h=1.1,
        color="input", fontsize=10)
    box(ax, 1.3, 4.0, "decoder states\nX_dec (N × d_dec)\n“le chat noir …”", w=2.3, h=1.1,
        color="#fbe3d6", fontsize=10)
    box(ax, 4.3, 4.0, "Q = X_dec W_q\n(N × d_k)", w=2.0, h=0.8, color="query")
    box(ax, 4.3, 2.5, "K = X_enc W_k\n(M × d_k)", w=2.0, h=0.8, color="key")
    box(ax, 4.3, 1.2, "V = X_enc W_v\n(M × d_v)", w=2.0, h=0.8, color="value", textcolor="white")
    arrow(ax, (2.45, 4.0), (3.3, 4.0))
    arrow(ax, (2.45, 2.0), (3.3, 2.5))
    arrow(ax, (2.45, 1.8), (3.3, 1.2))
    box(ax, 7.0, 3.3, "scores\nQ Kᵀ / √d_k\n(N × M)", w=2.0, h=1.1)
    arrow(ax, (5.3, 4.0), (6.0, 3.55))
    arrow(ax, (5.3, 2.5), (6.0, 3.05))
    box(ax, 9.6, 3.3, "A = softmax\nover the source\n(rows sum to 1)", w=2.3, h=1.1,
        color="weights")
    arrow(ax, (8.0, 3.3), (8.45, 3.3))
    box(ax, 9.6, 1.2, "output = A V\n(N × d_v)", w=2.3, h=0.9, color="output")
    arrow(ax, (9.6, 2.75), (9.6, 1.65))
    arrow(ax, (5.3, 1.2), (8.45, 1.2))
    ax.text(6.0, 0.3, "one output per target token: a weighted average of the source's values",
            ha="center", fontsize=10, style="italic")
    return fig


def _grid(ax, x0, y0, rows, cols, highlight, cell=0.62):
    """A labelled weight grid with its top-left cell at (x0, y0); returns its width/height."""
    for j, t in enumerate(cols):
        ax.text(x0 + (j + 0.5) * cell, y0 + 0.12, t, ha="left", va="bottom", fontsize=9,
                rotation=45)
    for i, t in enumerate(rows):
        ax.text(x0 - 0.1, y0 - (i + 0.5) * cell, t, ha="right", va="center", fontsize=9)
        for j in range(len(cols)):
            box(ax, x0 + (j + 0.5) * cell, y0 - (i + 0.5) * cell, "", w=cell * 0.9,
                h=cell * 0.88, color="weights" if highlight.get(i) == j else "input")
    return len(cols) * cell, len(rows) * cell


@figure("cross-attention-shapes.svg")
def cross_attention_shapes():
    """Self-attention's N × N matrix next to cross-attention's N × M matrix."""
    fig, ax = canvas(10, 4.4, xlim=(0, 12), ylim=(0.1, 5.4))
    self_tokens = ["John", "went", "…", "He", "…"]
    w, h = _grid(ax, 1.6, 4.0, self_tokens, self_tokens, {3: 0})
    ax.text(1.6 + w / 2, 5.05, "keys: the same tokens", ha="center", fontsize=9, style="italic")
    ax.text(0.3, 4.0 - h / 2, "queries", rotation=90, va="center", fontsize=9, style="italic")
    ax.text(1.6 + w / 2, 0.45, "self-attention (chapter 1)\nN × N: the sentence reads itself",
            ha="center", fontsize=10)
    w2, h2 = _grid(ax, 7.6, 4.0, TARGET, SOURCE, ALIGN)
    ax.text(7.6 + w2 / 2, 5.05, "keys: the source (English)", ha="center", fontsize=9,
            style="italic")
    ax.text(6.3, 4.0 - h2 / 2, "queries: the target (French)", rotation=90, va="center",
            ha="center", fontsize=9, style="italic")
    ax.text(7.6 + w2 / 2, 0.45, "cross-attention (this chapter)\n"
            "N × M: the target reads the source", ha="center", fontsize=10)
    return fig


@figure("key-padding-mask.svg")
def key_padding_mask():
    """Lengths -> a (B, M) mask -> (B, 1, M) -> broadcast over the N queries of each sentence.

    Drawn from chapter 2's batch (``translation_batch()``), so the numbers are the notebook's."""
    from ..examples.translation import translation_batch
    from ..masks import padding_mask

    batch = translation_batch()
    lengths = batch.source_lengths.tolist()
    n_rows, m = batch.x_enc.shape[:2]
    mask = padding_mask(batch.source_lengths, m)
    fig, ax = canvas(12.5, 3.9, xlim=(0, 15), ylim=(0.55, 5.3))
    title(ax, 7.5, 4.95, "A key padding mask: True = a real token, may be attended")
    step, cell = 0.68, 0.36
    for b in range(n_rows):
        y = 3.8 - b * 0.75
        ax.text(0.2, y, f"b={b}", ha="left", va="center", fontsize=9)
        for j, t in enumerate(batch.padded_source(b)):
            pad = not bool(mask[b, j])
            box(ax, 1.25 + j * step, y, t, w=0.64, h=0.6, fontsize=7,
                color="#eeeeee" if pad else "input", textcolor="#888888" if pad else "black")
            box(ax, 7.0 + j * cell, y, "F" if pad else "T", w=cell * 0.92, h=0.6, fontsize=8,
                color=COLORS["output"] if pad else COLORS["key"])
    ax.text(1.25 + (m - 1) * step / 2, 1.35, f"sources, lengths = {lengths}\npadded to M = {m}",
            ha="center", fontsize=9)
    ax.text(7.0 + (m - 1) * cell / 2, 1.35, "padding_mask(lengths, M)\n(B, M)", ha="center",
            fontsize=9)
    arrow(ax, (6.3, 3.05), (6.75, 3.05))
    arrow(ax, (9.85, 3.05), (10.75, 3.05), text="[:, None, :]")
    # sentence 1's (N, M) weights (three of its N rows): every query row shares the mask
    for i in range(3):
        for j in range(m):
            pad = not bool(mask[1, j])
            box(ax, 11.2 + j * cell, 3.8 - i * 0.55, "0" if pad else "", w=cell * 0.92, h=0.48,
                fontsize=8, color=COLORS["output"] if pad else "weights")
    ax.text(11.2 + (m - 1) * cell / 2, 1.35, "b=1: weights (N × M)\nmask (1, M) broadcasts\n"
            "over the N rows:\npadded keys get exactly 0", ha="center", fontsize=9)
    return fig
