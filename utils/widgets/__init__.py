"""Live widgets: a pure, fast view per idea plus a thin ipywidgets explorer (see ``_core``).

One module per chapter's widgets; every view and ``*_explorer`` is also available from here.
"""

from ._core import Explorer, View, render_png
from .causal import GenerationView, LeakageView, generation_explorer, leakage_explorer
from .cross_attention import AlignmentView, PaddingView, alignment_explorer, padding_explorer
from .hard import (
    HardAttentionView,
    TemperatureView,
    TopKView,
    hard_attention_explorer,
    temperature_explorer,
    topk_explorer,
)
from .hard_estimators import EstimatorView, estimator_explorer
from .multihead import HeadCountView, QueryHeadsView, head_count_explorer, query_heads_explorer
from .scores import (
    CosineTemperatureView,
    ScoreFunctionView,
    cosine_temperature_explorer,
    score_explorer,
)
from .self_attention import AttentionView, attention_explorer, tempered_weights
from .sparse import PatternView, ReceptiveFieldView, pattern_explorer, receptive_field_explorer

__all__ = [
    "AlignmentView",
    "AttentionView",
    "CosineTemperatureView",
    "EstimatorView",
    "Explorer",
    "GenerationView",
    "HardAttentionView",
    "HeadCountView",
    "LeakageView",
    "PaddingView",
    "PatternView",
    "QueryHeadsView",
    "ReceptiveFieldView",
    "ScoreFunctionView",
    "TemperatureView",
    "TopKView",
    "View",
    "alignment_explorer",
    "attention_explorer",
    "cosine_temperature_explorer",
    "estimator_explorer",
    "generation_explorer",
    "hard_attention_explorer",
    "head_count_explorer",
    "leakage_explorer",
    "padding_explorer",
    "pattern_explorer",
    "query_heads_explorer",
    "receptive_field_explorer",
    "render_png",
    "score_explorer",
    "temperature_explorer",
    "tempered_weights",
    "topk_explorer",
]
