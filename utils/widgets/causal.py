"""Chapter 4's widgets: step through generation with a KV cache, and switch the causal
mask on and off while a future token changes (the leakage test, live)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..attention import softmax
from ..kv_cache import KVCache
from ..masks import causal_mask
from ..plotting import BAR, bar_weights, show_heatmaps, to_numpy
from ._core import Explorer, View, set_bars, token_dropdown

__all__ = [
    "MODES",
    "GenerationView",
    "LeakageView",
    "future_change",
    "generation_explorer",
    "leakage_explorer",
    "masked_weights",
]

LEAK = "#d55e00"
LATER = "#b0b0b0"
#: how the future is handled: mask the scores before the softmax, zero the weights
#: after it (wrong), or no mask at all
MODES = {"causal": "mask before softmax", "after": "zeroed after softmax", "none": "no mask"}


def masked_weights(q: torch.Tensor, k: torch.Tensor, mode: str = "causal") -> torch.Tensor:
    """Attention weights ``(..., N, N)`` of ``q, k (..., N, d)`` with the future handled by ``mode``.

    ``"causal"``: -inf before the softmax (correct); ``"after"``: the softmax's weights on
    the future set to 0 afterwards (rows then sum to less than 1); ``"none"``: no mask.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    n = q.shape[-2]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mode == "causal":
        return softmax(scores, mask=causal_mask(n))
    weights = softmax(scores)
    return weights * causal_mask(n) if mode == "after" else weights


def future_change(x: torch.Tensor, w_q: torch.Tensor, w_k: torch.Tensor, w_v: torch.Tensor,
                  position: int, replacement: torch.Tensor, mode: str = "causal") -> torch.Tensor:
    """How much each output moves when token ``position`` is replaced.

    Args:
        x: ``(N, d_model)`` embeddings; ``replacement``: ``(d_model,)``, the new token.
        mode: see :func:`masked_weights`.

    Returns:
        ``(N,)``: ``max_f |out'[i, f] - out[i, f]|`` for every position i. Causal attention
        gives exactly 0 for every ``i < position`` (the earlier tokens cannot see it).
    """
    if not 0 <= position < x.shape[-2]:
        raise ValueError(f"position must lie in 0..{x.shape[-2] - 1}, got {position}")
    changed = x.clone()
    changed[position] = replacement
    outs = [masked_weights(e @ w_q, e @ w_k, mode) @ (e @ w_v) for e in (x, changed)]
    return (outs[1] - outs[0]).abs().amax(dim=-1)


# --------------------------------------------------------------------------- generation


class GenerationView(View):
    """Left: the causal weight matrix of the rows generated so far (later rows not made yet).
    Right: the newest token's weights over the cache, computed with a :class:`KVCache`."""

    def __init__(self, tokens: Sequence[str], q: torch.Tensor, k: torch.Tensor,
                 v: torch.Tensor, step: int = 0):
        self.tokens = list(tokens)
        self.q, self.k, self.v = q, k, v
        n = len(self.tokens)
        self.defaults = {"step": step}
        self.full = masked_weights(q, k, "causal")
        self.fig = Figure(figsize=(9.5, 4.0), dpi=72, layout="constrained")
        left, right = self.fig.subfigures(1, 2, width_ratios=[1, 1.15])
        show_heatmaps(self.full, self.tokens, self.tokens, mask=causal_mask(n), vmax=1.0,
                      fig=left, colorbar=False)
        self.heat = left.axes[0].images[0]
        self.outline = Rectangle((-0.5, step - 0.5), n, 1, fill=False, edgecolor="#d62728",
                                 linewidth=2.5)
        left.axes[0].add_patch(self.outline)
        self.ax = right.subplots()
        self.bars = bar_weights(torch.zeros(n), self.tokens, self.ax, color=BAR)
        self.ax.set_ylim(0, 1.12)  # room for the value labels
        self.labels = [self.ax.text(i, 0, "", ha="center", va="bottom", fontsize=8)
                       for i in range(n)]
        self.title = self.ax.set_title(" ", fontsize=10)
        self.sentence = self.fig.suptitle(" ", fontsize=11)
        self.dynamic = [self.heat, self.outline, *self.bars, *self.labels, self.title,
                        self.sentence]

    def update(self, step: int) -> dict:
        n = len(self.tokens)
        if not 0 <= step < n:
            raise ValueError(f"step must lie in 0..{n - 1}, got {step}")
        cache = KVCache()
        for t in range(step + 1):  # one token at a time, as in generation
            cache.append(self.k[t:t + 1], self.v[t:t + 1])
        _, weights = cache.attend(self.q[step:step + 1])
        row = to_numpy(weights[0])
        made = np.arange(n)[:, None] <= step  # rows generated so far
        shown = np.ma.masked_array(to_numpy(self.full), mask=~(to_numpy(causal_mask(n)) & made))
        self.heat.set_data(shown)
        self.outline.set_y(step - 0.5)
        heights = [float(row[j]) if j <= step else 0.0 for j in range(len(self.bars))]
        texts = [f"{h:.2f}" if j <= step else "·" for j, h in enumerate(heights)]
        set_bars(self.bars, self.labels, heights, texts, highlight=int(row.argmax()))
        self.title.set_text(f"step {step + 1}: “{self.tokens[step]}” may see {step + 1} token(s) "
                            f"— cache holds {len(cache)} k, v")
        self.sentence.set_text("generated so far: " + " ".join(self.tokens[:step + 1]) + " ▌")
        return {"row": weights[0], "visible": step + 1, "cache_len": len(cache),
                "matrix_rows_shown": int(made.sum())}


