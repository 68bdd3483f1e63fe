"""Chapter 5's widgets: pick a sparse pattern and watch its mask and its cost; stack local
layers and watch the receptive field grow (and global tokens collapse it to two hops)."""

from __future__ import annotations

from typing import ClassVar

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from .. import masks
from ..cost import flops, layers_to_reach_all, one_thread, score_bytes
from ..plotting import MASKED_COLOR, to_numpy
from ._core import Explorer, View

__all__ = [
    "PATTERN_NAMES",
    "PatternView",
    "ReceptiveFieldView",
    "pattern_explorer",
    "pattern_mask",
    "reach_by_layer",
    "receptive_field_explorer",
]

ALLOWED = "#31688e"
GLOBAL = "#35b779"
LOCAL = "#3b528b"
ACCENT = "#d55e00"
MASK_CMAP = ListedColormap([MASKED_COLOR, ALLOWED])
#: the patterns of the picker, with what the "window" slider means for each
PATTERN_NAMES = {
    "local": "local window |i−j| ≤ w",
    "global": "global tokens only",
    "local + global": "local window + global (Longformer)",
    "dilated": "dilated window (w steps of 2)",
    "strided": "strided, stride w (Sparse Transformer)",
    "fixed": "fixed, block w (Sparse Transformer)",
    "block": "block-diagonal, block w",
    "random": "random keys",
    "bigbird": "window + global + random (BigBird)",
    "dense": "dense (every pair)",
}
D_K = 64  # head size for the FLOP estimate


def pattern_mask(pattern: str, n: int, window: int, n_global: int, n_random: int,
                 seed: int = 0) -> torch.Tensor:
    """The ``(n, n)`` bool mask of ``pattern`` (one of :data:`PATTERN_NAMES`).

    ``window`` is the half-width of local windows, the stride of "strided" and the block
    size of "fixed" and "block" (at least 1 there); the global tokens are the first
    ``n_global`` positions; random keys are drawn with ``seed``. Out-of-range values are
    clipped to what ``n`` allows.
    """
    if pattern not in PATTERN_NAMES:
        raise ValueError(f"pattern must be one of {list(PATTERN_NAMES)}, got {pattern!r}")
    window = max(0, min(window, n - 1))
    size = max(window, 1)
    glob = range(max(0, min(n_global, n)))
    r = max(0, min(n_random, n))
    gen = torch.Generator().manual_seed(seed)
    if pattern == "local":
        return masks.sliding_window_mask(n, window)
    if pattern == "global":
        return masks.global_mask(n, glob)
    if pattern == "local + global":
        return masks.sliding_window_mask(n, window) | masks.global_mask(n, glob)
    if pattern == "dilated":
        return masks.dilated_mask(n, window, 2)
    if pattern == "strided":
        return masks.strided_mask(n, size)
    if pattern == "fixed":
        return masks.fixed_mask(n, size)
    if pattern == "block":
        return masks.block_mask(n, size)
    if pattern == "random":
        return masks.random_mask(n, r, generator=gen)
    if pattern == "bigbird":
        return masks.bigbird_mask(n, window, glob, r, generator=gen)
    return torch.ones(n, n, dtype=torch.bool)


def _si(x: float, unit: str = "") -> str:
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= scale:
            return f"{x / scale:.1f} {prefix}{unit}"
    return f"{x:.0f} {unit}".rstrip()


def _bytes(x: float) -> str:
    for scale, prefix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if x >= scale:
            return f"{x / scale:.1f} {prefix}"
    return f"{x:.0f} B"


