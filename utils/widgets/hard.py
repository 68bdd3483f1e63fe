"""Chapter 7's widgets: live hard attention, Gumbel-softmax temperature, top-k attention.

* :class:`HardAttentionView`: draw positions from α one at a time (or 100 at a time); the
  histogram of the draws converges to α, the drawn token lights up in the sentence, and the
  hard output v_i stands next to the soft output Σ α_i v_i.
* :class:`TemperatureView`: slide τ; the tempered soft weights softmax(s/τ), one
  Gumbel-softmax sample softmax((s + g)/τ) with its noise g held fixed (so you watch the
  *same* sample harden as τ falls), and a block of samples.
* :class:`TopKView`: slide k; the renormalised top-k weights, the context vector, and the
  gradient of a read-out of the context with respect to the scores.

The estimator explorer lives in :mod:`utils.widgets.hard_estimators`.
"""

from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.figure import Figure

from ..hard import gumbel_softmax, hard_attention, soft_attention, topk_attention
from ..plotting import BAR, HIGHLIGHT, show_heatmaps, to_numpy
from ._core import Explorer, View, log_slider, set_bars

__all__ = [
    "HardAttentionView",
    "TemperatureView",
    "TopKView",
    "hard_attention_explorer",
    "temperature_explorer",
    "topk_explorer",
]

SOFT = "#21918c"
ALPHA_MARK = "#d55e00"
DROPPED = "#d9d9d9"
BLOCK = 1000  # hard-attention draws are made in blocks, so the stream never depends on clicks


def _as_1d(name: str, x, n: int | None = None) -> torch.Tensor:
    x = torch.as_tensor(x, dtype=torch.float64)
    if x.dim() != 1 or (n is not None and x.shape[0] != n):
        want = f"({n},)" if n is not None else "1-D"
        raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")
    return x


def _fmt(x: torch.Tensor) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in x.tolist()) + "]"


def _labels(ax, n: int, fontsize: int = 8) -> list:
    return [ax.text(i, 0, "", ha="center", va="bottom", fontsize=fontsize) for i in range(n)]


# ----------------------------------------------------------------------------- hard attention


