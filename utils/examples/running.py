"""The course's running example: "John went to the store. He bought milk."

Embeddings and projections are designed by hand so that every number means
something: each embedding dimension is a named feature, each query/key dimension
a named "question", and the values are the embeddings themselves (``W_v = I``),
so an output row reads as a blend of token features. With these weights "He"
attends to "John" — attention resolves the pronoun.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["RunningExample", "feature_vector", "running_example"]

SENTENCE = "John went to the store. He bought milk."
TOKENS = ["John", "went", "to", "the", "store", ".", "He", "bought", "milk", "."]
FEATURES = ["person", "male", "place", "food", "action", "function", "pronoun"]
#: what each query/key dimension asks for (query side) and offers (key side)
ROLES = ["person", "place", "food", "action"]

# token -> {feature: value}
_EMBEDDING = {
    "John": {"person": 1.0, "male": 1.0},
    "went": {"action": 1.0},
    "to": {"function": 1.0},
    "the": {"function": 1.0},
    "store": {"place": 1.0},
    ".": {"function": 1.0},
    "He": {"male": 1.0, "pronoun": 1.0},
    "bought": {"action": 1.0},
    "milk": {"food": 1.0},
}
# feature -> {role: how strongly a token with this feature *looks for* the role}
_QUERY = {
    "pronoun": {"person": 3.0},  # a pronoun looks for the person it refers to
    "action": {"person": 2.0, "place": 1.0, "food": 1.0},  # a verb: who, where, what
    "person": {"action": 2.0},  # a person: what did they do
    "place": {"action": 1.0},
    "food": {"action": 1.0},
}
# feature -> {role: how strongly a token with this feature *offers* the role}
_KEY = {
    "person": {"person": 3.0},
    "male": {"person": 1.0},
    "place": {"place": 3.0},
    "food": {"food": 3.0},
    "action": {"action": 3.0},
}


@dataclass(frozen=True)
class RunningExample:
    """Tokens, their embeddings ``x (N, d_model)`` and projections ``(d_model, d_k)``."""

    sentence: str
    tokens: list[str]
    features: list[str]
    roles: list[str]
    x: torch.Tensor
    w_q: torch.Tensor
    w_k: torch.Tensor
    w_v: torch.Tensor

    def index(self, token: str) -> int:
        """Position of the first occurrence of ``token``."""
        return self.tokens.index(token)


def _table(rows: list[str], cols: list[str], entries: dict, dtype) -> torch.Tensor:
    out = torch.zeros(len(rows), len(cols), dtype=dtype)
    for r, row in enumerate(rows):
        for col, value in entries.get(row, {}).items():
            out[r, cols.index(col)] = value
    return out


def feature_vector(token: str, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The designed features ``(d_model,)`` of a word of the running example (one entry per
    name in ``FEATURES``), e.g. ``"John"`` -> person and male. ``KeyError`` for other words."""
    if token not in _EMBEDDING:
        raise KeyError(f"{token!r} is not a word of the running example; its words: "
                       f"{sorted(_EMBEDDING)}")
    return _table([token], FEATURES, _EMBEDDING, dtype)[0]


def running_example(dtype: torch.dtype = torch.float64) -> RunningExample:
    """The hand-designed running example (N = 10 tokens, d_model = 7, d_k = 4, d_v = 7)."""
    return RunningExample(
        sentence=SENTENCE,
        tokens=list(TOKENS),
        features=list(FEATURES),
        roles=list(ROLES),
        x=_table(TOKENS, FEATURES, _EMBEDDING, dtype),
        w_q=_table(FEATURES, ROLES, _QUERY, dtype),
        w_k=_table(FEATURES, ROLES, _KEY, dtype),
        w_v=torch.eye(len(FEATURES), dtype=dtype),
    )