class PatternView(View):
    """Left: the mask (blue = computed, grey = skipped). Right: its cost against dense
    attention as bars, and the numbers: density, keys per query, FLOPs, score memory."""

    defaults: ClassVar[dict] = {"pattern": "bigbird", "n": 128, "window": 4, "n_global": 2, "n_random": 3}

    def __init__(self):
        self.fig = Figure(figsize=(9.5, 4.2), dpi=72, layout="constrained")
        ax_mask, self.ax = self.fig.subplots(1, 2, width_ratios=[1, 1.2])
        self.image = ax_mask.imshow(np.zeros((2, 2)), cmap=MASK_CMAP, vmin=0, vmax=1,
                                    extent=(0, 1, 1, 0), interpolation="nearest", aspect="auto")
        ax_mask.set_xticks([0, 1], ["first", "last"])
        ax_mask.set_yticks([0, 1], ["first", "last"])
        ax_mask.set_xlabel("keys")
        ax_mask.set_ylabel("queries")
        self.mask_title = ax_mask.set_title(" ", fontsize=11)
        self.ax.set_xlim(0, 1.05)
        self.ax.set_ylim(-0.6, 3.2)
        self.ax.set_yticks([2.6, 1.9], ["dense N²", "this pattern"])
        self.ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0], ["0", "25%", "50%", "75%", "100%"])
        self.ax.set_xlabel("entries computed (share of N²)")
        self.ax.spines[["top", "right"]].set_visible(False)
        self.bar = self.ax.barh([2.6, 1.9], [1.0, 0.0], height=0.5,
                                color=["#b0b0b0", ALLOWED])[1]
        self.bar_label = self.ax.text(0.0, 1.9, "", va="center", ha="left", fontsize=10)
        self.ax.text(1.0, 2.6, "100% ", va="center", ha="right", fontsize=10)
        self.numbers = self.ax.text(0.02, 1.35, "", va="top", ha="left", fontsize=10.5,
                                    family="monospace")
        self.dynamic = [self.image, self.mask_title, self.bar, self.bar_label, self.numbers]

    def update(self, pattern: str, n: int, window: int, n_global: int, n_random: int) -> dict:
        mask = pattern_mask(pattern, n, window, n_global, n_random)
        n_entries = int(mask.sum())
        density = n_entries / (n * n)
        per_query = mask.sum(dim=-1)
        self.image.set_data(to_numpy(mask).astype(float))
        self.mask_title.set_text(f"{PATTERN_NAMES[pattern]}")
        self.bar.set_width(density)
        inside = density > 0.8  # write the share inside a long bar, in white
        self.bar_label.set_x(density - 0.02 if inside else density + 0.02)
        self.bar_label.set_horizontalalignment("right" if inside else "left")
        self.bar_label.set_color("white" if inside else "black")
        self.bar_label.set_text(f"{density:.1%}")
        f, f_dense = flops(n_entries, D_K), flops(n * n, D_K)
        m, m_dense = score_bytes(n_entries), score_bytes(n * n)
        self.numbers.set_text(
            f"N = {n}\n"
            f"entries   {n_entries:,} of {n * n:,}\n"
            f"density   {density:.2%}\n"
            f"keys/query min {int(per_query.min())}, mean {per_query.float().mean():.1f}, "
            f"max {int(per_query.max())}\n"
            f"FLOPs (d={D_K})  {_si(f)} vs {_si(f_dense)} dense\n"
            f"scores (fp32)  {_bytes(m)} vs {_bytes(m_dense)} dense")
        return {"mask": mask, "density": torch.tensor(density),
                "entries": torch.tensor(n_entries), "flops": torch.tensor(f),
                "bytes": torch.tensor(m)}


def pattern_explorer(pattern: str = "bigbird", n: int = 128, window: int = 4, n_global: int = 2,
                     n_random: int = 3) -> Explorer:
    """A pattern picker with sliders for N, the window, the global tokens and the random keys."""
    style = {"description_width": "initial"}
    controls = {
        "pattern": widgets.Dropdown(options=list(PATTERN_NAMES), value=pattern,
                                    description="pattern"),
        "n": widgets.IntSlider(value=n, min=16, max=256, step=16, description="N",
                               continuous_update=True),
        "window": widgets.IntSlider(value=window, min=0, max=32, description="window / stride w",
                                    style=style, continuous_update=True),
        "n_global": widgets.IntSlider(value=n_global, min=0, max=16, description="global tokens",
                                      style=style, continuous_update=True),
        "n_random": widgets.IntSlider(value=n_random, min=0, max=16, description="random keys",
                                      style=style, continuous_update=True),
    }
    return Explorer(PatternView(), controls)


# --------------------------------------------------------------------------- receptive field


def reach_by_layer(mask: torch.Tensor, layers: int) -> torch.Tensor:
    """``(layers + 1, N, N)`` bool: entry ``[L, i, j]`` is True when token j's input reaches
    token i's output through L stacked layers sharing ``mask`` (a token keeps its own
    information, so reach only grows). One boolean product per layer: R_L = R_(L-1) · M."""
    n = mask.shape[-1]
    m = (mask | torch.eye(n, dtype=torch.bool)).float()
    out = [torch.eye(n, dtype=torch.bool)]
    with one_thread():  # small products: no thread pool to wake
        for _ in range(layers):
            out.append((out[-1].float() @ m) > 0)
    return torch.stack(out)


