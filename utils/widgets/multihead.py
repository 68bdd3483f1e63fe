"""Chapter 3's widgets: cut the same weights into H heads; all heads for one query."""

from __future__ import annotations

import math

import ipywidgets as widgets
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..attention import softmax
from ..examples.heads import PATTERNS, HeadsExample, pattern_scores
from ..multihead import split_heads
from ..plotting import BAR, HIGHLIGHT, bar_weights, show_heatmaps, to_numpy
from ._core import Explorer, View

__all__ = [
    "HeadCountView",
    "QueryHeadsView",
    "divisors",
    "head_count_explorer",
    "query_heads_explorer",
    "split_head_weights",
]

OUTLINE = "#d62728"
_SHORT = {"previous token": "previous", "same kind": "same kind", "start": "start"}


def divisors(n: int) -> list[int]:
    """The numbers of heads that can split a model dimension ``n``."""
    return [h for h in range(1, n + 1) if n % h == 0]


def split_head_weights(q: torch.Tensor, k: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Attention weights of each head: ``(Lq, D), (Lk, D) -> (H, Lq, Lk)``.

    Head h uses columns ``h·D/H:(h+1)·D/H`` of the projected queries and keys and
    is scaled by ``1/√(D/H)``.
    """
    qh, kh = split_heads(q, n_heads), split_heads(k, n_heads)  # (H, L, D/H)
    return softmax(qh @ kh.transpose(-2, -1) / math.sqrt(qh.shape[-1]))


def _summary(scores: torch.Tensor) -> str:
    return " · ".join(f"{_SHORT[p]} {s:.2f}" for p, s in zip(PATTERNS, scores.tolist(), strict=True))


class HeadCountView(View):
    """The same projections cut into H heads.

    Left: the chosen head's weights, with how much it follows each pattern. Right: the
    thumbnails of all H heads (up to 12), the chosen one framed.
    """

    MAX_HEADS = 12

    def __init__(self, example: HeadsExample, n_heads: int = 3, head: int = 0):
        self.example = example
        self.tokens = example.tokens
        x = example.x
        with torch.no_grad():
            self.q = x @ example.w_q + example.b_q
            self.k = x @ example.w_k
        self.options = divisors(example.d_model)
        if len(self.options) > self.MAX_HEADS:
            raise ValueError(f"d_model={example.d_model} has more than {self.MAX_HEADS} divisors")
        self.defaults = {"n_heads": n_heads, "head": head}
        n = len(self.tokens)
        self.fig = Figure(figsize=(10.5, 4.4), dpi=72, layout="constrained")
        left, right = self.fig.subfigures(1, 2, width_ratios=[1, 1.05])
        show_heatmaps(torch.zeros(n, n), self.tokens, self.tokens, vmax=1.0, fig=left,
                      colorbar=False)
        ax = left.axes[0]
        self.heat = ax.images[0]
        self.title = ax.set_title("head 00 of 12 (d_head = 12, Q/K columns 00–11)\n"
                                  "previous 0.00 · same kind 0.00 · start 0.00", fontsize=11)
        axes = right.subplots(3, 4)
        right.suptitle("all heads (rows: queries, columns: keys)", fontsize=11)
        self.thumbs, self.thumb_titles, self.frames = [], [], []
        for a in axes.flat:
            a.set_xticks([])
            a.set_yticks([])
            for spine in a.spines.values():
                spine.set_visible(False)
            self.thumbs.append(a.imshow(torch.zeros(n, n).numpy(), cmap="viridis", vmin=0.0,
                                        vmax=1.0, interpolation="nearest"))
            self.thumb_titles.append(a.set_title("head 00", fontsize=9))
            frame = Rectangle((-0.5, -0.5), n, n, fill=False, edgecolor=OUTLINE, linewidth=3)
            a.add_patch(frame)
            self.frames.append(frame)
        self.dynamic = [self.heat, self.title, *self.thumbs, *self.thumb_titles,
                        *self.frames]

    def update(self, n_heads: int, head: int) -> dict:
        if n_heads not in self.options:
            raise ValueError(f"n_heads must divide d_model={self.example.d_model}: one of "
                             f"{self.options}, got {n_heads}")
        head = min(max(int(head), 0), n_heads - 1)
        weights = split_head_weights(self.q, self.k, n_heads)
        scores = pattern_scores(weights, self.example)
        dh = self.example.d_model // n_heads
        self.heat.set_data(to_numpy(weights[head]))
        self.title.set_text(f"head {head} of {n_heads} (d_head = {dh}, "
                            f"Q/K columns {head * dh}–{(head + 1) * dh - 1})\n"
                            f"{_summary(scores[head])}")
        for s, (im, title, frame) in enumerate(zip(self.thumbs, self.thumb_titles, self.frames,
                                                   strict=True)):
            used = s < n_heads
            im.set_visible(used)
            frame.set_visible(s == head)
            title.set_text(f"head {s}" if used else "")
            if used:
                im.set_data(to_numpy(weights[s]))
        return {"weights": weights, "head_weights": weights[head], "scores": scores,
                "head": head}


def head_count_explorer(example: HeadsExample, n_heads: int = 3, head: int = 0) -> Explorer:
    """A number-of-heads picker (the divisors of d_model) and a head slider.

    The head slider is pre-rendered (every head of the current H drawn in advance: it
    answers in the browser); changing H puts a new head slider, at head 0, in its place (a
    slider whose options change keeps its old range for the End key in the browser) and
    redraws the frames."""
    view = HeadCountView(example, n_heads, head)
    count = widgets.Dropdown(options=view.options, value=n_heads, description="heads H")
    explorer: Explorer | None = None

    def head_slider(h: int, value: int = 0) -> widgets.SelectionSlider:
        return widgets.SelectionSlider(options=list(range(h)), value=value, description="head")

    def fit_slider(change):  # registered before the explorer's observer: runs first
        explorer.replace_control("head", head_slider(change["new"]), redraw=False)

    count.observe(fit_slider, names="value")
    explorer = Explorer(view, {"n_heads": count, "head": head_slider(n_heads, head)},
                        prerender="head")
    return explorer


class QueryHeadsView(View):
    """Every head at once for one query, and their average (torch's default weights).

    Top: the heads' weight matrices and their mean, the query's row outlined. Bottom:
    that row as bars. ``position_strength`` scales the position columns of the input
    (0 = the model cannot tell the order of the tokens).
    """

    def __init__(self, example: HeadsExample, query: int = 0, position_strength: float = 1.0):
        self.example = example
        self.tokens = example.tokens
        self.defaults = {"query": query, "position_strength": position_strength}
        h, n = example.n_heads, len(self.tokens)
        self.fig = Figure(figsize=(11, 6.2), dpi=72, layout="constrained")
        top, bottom = self.fig.subfigures(2, 1, height_ratios=[1.3, 1])
        titles = [f"head {i}: {name}" for i, name in enumerate(example.head_names)]
        titles.append("average of the heads")
        show_heatmaps(torch.zeros(1, h + 1, n, n), self.tokens, self.tokens, titles=titles,
                      vmax=1.0, fig=top, colorbar=False)
        self.heats = [a.images[0] for a in top.axes]
        self.outlines = []
        for a in top.axes:
            outline = Rectangle((-0.5, query - 0.5), n, 1, fill=False, edgecolor=OUTLINE,
                                linewidth=2.5)
            a.add_patch(outline)
            self.outlines.append(outline)
        self.bars, self.bar_titles = [], []
        for a in bottom.subplots(1, h + 1, sharey=True):
            self.bars.append(bar_weights(torch.zeros(n), self.tokens, a, color=BAR))
            self.bar_titles.append(a.set_title("“He” → “bought” 0.00", fontsize=10))
        self.dynamic = [*self.heats, *self.outlines, *(b for bars in self.bars for b in bars),
                        *self.bar_titles]

    def update(self, query: int, position_strength: float) -> dict:
        if not 0 <= query < len(self.tokens):
            raise ValueError(f"query must lie in 0..{len(self.tokens) - 1}, got {query}")
        ex = self.example
        x = ex.inputs(position_strength)
        weights = split_head_weights(x @ ex.w_q + ex.b_q, x @ ex.w_k, ex.n_heads)  # (H, N, N)
        panels = torch.cat([weights, weights.mean(0, keepdim=True)])  # (H + 1, N, N)
        rows = panels[:, query]
        for heat, outline, bars, title, panel, row in zip(
                self.heats, self.outlines, self.bars, self.bar_titles, panels, rows, strict=True):
            heat.set_data(to_numpy(panel))
            outline.set_y(query - 0.5)
            top = int(row.argmax())
            for i, (bar, value) in enumerate(zip(bars, row.tolist(), strict=True)):
                bar.set_height(value)
                bar.set_color(HIGHLIGHT if i == top else BAR)
            title.set_text(f"“{self.tokens[query]}” → “{self.tokens[top]}” {row[top].item():.2f}")
        return {"weights": weights, "average": panels[-1], "rows": rows,
                "scores": pattern_scores(weights, self.example)}


def query_heads_explorer(example: HeadsExample, query: int = 0,
                         position_strength: float = 1.0) -> Explorer:
    """A query-token picker and a position-strength slider (0 to 1)."""
    view = QueryHeadsView(example, query, position_strength)
    options = [(f"{i}: {t}", i) for i, t in enumerate(example.tokens)]
    controls = {
        "query": widgets.Dropdown(options=options, value=query, description="query"),
        "position_strength": widgets.FloatSlider(value=position_strength, min=0.0, max=1.0,
                                                 step=0.05, description="positions",
                                                 continuous_update=True),
    }
    return Explorer(view, controls)
