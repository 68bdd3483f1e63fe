"""Live widgets: a pure, fast view per idea plus a thin ipywidgets explorer (see ``_core``)."""

from ._core import Explorer, View, render_png
from .self_attention import AttentionView, attention_explorer, tempered_weights

__all__ = [
    "AttentionView",
    "Explorer",
    "View",
    "attention_explorer",
    "render_png",
    "tempered_weights",
]