class HardAttentionView(View):
    """Top: the sentence, the drawn token lit up. Bottom left: frequencies of the draws so
    far against α (red ticks). Bottom right: the hard output v_i next to the soft output.

    Args:
        tokens: the whole sentence; ``candidates`` are the positions attention can pick.
        alpha: weights over the candidates ``(K,)`` (sum 1); values ``(K, d)``; features: d names.
    """

    def __init__(self, tokens: Sequence[str], candidates: Sequence[int], alpha, values,
                 features: Sequence[str], seed: int = 0):
        self.tokens, self.candidates = list(tokens), list(candidates)
        k = len(self.candidates)
        self.alpha = _as_1d("alpha", alpha, k)
        if not torch.allclose(self.alpha.sum(), torch.ones((), dtype=torch.float64)):
            raise ValueError(f"alpha must sum to 1, got {self.alpha.sum().item():.4f}")
        self.values = torch.as_tensor(values, dtype=torch.float64)
        if self.values.shape != (k, len(features)):
            raise ValueError(f"values must have shape (K, d) = ({k}, {len(features)}), "
                             f"got {tuple(self.values.shape)}")
        self.names = [self.tokens[i] for i in self.candidates]
        self.scores = self.alpha.log()
        self.soft, _ = soft_attention(self.scores, self.values)
        self.generator = torch.Generator().manual_seed(seed)
        self.pool = torch.empty(0, dtype=torch.long)
        self.n = 0
        self.defaults = {"n": 100}

        self.fig = Figure(figsize=(10, 5.0), dpi=72, layout="constrained")
        grid = self.fig.add_gridspec(2, 2, height_ratios=[0.55, 2.2], width_ratios=[1, 1.5])
        top = self.fig.add_subplot(grid[0, :])
        top.set_xlim(-0.5, len(self.tokens) - 0.5)
        top.set_ylim(-0.5, 0.8)
        top.axis("off")
        self.words = []
        for j, t in enumerate(self.tokens):
            cand = j in self.candidates
            word = top.text(j, 0.25, t, ha="center", va="center", fontsize=13,
                            color="black" if cand else "#9a9a9a",
                            bbox={"boxstyle": "round,pad=0.3", "facecolor": "white",
                                  "edgecolor": "#555555" if cand else "white"})
            self.words.append(word)
            if cand:
                a = self.alpha[self.candidates.index(j)].item()
                top.text(j, -0.35, f"α = {a:.2f}", ha="center", va="center", fontsize=9,
                         color=ALPHA_MARK)
        self.ax_hist = self.fig.add_subplot(grid[1, 0])
        self.bars = self.ax_hist.bar(range(k), np.zeros(k), color=BAR, label="frequency of draws")
        self.ax_hist.hlines(to_numpy(self.alpha), np.arange(k) - 0.4, np.arange(k) + 0.4,
                            colors=ALPHA_MARK, linewidth=3, label="α")
        self.ax_hist.set_xticks(range(k), self.names)
        self.ax_hist.set_ylim(0, 1.08)
        self.ax_hist.set_ylabel("fraction of draws")
        self.ax_hist.legend(loc="upper right", fontsize=8)
        self.hist_labels = _labels(self.ax_hist, k)
        self.hist_title = self.ax_hist.set_title(" ", fontsize=10)

        self.ax_out = self.fig.add_subplot(grid[1, 1])
        d = len(features)
        x = np.arange(d)
        self.ax_out.bar(x - 0.2, to_numpy(self.soft), width=0.4, color=SOFT,
                        label="soft: Σ α_i v_i")
        self.out_bars = self.ax_out.bar(x + 0.2, np.zeros(d), width=0.4, color=HIGHLIGHT,
                                        edgecolor="black", label="hard: v_i (the draw)")
        self.ax_out.set_xticks(range(d), list(features), rotation=30, ha="right")
        self.ax_out.set_ylim(min(0.0, float(self.values.min())) - 0.05,
                             max(1.0, float(self.values.max())) * 1.15)
        self.ax_out.legend(loc="upper right", fontsize=8)
        self.out_title = self.ax_out.set_title(" ", fontsize=10)
        self.dynamic = [*(self.words[j] for j in self.candidates), *self.bars, *self.hist_labels,
                        self.hist_title, *self.out_bars, self.out_title]

    def _ensure(self, n: int) -> None:
        """Grow the stream of draws (in fixed blocks) until it holds ``n`` draws."""
        while self.pool.numel() < n:
            scores = self.scores.expand(BLOCK, -1)
            _, index = hard_attention(scores, self.values, generator=self.generator)
            self.pool = torch.cat([self.pool, index])

    def add(self, n: int) -> None:
        """Draw ``n`` more positions (the next ``n`` of the stream)."""
        self.n += int(n)

    def reset(self) -> None:
        self.n = 0

    def snapshot(self) -> dict:
        return {"n": self.n}

    def update(self, n: int | None = None) -> dict:
        if n is not None:
            if int(n) < 0:
                raise ValueError(f"n must be >= 0, got {n}")
            self.n = int(n)
        self._ensure(self.n)
        draws = self.pool[: self.n]
        k = len(self.candidates)
        counts = torch.bincount(draws, minlength=k).double()
        freq = counts / max(self.n, 1)
        last = int(draws[-1]) if self.n else None
        hard = self.values[last] if last is not None else torch.zeros_like(self.soft)
        for i, (bar, label, f) in enumerate(zip(self.bars, self.hist_labels, freq.tolist(),
                                                strict=True)):
            bar.set_height(f)
            bar.set_color(HIGHLIGHT if i == last else BAR)
            bar.set_edgecolor("black" if i == last else BAR)
            label.set_y(f + 0.01)
            label.set_text(f"{f:.2f}" if self.n else "")
        for j, word in enumerate(self.words):
            picked = last is not None and j == self.candidates[last]
            word.get_bbox_patch().set_facecolor(HIGHLIGHT if picked else "white")
            word.set_fontweight("bold" if picked else "normal")
        for bar, h in zip(self.out_bars, hard.tolist(), strict=True):
            bar.set_height(h)
        gap = (freq - self.alpha).abs().max().item() if self.n else float("nan")
        self.hist_title.set_text(
            f"{self.n} draw{'s' if self.n != 1 else ''}: largest |frequency − α| = {gap:.3f}"
            if self.n else "no draws yet: click “sample”")
        self.out_title.set_text(f"hard output = v of “{self.names[last]}”" if self.n
                                else "hard output: nothing drawn yet")
        return {"n": self.n, "counts": counts, "frequencies": freq,
                "index": -1 if last is None else last, "hard_output": hard,
                "soft_output": self.soft}


def hard_attention_explorer(tokens: Sequence[str], candidates: Sequence[int], alpha, values,
                            features: Sequence[str], seed: int = 0) -> Explorer:
    """Buttons "sample", "sample 100" and "reset" drawing positions i ~ Categorical(α)."""
    view = HardAttentionView(tokens, candidates, alpha, values, features, seed)
    view.n = 0
    buttons = {"sample": lambda ex: ex.view.add(1), "sample 100": lambda ex: ex.view.add(100),
               "reset": lambda ex: ex.view.reset()}
    # the draws are a fixed stream, so the next "sample" is drawn before it is clicked
    return Explorer(view, {}, buttons, prefetch="sample")


