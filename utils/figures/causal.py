"""Chapter 4 diagrams: the causal mask, its place before the softmax, the KV cache and
the alignment of the mask when there are fewer queries than keys."""

from __future__ import annotations

from matplotlib.patches import Rectangle

from ..examples.running import TOKENS
from ..masks import causal_mask
from . import figure
from ._draw import COLORS, arrow, box, canvas, title

MASKED = "#d9d9d9"
ALLOWED = "#35b779"
NEW = "#fde725"


def _grid(ax, x0: float, y0: float, mask, *, cell: float = 0.5, highlight_row: int | None = None,
          allowed: str = ALLOWED, text_masked: str | None = None, fontsize: float = 8):
    """Cells of a bool ``mask`` with the top-left corner at (x0, y0): allowed vs masked."""
    n_q, n_k = mask.shape
    for i in range(n_q):
        for j in range(n_k):
            ok = bool(mask[i, j])
            ax.add_patch(Rectangle((x0 + j * cell, y0 - (i + 1) * cell), cell, cell,
                                   facecolor=allowed if ok else MASKED,
                                   edgecolor="white", linewidth=1.0))
            if text_masked and not ok:
                ax.text(x0 + (j + 0.5) * cell, y0 - (i + 0.5) * cell, text_masked,
                        ha="center", va="center", fontsize=fontsize, color="#555555")
    if highlight_row is not None:
        ax.add_patch(Rectangle((x0, y0 - (highlight_row + 1) * cell), n_k * cell, cell,
                               fill=False, edgecolor=COLORS["accent"], linewidth=2.2))


@figure("causal-attention.svg")
def causal_attention_flow():
    """Scores, plus the mask M (0 / -inf) *before* the softmax, then the weighted sum."""
    fig, ax = canvas(10, 3.9, xlim=(0, 12.4), ylim=(0, 4.8))
    title(ax, 6.2, 4.45, "Causal attention: mask the scores before the softmax")
    box(ax, 1.3, 2.4, "scores\nQ Kᵀ / √d_k\n(N × N)", w=2.0, h=1.2)
    ax.text(2.75, 2.4, "+", ha="center", va="center", fontsize=22)
    n = 5
    _grid(ax, 3.3, 3.6, causal_mask(n), cell=0.48, text_masked="−∞", fontsize=8)
    ax.text(3.3 + n * 0.24, 0.95, "mask M: 0 where j ≤ i,\n−∞ above the diagonal",
            ha="center", va="center", fontsize=9)
    arrow(ax, (5.85, 2.4), (6.55, 2.4))
    box(ax, 7.6, 2.4, "softmax\n(each row)", w=1.8, h=0.9, color="weights")
    arrow(ax, (8.5, 2.4), (9.15, 2.4))
    box(ax, 10.7, 3.05, "A: lower-triangular,\nrows sum to 1", w=2.7, h=0.9, color="input")
    box(ax, 10.7, 1.55, "output = A V\n(N × d_v)", w=2.7, h=0.9, color="output")
    arrow(ax, (10.7, 2.6), (10.7, 2.0))
    ax.text(6.2, 0.3, "exp(−∞) = 0: a future key gets exactly zero weight, and the others "
            "still sum to 1", ha="center", fontsize=10, style="italic")
    return fig


@figure("causal-mask.svg")
def causal_mask_grid():
    """The running example's 10 × 10 causal mask: token i sees tokens 0..i."""
    n = len(TOKENS)
    cell = 0.5
    fig, ax = canvas(7.2, 6.4, xlim=(0.0, 9.0), ylim=(-0.9, 7.1))
    x0, y0 = 1.8, 5.6
    _grid(ax, x0, y0, causal_mask(n), cell=cell, highlight_row=TOKENS.index("He"))
    for i, tok in enumerate(TOKENS):
        ax.text(x0 - 0.1, y0 - (i + 0.5) * cell, tok, ha="right", va="center", fontsize=10)
        ax.text(x0 + (i + 0.5) * cell, y0 + 0.1, tok, ha="center", va="bottom", fontsize=10,
                rotation=90)
    ax.text(x0 + n * cell / 2, 6.85, "keys (tokens that can be read)", ha="center", fontsize=10)
    ax.text(0.45, y0 - n * cell / 2, "queries (the token being made)", rotation=90,
            ha="center", va="center", fontsize=10)
    ax.add_patch(Rectangle((7.15, 4.55), 0.35, 0.35, facecolor=ALLOWED, edgecolor="white"))
    ax.text(7.6, 4.72, "may attend\n(j ≤ i)", va="center", fontsize=9)
    ax.add_patch(Rectangle((7.15, 3.65), 0.35, 0.35, facecolor=MASKED, edgecolor="white"))
    ax.text(7.6, 3.82, "future:\nmasked (−∞)", va="center", fontsize=9)
    ax.text(x0 + n * cell / 2, -0.35, "row “He”: it may read “John … He”, nothing after it",
            ha="center", fontsize=10, style="italic")
    return fig