class GenerationExplorer(Explorer):
    """An :class:`Explorer` with a Play button driving its step slider."""

    def __init__(self, view: View, controls: dict, play: widgets.Play):
        self.play = play
        super().__init__(view, controls)

    @property
    def widget(self) -> widgets.Widget:
        box = super().widget
        row = box.children[0]
        row.children = (self.play, *row.children)
        return box


def generation_explorer(tokens: Sequence[str], q: torch.Tensor, k: torch.Tensor,
                        v: torch.Tensor, step: int = 0, interval_ms: int = 900
                        ) -> GenerationExplorer:
    """A Play button and a step slider: generation one token at a time."""
    n = len(tokens)
    slider = widgets.IntSlider(value=step, min=0, max=n - 1, description="step",
                               continuous_update=True)
    play = widgets.Play(value=step, min=0, max=n - 1, interval=interval_ms, description="play")
    widgets.link((play, "value"), (slider, "value"))  # kernel side: works headless too
    return GenerationExplorer(GenerationView(tokens, q, k, v, step), {"step": slider}, play)


# --------------------------------------------------------------------------- leakage


class LeakageView(View):
    """Replace one token, see which outputs move. Left: the weights under ``mode``, the
    changed token's column outlined. Right: ``max |Δ output|`` for every position; a red bar
    before the changed position is a leak from the future."""

    def __init__(self, tokens: Sequence[str], x: torch.Tensor, w_q: torch.Tensor,
                 w_k: torch.Tensor, w_v: torch.Tensor, vocabulary: Mapping[str, torch.Tensor],
                 mode: str = "none", position: int = 0, replacement: str | None = None):
        self.tokens = list(tokens)
        self.x, self.w = x, (w_q, w_k, w_v)
        self.vocabulary = dict(vocabulary)
        n = len(self.tokens)
        replacement = replacement or next(iter(self.vocabulary))
        self.defaults = {"mode": mode, "position": position, "replacement": replacement}
        # a fixed y-range that no setting can exceed: an output is a weighted average of
        # value rows (weights >= 0 summing to at most 1), so each feature stays between
        # min(0, lowest value) and max(0, highest value) over every token that can appear
        values = torch.cat([x, torch.stack(list(self.vocabulary.values()))]) @ w_v
        top = float((values.amax(0).clamp_min(0) - values.amin(0).clamp_max(0)).max())
        self._original = {m: masked_weights(x @ w_q, x @ w_k, m) @ (x @ w_v) for m in MODES}
        self.fig = Figure(figsize=(9.5, 4.0), dpi=72, layout="constrained")
        left, right = self.fig.subfigures(1, 2, width_ratios=[1, 1.15])
        show_heatmaps(masked_weights(x @ w_q, x @ w_k, "none"), self.tokens, self.tokens,
                      mask=torch.ones(n, n, dtype=torch.bool), vmax=1.0, fig=left,
                      colorbar=False, xlabel="keys (original tokens)")
        self.heat = left.axes[0].images[0]
        self.column = Rectangle((position - 0.5, -0.5), 1, n, fill=False, edgecolor="#d62728",
                                linewidth=2.5)
        left.axes[0].add_patch(self.column)
        self.ax = right.subplots()
        self.bars = self.ax.bar(range(n), np.zeros(n), color=BAR)
        self.ax.set_xticks(range(n), self.tokens, rotation=45, ha="right")
        self.ax.set_ylim(0, 1.1 * top or 1.0)
        self.ax.set_ylabel("max |Δ output| of the token")
        self.boundary = self.ax.axvline(position - 0.5, color="#d62728", linestyle="--")
        self.labels = [self.ax.text(i, 0, "", ha="center", va="bottom", fontsize=8)
                       for i in range(n)]
        self.title = self.ax.set_title(" ", fontsize=10)
        self.sentence = self.fig.suptitle(" ", fontsize=11)
        self.dynamic = [self.heat, self.column, *self.bars, self.boundary, *self.labels,
                        self.title, self.sentence]

    def update(self, mode: str, position: int, replacement: str) -> dict:
        n = len(self.tokens)
        if not 0 <= position < n:
            raise ValueError(f"position must lie in 0..{n - 1}, got {position}")
        w_q, w_k, w_v = self.w
        changed = self.x.clone()
        changed[position] = self.vocabulary[replacement]
        weights = masked_weights(changed @ w_q, changed @ w_k, mode)
        # = future_change(...), reusing the original sentence's outputs and these weights
        change = (weights @ (changed @ w_v) - self._original[mode]).abs().amax(dim=-1)
        visible = to_numpy(causal_mask(n)) if mode == "causal" else np.ones((n, n), bool)
        self.heat.set_data(np.ma.masked_array(to_numpy(weights), mask=~visible))
        self.column.set_x(position - 0.5)
        self.boundary.set_xdata([position - 0.5, position - 0.5])
        c = to_numpy(change)
        for i, (bar, label) in enumerate(zip(self.bars, self.labels, strict=True)):
            bar.set_height(c[i])
            leak = i < position and c[i] > 1e-12
            bar.set_color(LEAK if leak else BAR if i < position else LATER)
            label.set_y(c[i])
            label.set_text(f"{c[i]:.2f}" if i < position else "")
        earlier = c[:position]
        leaked = int((earlier > 1e-12).sum())
        biggest = float(earlier.max()) if position else 0.0
        self.title.set_text(f"{MODES[mode]}: {leaked} of {position} earlier outputs changed "
                            f"(max {biggest:.3f})")
        words = [f"[{replacement}]" if i == position else t for i, t in enumerate(self.tokens)]
        self.sentence.set_text(f"“{self.tokens[position]}” → “{replacement}”:  " + " ".join(words))
        return {"change": change, "weights": weights, "leaked": leaked, "max_leak": biggest}


def leakage_explorer(tokens: Sequence[str], x: torch.Tensor, w_q: torch.Tensor,
                     w_k: torch.Tensor, w_v: torch.Tensor,
                     vocabulary: Mapping[str, torch.Tensor], mode: str = "none",
                     position: int = 0, replacement: str | None = None) -> Explorer:
    """Mask mode buttons, the position to change and its replacement token.

    The position is pre-rendered (every position drawn in advance: picking one answers in
    the browser); the mode and the replacement redraw those frames."""
    view = LeakageView(tokens, x, w_q, w_k, w_v, vocabulary, mode, position, replacement)
    controls = {
        "mode": widgets.ToggleButtons(options=[(label, m) for m, label in MODES.items()],
                                      value=mode, description="future"),
        "position": token_dropdown(tokens, position, description="change"),
        "replacement": widgets.Dropdown(options=list(view.vocabulary),
                                        value=view.defaults["replacement"], description="into"),
    }
    return Explorer(view, controls, prerender="position")