# ----------------------------------------------------------------------------- temperature


class TemperatureView(View):
    """Left: tempered soft weights softmax(s/τ) (α as red ticks). Middle: one Gumbel-softmax
    sample, its noise fixed until resampled. Right: a block of ``n_rows`` samples."""

    def __init__(self, labels: Sequence[str], logits, seed: int = 0, n_rows: int = 20):
        self.labels = list(labels)
        k = len(self.labels)
        self.logits = _as_1d("logits", logits, k)
        self.seed, self.draw, self.n_rows = seed, 0, n_rows
        self.defaults = {"tau": 1.0}
        alpha = torch.softmax(self.logits, -1)
        self.fig = Figure(figsize=(10.5, 3.5), dpi=72, layout="constrained")
        left, right = self.fig.subfigures(1, 2, width_ratios=[2, 0.95])
        self.ax_soft, self.ax_one = left.subplots(1, 2)
        x = np.arange(k)
        self.soft_bars = self.ax_soft.bar(x, np.zeros(k), color=SOFT)
        self.one_bars = self.ax_one.bar(x, np.zeros(k), color=BAR)
        for ax in (self.ax_soft, self.ax_one):
            ax.hlines(to_numpy(alpha), x - 0.4, x + 0.4, colors=ALPHA_MARK, linewidth=2.5,
                      label="α (τ = 1, no noise)")
            ax.set_xticks(range(k), self.labels)
            ax.set_ylim(0, 1.1)
        self.ax_soft.legend(loc="upper right", fontsize=8)
        self.ax_soft.set_ylabel("weight")
        self.soft_title = self.ax_soft.set_title(" ", fontsize=10)
        self.one_title = self.ax_one.set_title(" ", fontsize=10)
        blank = torch.zeros(n_rows, k)
        show_heatmaps(blank, self.labels, [str(i + 1) for i in range(n_rows)], vmax=1.0,
                      fig=right, xlabel="tokens", ylabel="sample", colorbar=True,
                      cbar_label="sample weight y_i")
        ax_many = right.axes[0]
        self.heat = ax_many.images[0]
        ax_many.tick_params(axis="y", labelsize=7)
        ax_many.tick_params(axis="x", rotation=0)
        self.many_title = ax_many.set_title(" ", fontsize=10)
        self.dynamic = [*self.soft_bars, *self.one_bars, self.soft_title, self.one_title,
                        self.heat, self.many_title]

    def resample(self) -> None:
        """New Gumbel noise for the next update."""
        self.draw += 1

    def samples(self, tau: float) -> torch.Tensor:
        """``(n_rows, K)`` Gumbel-softmax samples at ``tau``; the noise depends only on the draw."""
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.draw)
        return gumbel_softmax(self.logits.expand(self.n_rows, -1), tau, generator=generator)

    def update(self, tau: float) -> dict:
        soft = torch.softmax(self.logits / tau, -1)
        samples = self.samples(tau)
        one = samples[0]
        top = int(one.argmax())
        for bars, w in ((self.soft_bars, soft), (self.one_bars, one)):
            for bar, h in zip(bars, w.tolist(), strict=True):
                bar.set_height(h)
        for i, bar in enumerate(self.one_bars):
            bar.set_color(HIGHLIGHT if i == top else BAR)
        self.heat.set_data(to_numpy(samples))
        self.soft_title.set_text(f"softmax(s / τ), τ = {tau:.2f}:\n{_fmt(soft)}")
        self.one_title.set_text(f"Gumbel-softmax sample (draw {self.draw + 1}):\n{_fmt(one)}")
        onehotness = samples.max(-1).values.median().item()
        self.many_title.set_text(f"{self.n_rows} samples: median max = {onehotness:.2f}")
        return {"tau": tau, "soft": soft, "sample": one, "samples": samples}


def temperature_explorer(labels: Sequence[str], logits, seed: int = 0, tau: float = 1.0) -> Explorer:
    """A temperature slider (0.1 to 5, log scale) and a "sample" button (new Gumbel noise)."""
    view = TemperatureView(labels, logits, seed)
    controls = {"tau": log_slider(tau, 0.1, 5.0, description="temperature τ")}
    return Explorer(view, controls, {"sample": lambda ex: ex.view.resample()})


# ----------------------------------------------------------------------------- top-k


