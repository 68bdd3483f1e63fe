"""Chapter 5 diagrams: masking is not sparsity, blockwise sliding-window attention, and the
receptive field of stacked local layers (with and without a global token)."""

from __future__ import annotations

from matplotlib.patches import Circle, Rectangle

from ..masks import sliding_window_mask
from . import figure
from ._draw import COLORS, arrow, canvas, title

USED = "#31688e"  # computed and used
WASTED = "#e8a87c"  # computed, then masked away
SKIPPED = "#f4f4f4"  # never computed
MASKED = "#d9d9d9"
GLOBAL = "#35b779"


def _cells(ax, x0: float, y0: float, colours, cell: float, edge: str = "white"):
    """A grid of coloured cells, ``colours[i][j]``, top-left corner at (x0, y0)."""
    for i, row in enumerate(colours):
        for j, colour in enumerate(row):
            ax.add_patch(Rectangle((x0 + j * cell, y0 - (i + 1) * cell), cell, cell,
                                   facecolor=colour, edgecolor=edge, linewidth=0.6))


def _legend(ax, x: float, y: float, items, size: float = 0.28, fontsize: float = 9.5):
    for k, (colour, text) in enumerate(items):
        ax.add_patch(Rectangle((x, y - k * 0.45), size, size, facecolor=colour,
                               edgecolor="#888888", linewidth=0.6))
        ax.text(x + size + 0.12, y - k * 0.45 + size / 2, text, va="center", fontsize=fontsize)