@figure("kv-cache.svg")
def kv_cache_step():
    """One generation step at position t (0-based): append k_t and v_t to the cache, so it
    holds the t + 1 keys and values of positions 0..t, and attend with q_t over all of them."""
    fig, ax = canvas(10, 4.6, xlim=(0, 12.4), ylim=(-0.2, 5.4))
    title(ax, 6.2, 5.05, "Generation with a KV cache: one new token per step")
    t = TOKENS.index("bought")
    box(ax, 1.0, 2.6, f"new token\n“{TOKENS[t]}”\nposition t = {t}", w=1.7, h=1.1, color="input")
    box(ax, 3.0, 2.6, "q_t", w=0.9, h=0.6, color="query")
    arrow(ax, (1.85, 2.6), (2.55, 2.6))
    arrow(ax, (1.85, 2.95), (3.95, 3.95), text="k_t")
    arrow(ax, (1.85, 2.25), (3.95, 1.25), text="v_t")
    cell = 0.62
    for label, y, color in (("K cache", 3.95, "key"), ("V cache", 1.25, "value")):
        ax.text(4.0 + (t + 1) * cell / 2, y + 0.55, f"{label}: positions 0..t ({t + 1} keys)"
                if color == "key" else f"{label}: positions 0..t ({t + 1} values)",
                ha="center", fontsize=10)
        for j in range(t + 1):
            fill = NEW if j == t else COLORS[color]
            ax.add_patch(Rectangle((4.0 + j * cell, y - 0.28), cell, 0.56, facecolor=fill,
                                   edgecolor="white", linewidth=1.2))
            dark = color == "value" and j != t
            ax.text(4.0 + (j + 0.5) * cell, y, TOKENS[j], ha="center", va="center",
                    fontsize=7, color="white" if dark else "black")
            if color == "value":
                ax.text(4.0 + (j + 0.5) * cell, y - 0.45, str(j), ha="center", va="center",
                        fontsize=8, color="#555555")
    box(ax, 6.2, 2.6, f"softmax(q_t Kᵀ/√d_k)\nover t + 1 = {t + 1} keys", w=2.6, h=0.8,
        color="weights")
    arrow(ax, (3.45, 2.6), (4.9, 2.6))
    arrow(ax, (6.2, 3.65), (6.2, 3.0))
    box(ax, 10.3, 2.6, "o_t = weights · V\n= row t of full\ncausal attention", w=2.9, h=1.2,
        color="output")
    arrow(ax, (7.5, 2.6), (8.85, 2.6))
    arrow(ax, (9.0, 1.25), (9.7, 1.95))
    ax.text(6.2, 0.1, "keys and values of earlier tokens never change: cache them, "
            "append one pair per step (yellow)", ha="center", fontsize=10, style="italic")
    return fig


@figure("causal-alignment.svg")
def causal_alignment():
    """n_q = 4 new queries over n_k = 10 keys: top-left (is_causal) vs bottom-right alignment."""
    n_q, n_k = 4, len(TOKENS)
    cell = 0.42
    fig, ax = canvas(10, 3.6, xlim=(0, 12.4), ylim=(-0.2, 4.3))
    queries = TOKENS[n_k - n_q:]
    top_left = causal_mask(n_k)[:n_q]  # tril of ones(n_q, n_k)
    for x0, mask, head, note in (
        (1.5, top_left, "top-left: torch SDPA is_causal=True",
         "“He” sees only “John”: wrong for new tokens"),
        (7.6, causal_mask(n_q, n_k), "bottom-right: causal_mask(4, 10)",
         "“He” sees John … He: what a KV cache needs"),
    ):
        ax.text(x0 + n_k * cell / 2, 3.95, head, ha="center", fontsize=11, weight="bold")
        _grid(ax, x0, 2.9, mask, cell=cell)
        for i, tok in enumerate(queries):
            ax.text(x0 - 0.08, 2.9 - (i + 0.5) * cell, tok, ha="right", va="center", fontsize=9)
        for j, tok in enumerate(TOKENS):
            ax.text(x0 + (j + 0.5) * cell, 2.98, tok, ha="center", va="bottom", fontsize=7,
                    rotation=90)
        ax.text(x0 + n_k * cell / 2, 0.75, note, ha="center", fontsize=9.5, style="italic")
    ax.text(6.2, 0.1, "4 new queries (the last 4 tokens) against 10 cached keys",
            ha="center", fontsize=10)
    return fig
