"""One heatmap function for the whole course, plus small companions.

``show_heatmaps`` follows d2l's convention: a 4-D array ``(rows, cols, queries, keys)``
becomes a grid of heatmaps (e.g. layers × heads). Colour maps are colour-blind safe
(viridis by default, cividis as the alternative).
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

__all__ = ["PRESENTATION", "bar_weights", "learning_curves", "presentation", "show_heatmaps", "to_numpy"]

#: rcParams of the presentation style: large fonts, thick lines, for a projector.
PRESENTATION = {
    "font.size": 16,
    "axes.titlesize": 18,
    "axes.labelsize": 16,
    "xtick.labelsize": 14,
    "ytick.labelsize": 14,
    "legend.fontsize": 14,
    "lines.linewidth": 3.0,
    "axes.linewidth": 1.6,
    "figure.dpi": 110,
}
_saved: dict = {}
MASKED_COLOR = "#d9d9d9"
#: bar colours of the course (viridis ends: colour-blind safe): a bar, the highlighted bar
BAR = "#3b528b"
HIGHLIGHT = "#fde725"
#: line colours of the course (Okabe & Ito's colour-blind-safe palette)
LINES = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


def presentation(on: bool = True) -> None:
    """Switch the presentation style (large fonts, thick lines) on or off, for class."""
    if on:
        if not _saved:
            _saved.update({k: mpl.rcParams[k] for k in PRESENTATION})
        mpl.rcParams.update(PRESENTATION)
    elif _saved:
        mpl.rcParams.update(_saved)
        _saved.clear()


def to_numpy(x) -> np.ndarray:
    """A tensor or array-like as a float numpy array (detached, on the CPU)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return x.numpy() if x.dtype == torch.bool else x.double().numpy()
    return np.asarray(x)


def _as_4d(a: np.ndarray, name: str) -> np.ndarray:
    if a.ndim not in (2, 3, 4):
        raise ValueError(
            f"{name} must be 2-D (queries, keys), 3-D (cols, queries, keys) or 4-D "
            f"(rows, cols, queries, keys), got shape {a.shape}"
        )
    return a.reshape((1,) * (4 - a.ndim) + a.shape)


def show_heatmaps(
    matrices,
    xlabels: Sequence[str] | None = None,
    ylabels: Sequence[str] | None = None,
    titles: Sequence[str] | None = None,
    *,
    mask=None,
    annotate: bool = False,
    fmt: str = "{:.2f}",
    cmap: str = "viridis",
    vmin: float | None = 0.0,
    vmax: float | None = 1.0,
    xlabel: str = "keys",
    ylabel: str = "queries",
    colorbar: bool = True,
    cbar_label: str = "attention weight",
    figsize: tuple[float, float] | None = None,
    fig: Figure | None = None,
) -> Figure:
    """Draw a grid of attention heatmaps.

    Args:
        matrices: ``(rows, cols, Lq, Lk)`` (or 3-D ``(cols, Lq, Lk)``, or 2-D ``(Lq, Lk)``).
        xlabels, ylabels: token labels for the keys (columns) and queries (rows).
        titles: one title per panel, in row-major order.
        mask: bool, broadcastable to ``matrices``; False cells (cannot attend) are grey.
        annotate: write each value in its cell (for small matrices).
        colorbar, cbar_label: draw a shared colour bar, and its label.
        cmap: a colour-blind-safe map, ``"viridis"`` (default) or ``"cividis"``.
        vmin, vmax: the colour scale; the default 0..1 is the course's one scale for
            attention weights (the same weight has the same colour in every figure). For
            other matrices (features, projections, counts) pass ``vmax=None`` (the data's
            maximum) or explicit limits.
        fig: draw into this figure instead of a new one.

    Returns:
        The matplotlib ``Figure``: a new pyplot figure (end the cell with ``plt.show()``),
        or ``fig`` when given.
    """
    a = _as_4d(to_numpy(matrices), "matrices").astype(float)
    n_rows, n_cols, n_q, n_k = a.shape
    if mask is not None:
        m = np.broadcast_to(_as_4d(to_numpy(mask), "mask").astype(bool), a.shape)
        a = np.ma.masked_array(a, mask=~m)
    for name, labels, n in (("xlabels", xlabels, n_k), ("ylabels", ylabels, n_q)):
        if labels is not None and len(labels) != n:
            raise ValueError(f"{name} has {len(labels)} labels for {n} positions")
    if titles is not None and len(titles) != n_rows * n_cols:
        raise ValueError(f"titles has {len(titles)} entries for {n_rows * n_cols} panels")
    if fig is None:
        size = figsize or (min(2.2 + 2.6 * n_cols * max(n_k, 4) / 8, 16),
                           min(0.8 + 2.4 * n_rows * max(n_q, 4) / 8, 14))
        fig = plt.figure(figsize=size, layout="constrained")  # shown inline by Jupyter
    cm = mpl.colormaps[cmap].with_extremes(bad=MASKED_COLOR)
    hi = vmax if vmax is not None else float(np.nanmax(a)) if a.size else 1.0
    axes = fig.subplots(n_rows, n_cols, squeeze=False, sharex=True, sharey=True)
    for r in range(n_rows):
        for c in range(n_cols):
            ax = axes[r, c]
            im = ax.imshow(a[r, c], cmap=cm, vmin=vmin, vmax=hi, aspect="auto",
                           interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[r * n_cols + c])
            if xlabels is not None:
                ax.set_xticks(range(n_k), xlabels, rotation=90)
            if ylabels is not None:
                ax.set_yticks(range(n_q), ylabels)
            if r == n_rows - 1:
                ax.set_xlabel(xlabel)
            if c == 0:
                ax.set_ylabel(ylabel)
            if annotate:
                _annotate(ax, a[r, c], fmt, cm, vmin or 0.0, hi)
    if colorbar:
        fig.colorbar(im, ax=axes, shrink=0.8, label=cbar_label)
    return fig