@figure("sparse-attention.svg")
def masking_is_not_sparsity():
    """Dense, dense with a band mask, and blockwise: which scores are computed and used."""
    n, w, b = 16, 2, 4
    band = sliding_window_mask(n, w)
    blocks = [[abs(i // b - j // b) <= 1 for j in range(n)] for i in range(n)]
    n_band = int(band.sum())
    n_blockwise = sum(map(sum, blocks))
    cell = 0.19
    fig, ax = canvas(11, 4.6, xlim=(0, 13.2), ylim=(-0.2, 5.4))
    title(ax, 6.6, 5.05, "Masking is not sparsity: what gets computed for a window of w = 2")
    panels = [
        ("dense attention", [[USED] * n for _ in range(n)],
         f"{n * n} scores computed,\n{n * n} used"),
        ("dense + band mask", [[USED if band[i, j] else WASTED for j in range(n)]
                               for i in range(n)],
         f"{n * n} scores computed,\n{n_band} used: the rest thrown away"),
        (f"blockwise (blocks of {b})", [[USED if band[i, j] else WASTED if blocks[i][j]
                                         else SKIPPED for j in range(n)] for i in range(n)],
         f"{n_blockwise} computed, {n_band} used;\ngrows as N·3b, not N²"),
    ]
    for k, (name, colours, caption) in enumerate(panels):
        x0 = 0.45 + k * 4.3
        ax.text(x0 + n * cell / 2, 4.45, name, ha="center", fontsize=11, weight="bold")
        _cells(ax, x0, 4.2, colours, cell)
        ax.text(x0 + n * cell / 2, 0.55, caption, ha="center", va="center", fontsize=9.5)
    items = [(USED, "computed and used"), (WASTED, "computed, then masked"),
             (SKIPPED, "never computed")]
    for k, (colour, text) in enumerate(items):
        x = 2.6 + k * 3.1
        ax.add_patch(Rectangle((x, -0.12), 0.25, 0.25, facecolor=colour, edgecolor="#888888",
                               linewidth=0.6))
        ax.text(x + 0.35, 0.0, text, va="center", fontsize=9.5)
    return fig


@figure("sparse-blockwise.svg")
def blockwise_sliding_window():
    """Query block i is scored against key blocks i-1, i, i+1 only, with a band mask inside."""
    n, w, b = 16, 3, 4
    qb = 1  # the query block shown
    band = sliding_window_mask(n, w)
    cell = 0.26
    fig, ax = canvas(11, 5.0, xlim=(0, 13.6), ylim=(-0.5, 5.9))
    title(ax, 6.8, 5.55, f"Blockwise sliding-window attention (N = {n}, blocks of b = {b}, "
                         f"w = {w} ≤ b)")
    x0, y0 = 0.9, 4.75
    colours = []
    for i in range(n):
        row = []
        for j in range(n):
            needed = i // b == qb and abs(j // b - qb) <= 1
            row.append(USED if needed and band[i, j] else MASKED if needed else
                       "#cfe0ef" if band[i, j] else SKIPPED)
        colours.append(row)
    _cells(ax, x0, y0, colours, cell)
    lo = max(qb - 1, 0) * b
    hi = min(qb + 2, n // b) * b
    ax.add_patch(Rectangle((x0 + lo * cell, y0 - (qb + 1) * b * cell), (hi - lo) * cell,
                           b * cell, fill=False, edgecolor=COLORS["accent"], linewidth=2.2))
    for k in range(n // b + 1):
        ax.plot([x0 + k * b * cell] * 2, [y0, y0 - n * cell], color="#666666", lw=0.8)
        ax.plot([x0, x0 + n * cell], [y0 - k * b * cell] * 2, color="#666666", lw=0.8)
    for k in range(n // b):
        ax.text(x0 + (k + 0.5) * b * cell, y0 + 0.12, f"keys block {k}", ha="center",
                va="bottom", fontsize=8.5)
        ax.text(x0 - 0.1, y0 - (k + 0.5) * b * cell, f"q{k}", ha="right", va="center",
                fontsize=9)
    ax.text(x0 + n * cell / 2, 0.3, "query block 1 needs key blocks 0, 1, 2 only",
            ha="center", fontsize=10, style="italic")
    # the tile
    tx, ty, tcell = 7.3, 4.2, 0.36
    tile = [[USED if band[qb * b + r, lo + c] else MASKED for c in range(hi - lo)]
            for r in range(b)]
    _cells(ax, tx, ty, tile, tcell)
    ax.add_patch(Rectangle((tx, ty - b * tcell), (hi - lo) * tcell, b * tcell, fill=False,
                           edgecolor=COLORS["accent"], linewidth=2.2))
    ax.text(tx + (hi - lo) * tcell / 2, ty + 0.15, f"one tile: b × 3b = {b} × {3 * b} scores",
            ha="center", va="bottom", fontsize=10)
    arrow(ax, (x0 + hi * cell + 0.1, y0 - 1.5 * b * cell), (tx - 0.15, ty - b * tcell / 2),
          color=COLORS["accent"])
    steps = ["1. gather key blocks i−1, i, i+1 (3b keys)",
             "2. scores = Q_i K_nbᵀ / √d_k  (b × 3b)",
             "3. band mask inside: −∞ where |i − j| > w",
             "4. softmax, then × V_nb  →  b outputs",
             "cost: N/b tiles × b·3b = 3bN scores, not N²"]
    for k, text in enumerate(steps):
        ax.text(tx - 0.1, 2.25 - k * 0.45, text, fontsize=10, va="center",
                weight="bold" if k == len(steps) - 1 else "normal")
    ax.add_patch(Rectangle((2.2, -0.4), 0.22, 0.22, facecolor=USED, edgecolor="#888888"))
    ax.text(2.5, -0.29, "in the window", va="center", fontsize=9)
    ax.add_patch(Rectangle((4.4, -0.4), 0.22, 0.22, facecolor=MASKED, edgecolor="#888888"))
    ax.text(4.7, -0.29, "in the tile, masked", va="center", fontsize=9)
    ax.add_patch(Rectangle((7.0, -0.4), 0.22, 0.22, facecolor="#cfe0ef", edgecolor="#888888"))
    ax.text(7.3, -0.29, "the window, in other tiles", va="center", fontsize=9)
    return fig


@figure("sparse-receptive-field.svg")
def receptive_field():
    """Stacked local layers widen the view by w per layer; a global token connects all in 2."""
    n, w, layers = 13, 1, 3
    fig, ax = canvas(11, 4.6, xlim=(0, 14.4), ylim=(-0.7, 5.4))
    title(ax, 7.2, 5.05, "Receptive field: local layers widen it by w per layer; a global "
                         "token connects everything in 2")
    dx, dy, r = 0.45, 1.2, 0.13
    top = n // 2

    def row(x0, layer, colour_of, label):
        y = 0.4 + layer * dy
        ax.text(x0 - 0.3, y, label, ha="right", va="center", fontsize=8.5)
        for t in range(n):
            ax.add_patch(Circle((x0 + t * dx, y), r, facecolor=colour_of(t),
                                edgecolor="#444444", linewidth=0.8))

    # left: a local window, three layers
    x0 = 1.3
    for layer in range(layers + 1):
        span = w * (layers - layer)
        row(x0, layer, lambda t, s=span: USED if abs(t - top) <= s else "white",
            f"layer {layer}" if layer else "input")
    for layer in range(layers, 0, -1):
        span = w * (layers - layer)
        for t in range(top - span, top + span + 1):
            for s in (t - w, t, t + w):
                ax.plot([x0 + t * dx, x0 + s * dx], [0.4 + layer * dy, 0.4 + (layer - 1) * dy],
                        color=USED, lw=0.7, alpha=0.6)
    ax.text(x0 + (n - 1) * dx / 2, -0.25, f"local window w = {w}: after L layers a token sees "
            f"2wL + 1 = {2 * w * layers + 1} inputs", ha="center", fontsize=9.5)
    # right: the same window plus one global token (position 0), two layers
    x0 = 8.4
    row(x0, 0, lambda t: GLOBAL if t == 0 else USED, "input")
    row(x0, 1, lambda t: GLOBAL if t == 0 else "white", "layer 1")
    row(x0, 2, lambda t: GLOBAL if t == 0 else USED if t == top else "white", "layer 2")
    for t in range(n):  # layer 1: the global token reads every input
        ax.plot([x0, x0 + t * dx], [0.4 + dy, 0.4], color=GLOBAL, lw=0.7, alpha=0.8)
    ax.plot([x0 + top * dx, x0], [0.4 + 2 * dy, 0.4 + dy], color=GLOBAL, lw=1.8)
    ax.text(x0 + top * dx + 0.3, 0.4 + 2 * dy + 0.3, "reads the global token", fontsize=9)
    ax.text(x0 + (n - 1) * dx / 2, -0.25, "a global token (green) reads every token and is "
            "read by all:\nafter 2 layers every token has seen every input", ha="center",
            va="center", fontsize=9.5)
    return fig
