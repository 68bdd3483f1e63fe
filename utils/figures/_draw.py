"""Small drawing helpers for the diagrams: boxes, arrows, token rows."""

from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

# colour-blind-safe (viridis / Okabe-Ito inspired) fills
COLORS = {
    "input": "#dce9f5",
    "query": "#b5de2b",
    "key": "#35b779",
    "value": "#31688e",
    "weights": "#fde725",
    "output": "#e5e5e5",
    "op": "#ffffff",
    "accent": "#d55e00",
}


def canvas(width: float, height: float, xlim=(0, 10), ylim=(0, 6)):
    """A blank figure and axes with data coordinates ``xlim`` × ``ylim``."""
    fig = Figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.axis("off")
    return fig, ax


def box(ax, x: float, y: float, text: str, *, w: float = 1.6, h: float = 0.8,
        color: str = "op", fontsize: float = 11, textcolor: str = "black"):
    """A rounded box centred at (x, y) with ``text`` inside; returns the patch."""
    fill = COLORS.get(color, color)
    patch = FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.12",
                           facecolor=fill, edgecolor="#333333", linewidth=1.2)
    ax.add_patch(patch)
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, color=textcolor)
    return patch


def arrow(ax, start: tuple[float, float], end: tuple[float, float], *, text: str | None = None,
          color: str = "#333333", style: str = "-|>", lw: float = 1.4, rad: float = 0.0,
          fontsize: float = 9):
    """An arrow from ``start`` to ``end`` with an optional label at its middle."""
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=14, color=color,
                                 linewidth=lw, connectionstyle=f"arc3,rad={rad}",
                                 shrinkA=2, shrinkB=2))
    if text:
        mx, my = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
        ax.text(mx, my + 0.15, text, ha="center", va="bottom", fontsize=fontsize, color=color)


def title(ax, x: float, y: float, text: str, fontsize: float = 14):
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, weight="bold")


__all__ = ["COLORS", "Figure", "arrow", "box", "canvas", "title"]
