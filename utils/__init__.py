"""Attention, Hands-On: the shared library every chapter notebook imports.

One module per idea: ``attention`` (softmax, scaled dot-product, self/cross),
``masks``, ``multihead``, ``scores``, ``sparse``, ``hard`` (soft vs hard attention
and gradient estimators), ``plotting`` (one heatmap function for the course),
``widgets``, ``checks`` (exercise feedback), ``examples`` (the course's data),
``figures`` (SVG diagrams) and ``authoring`` (solutions -> student notebooks).
"""

__version__ = "0.1.0"