class TopKView(View):
    """Left: top-k weights, renormalised (dropped positions grey). Middle: the context vector
    (soft attention's as red ticks). Right: ∂(u·c)/∂s, the gradient of a read-out u·c of the
    context with respect to the scores: zero for every dropped position."""

    def __init__(self, tokens: Sequence[str], scores, values, features: Sequence[str],
                 readout: int = 0):
        self.tokens, self.features = list(tokens), list(features)
        n, d = len(self.tokens), len(self.features)
        self.scores = _as_1d("scores", scores, n)
        self.values = torch.as_tensor(values, dtype=torch.float64)
        if self.values.shape != (n, d):
            raise ValueError(f"values must have shape ({n}, {d}), got {tuple(self.values.shape)}")
        self.readout = readout
        self.defaults = {"k": 3}
        soft, _ = soft_attention(self.scores, self.values)
        grads = [self.compute(k)[2] for k in range(1, n + 1)]
        glim = max(float(torch.stack(grads).abs().max()), 1e-3) * 1.15
        self.fig = Figure(figsize=(11, 3.6), dpi=72, layout="constrained")
        ax_w, ax_c, ax_g = self.fig.subplots(1, 3, width_ratios=[1.25, 1, 1.25])
        self.w_bars = ax_w.bar(range(n), np.zeros(n), color=BAR)
        ax_w.set_xticks(range(n), self.tokens, rotation=45, ha="right")
        ax_w.set_ylim(0, 1.1)
        ax_w.set_ylabel("weight")
        self.w_labels = _labels(ax_w, n, fontsize=7)
        self.w_title = ax_w.set_title(" ", fontsize=10)
        self.c_bars = ax_c.bar(range(d), np.zeros(d), color=HIGHLIGHT, edgecolor="black",
                               label="top-k context")
        ax_c.hlines(to_numpy(soft), np.arange(d) - 0.4, np.arange(d) + 0.4, colors=ALPHA_MARK,
                    linewidth=2.5, label="soft (k = N)")
        ax_c.set_xticks(range(d), self.features, rotation=45, ha="right")
        ax_c.set_ylim(min(0.0, float(self.values.min())) - 0.05,
                      max(1.0, float(self.values.max())) * 1.2)
        ax_c.legend(loc="upper right", fontsize=8)
        ax_c.set_title("context vector c", fontsize=10)
        self.g_bars = ax_g.bar(range(n), np.zeros(n), color=SOFT)
        ax_g.axhline(0, color="black", linewidth=0.8)
        ax_g.set_xticks(range(n), self.tokens, rotation=45, ha="right")
        ax_g.set_ylim(-glim, glim)
        self.g_title = ax_g.set_title(" ", fontsize=10)
        self.dynamic = [*self.w_bars, *self.w_labels, self.w_title, *self.c_bars, *self.g_bars,
                        self.g_title]

    def compute(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Weights ``(N,)``, context ``(d,)`` and ∂c[readout]/∂scores ``(N,)`` at ``k``."""
        scores = self.scores.clone().requires_grad_(True)
        context, weights = topk_attention(scores, self.values, k)
        (grad,) = torch.autograd.grad(context[self.readout], scores)
        return weights.detach(), context.detach(), grad

    def update(self, k: int) -> dict:
        weights, context, grad = self.compute(int(k))
        heights = weights.tolist()
        set_bars(self.w_bars, self.w_labels, heights, [f"{h:.2f}" if h > 0 else "" for h in heights])
        for bar, h in zip(self.w_bars, heights, strict=True):
            bar.set_color(BAR if h > 0 else DROPPED)
        for bar, h in zip(self.c_bars, context.tolist(), strict=True):
            bar.set_height(h)
        for bar, h in zip(self.g_bars, grad.tolist(), strict=True):
            bar.set_height(h)
        n = len(self.tokens)
        kind = "argmax hard attention" if k == 1 else "soft attention" if k == n else "renormalised"
        self.w_title.set_text(f"top-{k} weights ({kind})")
        self.g_title.set_text(f"∂c[{self.features[self.readout]}]/∂scores: "
                              f"{int((grad != 0).sum())} nonzero")
        return {"k": int(k), "weights": weights, "context": context, "grad": grad}


def topk_explorer(tokens: Sequence[str], scores, values, features: Sequence[str],
                  readout: int = 0, k: int = 3) -> Explorer:
    """A slider for k, from 1 (argmax hard attention) to N (soft attention)."""
    view = TopKView(tokens, scores, values, features, readout)
    controls = {"k": widgets.IntSlider(value=k, min=1, max=len(tokens), description="k",
                                       continuous_update=True)}
    return Explorer(view, controls)