class ReceptiveFieldView(View):
    """Left: which inputs reach which outputs after L stacked layers, with a local window
    alone and with global tokens added. Right: the share of connected pairs against depth
    for both, the current depth marked."""

    N = 64
    MAX_LAYERS = 32
    defaults: ClassVar[dict] = {"layers": 4, "window": 2, "n_global": 1}

    def __init__(self):
        self.fig = Figure(figsize=(11, 3.9), dpi=72, layout="constrained")
        ax_local, ax_global, self.ax = self.fig.subplots(1, 3, width_ratios=[1, 1, 1.35])
        n = self.N
        self.images = []
        for ax, label in ((ax_local, "local window only"), (ax_global, "local + global")):
            self.images.append(ax.imshow(np.zeros((n, n)), cmap=MASK_CMAP, vmin=0, vmax=1,
                                         interpolation="nearest"))
            ax.set_xlabel("input token j")
            ax.set_title(label, fontsize=11)
        ax_local.set_ylabel("output token i")
        depth = np.arange(0, self.MAX_LAYERS + 1)
        zeros = np.zeros(len(depth))
        (self.local_line,) = self.ax.plot(depth, zeros, "-", color=LOCAL,
                                          label="local window only")
        (self.global_line,) = self.ax.plot(depth, zeros, "--", color=GLOBAL,
                                           label="local + global")
        (self.marker,) = self.ax.plot([0, 0], [0, 0], "o", color=ACCENT, markersize=8,
                                      label="depth L")
        self.ax.set_xlim(0, self.MAX_LAYERS)
        self.ax.set_ylim(0, 1.05)
        self.ax.set_xlabel("stacked layers L")
        self.ax.set_ylabel("share of (i, j) pairs connected")
        self.ax.legend(loc="lower right", fontsize=9)
        self.summary = self.ax.set_title(" \n ", fontsize=10)
        self.dynamic = [*self.images, self.local_line, self.global_line, self.marker,
                        self.summary]

    _reach: tuple | None = None  # ((window, n_global), reach and share by layer) last computed

    def _reach_by_layer(self, window: int, n_global: int) -> tuple:
        """Reach and share of connected pairs for every depth (the same for every L: the
        pre-rendered layer slider draws 33 frames from one computation)."""
        if self._reach is None or self._reach[0] != (window, n_global):
            n = self.N
            local = masks.sliding_window_mask(n, window)
            combined = local | masks.global_mask(n, range(n_global))
            by_layer = [reach_by_layer(m, self.MAX_LAYERS) for m in (local, combined)]
            shares = [r.float().mean(dim=(-2, -1)) for r in by_layer]
            hops = [layers_to_reach_all(m) for m in (local, combined)]
            self._reach = ((window, n_global), (*by_layer, *shares, *hops))
        return self._reach[1]

    def update(self, layers: int, window: int, n_global: int) -> dict:
        n = self.N
        (by_layer_local, by_layer_global, share_local, share_global, hops_local,
         hops_global) = self._reach_by_layer(window, n_global)
        self.images[0].set_data(to_numpy(by_layer_local[layers]).astype(float))
        self.images[1].set_data(to_numpy(by_layer_global[layers]).astype(float))
        self.local_line.set_ydata(to_numpy(share_local))
        self.global_line.set_ydata(to_numpy(share_global))
        self.marker.set_data([layers, layers],
                             [share_local[layers].item(), share_global[layers].item()])
        fmt = lambda h: "never" if h is None else f"{h}"  # noqa: E731
        self.summary.set_text(f"N = {n}, w = {window}, {n_global} global: every pair connected "
                              f"after\n{fmt(hops_local)} layers (local) · "
                              f"{fmt(hops_global)} (with global)")
        return {"reach_local": by_layer_local[layers], "reach_global": by_layer_global[layers],
                "share_local": share_local, "share_global": share_global,
                "hops_local": torch.tensor(-1 if hops_local is None else hops_local),
                "hops_global": torch.tensor(-1 if hops_global is None else hops_global)}


def receptive_field_explorer(layers: int = 4, window: int = 2, n_global: int = 1) -> Explorer:
    """Sliders for the depth L, the window w and the number of global tokens (N = 64).

    The depth slider is pre-rendered (all 33 depths drawn in advance: it answers in the
    browser); the other two redraw those frames, once the slider is released."""
    style = {"description_width": "initial"}
    controls = {
        "layers": widgets.SelectionSlider(options=list(range(ReceptiveFieldView.MAX_LAYERS + 1)),
                                          value=layers, description="layers L", style=style),
        "window": widgets.IntSlider(value=window, min=1, max=16, description="window w",
                                    style=style, continuous_update=False),
        "n_global": widgets.IntSlider(value=n_global, min=0, max=4, description="global tokens",
                                      style=style, continuous_update=False),
    }
    return Explorer(ReceptiveFieldView(), controls, prerender="layers")