def _annotate(ax, values, fmt: str, cmap, lo: float, hi: float) -> None:
    span = (hi - lo) or 1.0
    for (i, j), v in np.ndenumerate(np.ma.filled(values, np.nan)):
        if np.isnan(v):
            continue
        r, g, b, _ = cmap((v - lo) / span)
        light = 0.299 * r + 0.587 * g + 0.114 * b > 0.5  # perceived luminance
        ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize="x-small",
                color="black" if light else "white")


def bar_weights(weights, labels: Sequence[str], ax, *, highlight: int | None = None,
                color: str = BAR, title: str | None = None):
    """Attention weights of one query as bars over the key tokens; returns the bar container."""
    w = to_numpy(weights).astype(float)
    if w.ndim != 1 or len(w) != len(labels):
        raise ValueError(f"weights must be 1-D with one entry per label ({len(labels)}), "
                         f"got shape {w.shape}")
    bars = ax.bar(range(len(w)), w, color=color)
    if highlight is not None:
        bars[highlight].set_color(HIGHLIGHT)
        bars[highlight].set_edgecolor("black")
    ax.set_xticks(range(len(w)), labels, rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("weight")
    if title:
        ax.set_title(title)
    return bars


def learning_curves(runs: dict, *, metric: str = "loss", ax=None, logy: bool | None = None,
                    smooth: int = 1, title: str | None = None, ylabel: str | None = None):
    """Learning curves of several training set-ups, each over one or more seeds.

    Args:
        runs: ``{label: [history, ...]}`` (or one history, or :class:`utils.training.Run`
            objects): one line per label, the mean over its seeds, with a shaded band from
            the minimum to the maximum seed.
        metric: ``"loss"`` (per training step) or the name of a metric recorded by the
            run's ``eval_fn`` (at its ``eval_steps``).
        ax: draw into this axes (default: a new figure).
        logy: log-scaled y axis (default: True for ``"loss"``).
        smooth: running mean over this many steps (loss only), to read noisy curves.

    Returns:
        The axes. Colours are :data:`LINES` (colour-blind safe), in label order.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 3.6), layout="constrained")
    for i, (label, group) in enumerate(runs.items()):
        group = group if isinstance(group, list | tuple) else [group]
        histories = [getattr(h, "history", h) for h in group]
        if metric == "loss":
            ys = np.array([h.loss for h in histories], dtype=float)
            if smooth > 1:
                kernel = np.ones(smooth) / smooth
                ys = np.array([np.convolve(y, kernel, mode="valid") for y in ys])
            xs = np.arange(ys.shape[1]) + (smooth - 1)
        else:
            missing = [h.seed for h in histories if metric not in h.metrics]
            if missing:
                raise KeyError(f"metric {metric!r} not recorded for seeds {missing}")
            ys = np.array([h.metrics[metric] for h in histories], dtype=float)
            xs = np.asarray(histories[0].eval_steps)
        color = LINES[i % len(LINES)]
        ax.plot(xs, ys.mean(0), color=color,
                label=label if len(ys) == 1 else f"{label} ({len(ys)} seeds)")
        if len(ys) > 1:
            ax.fill_between(xs, ys.min(0), ys.max(0), color=color, alpha=0.2, linewidth=0)
    if logy if logy is not None else metric == "loss":
        ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel or metric)
    if title:
        ax.set_title(title)
    ax.legend()
    return ax
