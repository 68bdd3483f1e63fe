"""Attention, Hands-On: the shared library every chapter notebook imports.

One module per idea: ``attention`` (softmax, scaled dot-product, self/cross),
``masks``, ``multihead``, ``kv_cache`` (token-by-token generation), ``scores``,
``sparse`` (blockwise sliding-window attention), ``cost`` (exact counts and measured
memory of attention patterns), ``hard`` (soft vs hard attention and gradient
estimators), ``training`` (tiny models trained in seconds), ``plotting``
(one heatmap function for the course), ``widgets``, ``checks`` (exercise feedback),
``examples`` (the course's data), ``figures`` (SVG diagrams), ``notebook`` (the first
cell of every chapter) and ``authoring`` (solutions -> student notebooks).
"""

__version__ = "0.1.0"
