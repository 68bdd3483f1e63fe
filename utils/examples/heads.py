"""Chapter 3's example: three hand-designed heads on the running example.

The sentence is chapter 1's, "John went to the store. He bought milk." Each token
gets ``d_model = 12`` named dimensions: chapter 1's seven word features, a flag for
the first token, and a four-number position code (``cos`` and ``sin`` of 60° and 90°
times the position). With ``n_heads = 3`` every head owns 4 of the 12 query/key
columns, and each head is designed to ask one question:

* head 0, **previous token**: the query rotates the position code one step back, so
  ``q_i · k_j`` is largest for ``j = i - 1`` (the first token looks at itself);
* head 1, **same kind**: query and key are the word's kind (noun, verb, function
  word), so nouns read nouns, verbs read verbs;
* head 2, **start**: every query is the same (a query bias) and only the first
  token's key answers it.

Values pass on something readable per head (the previous word's kind; the content
of words of the same kind; what the first word is) and ``W_o`` is the identity, so
each output column is named. Weights are ``(d_in, d_out)`` and applied as ``x @ w``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..multihead import MultiHeadAttention
from .running import running_example

__all__ = [
    "HeadsExample",
    "heads_example",
    "pattern_scores",
    "pattern_targets",
    "position_code",
]

#: angles (radians per position) of the two rotations in the position code: periods 6 and 4,
#: so the code repeats after 12 positions (enough for the 10 tokens here)
ANGLES = (math.pi / 3, math.pi / 2)
POSITION_DIMS = ["cos 60°·i", "sin 60°·i", "cos 90°·i", "sin 90°·i"]
KINDS = ["noun", "verb", "function"]
HEAD_NAMES = ["previous token", "same kind", "start"]
PATTERNS = ["previous token", "same kind", "start"]
#: how strongly each head's query asks (larger = sharper weights)
SHARPNESS = {"previous token": 6.0, "same kind": 10.0, "start": 10.0}
#: chapter 1 features that make each kind (He is a noun through "pronoun", not "male")
_KIND_OF_FEATURE = {"person": "noun", "place": "noun", "food": "noun", "pronoun": "noun",
                    "action": "verb", "function": "function"}
_CONTENT = ["person", "place", "food", "action"]  # head 1 passes these on
_SUBJECT = ["person", "male", "place", "food"]  # head 2 passes these on


@dataclass(frozen=True)
class HeadsExample:
    """Tokens, inputs ``x (N, d_model)`` and the four projections of 3-head attention.

    ``w_q, w_k, w_v, w_o`` are ``(d_model, d_model)`` in the course's ``(d_in, d_out)``
    convention; ``b_q`` is the query bias (the other biases are zero). ``dims`` names
    the columns of ``x``; ``value_names`` the columns of the values and of the output.
    """

    sentence: str
    tokens: list[str]
    kinds: list[str]
    dims: list[str]
    value_names: list[str]
    head_names: list[str]
    n_heads: int
    x: torch.Tensor
    w_q: torch.Tensor
    w_k: torch.Tensor
    w_v: torch.Tensor
    w_o: torch.Tensor
    b_q: torch.Tensor

    @property
    def d_model(self) -> int:
        return self.x.shape[-1]

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def position_dims(self) -> list[int]:
        """Columns of ``x`` that carry position: the first-token flag and the code."""
        return [self.dims.index(d) for d in ("first", *POSITION_DIMS)]

    def index(self, token: str) -> int:
        """Position of the first occurrence of ``token``."""
        return self.tokens.index(token)

    def inputs(self, position_strength: float = 1.0) -> torch.Tensor:
        """``x`` with its position columns multiplied by ``position_strength`` (0 = no order)."""
        x = self.x.clone()
        x[:, self.position_dims] *= position_strength
        return x

    def reorder(self, perm: torch.Tensor, position_strength: float = 1.0) -> torch.Tensor:
        """The words in the order ``perm`` at unchanged positions: ``(N, d_model)``.

        Row i holds the word features of token ``perm[i]`` and the position columns of
        position i (scaled by ``position_strength``).
        """
        x = self.inputs(position_strength)
        words = [c for c in range(self.d_model) if c not in self.position_dims]
        x[:, words] = x[perm][:, words]
        return x

    def module(self, n_heads: int | None = None) -> MultiHeadAttention:
        """A :class:`~utils.multihead.MultiHeadAttention` holding these weights.

        ``n_heads`` (default: the designed 3) cuts the same weights into a different
        number of heads. ``nn.Linear`` stores ``(d_out, d_in)``, hence the ``.T``.
        """
        m = MultiHeadAttention(self.d_model, n_heads or self.n_heads, dtype=self.x.dtype)
        with torch.no_grad():
            for layer, w in ((m.w_q, self.w_q), (m.w_k, self.w_k), (m.w_v, self.w_v),
                             (m.w_o, self.w_o)):
                layer.weight.copy_(w.T)
                layer.bias.zero_()
            m.w_q.bias.copy_(self.b_q)
        return m


def position_code(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``(n, 4)``: ``[cos 60°i, sin 60°i, cos 90°i, sin 90°i]`` for positions i = 0..n-1."""
    i = torch.arange(n, dtype=dtype)[:, None]
    angles = torch.tensor(ANGLES, dtype=dtype)
    phase = i * angles  # (n, 2)
    code = torch.stack([phase.cos(), phase.sin()], dim=-1).flatten(-2)  # pairs (cos, sin)
    return torch.where(code.abs() < 1e-12, 0.0, code)  # cos 90° is 0, not 6e-17


def _step_back(dtype) -> torch.Tensor:
    """``(4, 4)`` block rotation R with ``position_code(i) @ R = position_code(i - 1)``."""
    blocks = []
    for a in ANGLES:  # [cos ai, sin ai] @ [[cos a, -sin a], [sin a, cos a]] = [cos a(i-1), sin a(i-1)]
        c, s = math.cos(a), math.sin(a)
        blocks.append(torch.tensor([[c, -s], [s, c]], dtype=dtype))
    r = torch.block_diag(*blocks)
    return torch.where(r.abs() < 1e-12, 0.0, r)  # cos 90° is 0, not 6e-17


def heads_example(dtype: torch.dtype = torch.float64) -> HeadsExample:
    """The hand-designed 3-head example (N = 10 tokens, d_model = 12, d_head = 4)."""
    base = running_example(dtype)
    feats = base.features
    tokens, n = base.tokens, len(base.tokens)
    dims = [*feats, "first", *POSITION_DIMS]
    col = {d: i for i, d in enumerate(dims)}
    first = torch.zeros(n, 1, dtype=dtype)
    first[0] = 1.0
    x = torch.cat([base.x, first, position_code(n, dtype)], dim=-1)  # (N, 12)

    d, dh = len(dims), len(dims) // 3
    w_q, w_k, w_v = (torch.zeros(d, d, dtype=dtype) for _ in range(3))
    b_q = torch.zeros(d, dtype=dtype)
    p0 = col[POSITION_DIMS[0]]  # the position code is the last 4 columns of x

    # head 0 (columns 0-3): previous token. Keys are the position code; the query is the
    # code rotated one step back, scaled: q_i · k_j = c (cos 60°(i-1-j) + cos 90°(i-1-j)),
    # largest (2c) at j = i - 1 and at most c/2 elsewhere for |i-1-j| < 12.
    c = SHARPNESS["previous token"]
    w_k[p0:p0 + dh, 0:dh] = torch.eye(dh, dtype=dtype)
    w_q[p0:p0 + dh, 0:dh] = c * _step_back(dtype)
    # the first token has no previous token: its flag moves its query from position -1 to 0
    code0 = position_code(1, dtype)[0]
    w_q[col["first"], 0:dh] = c * (code0 - code0 @ _step_back(dtype))

    # head 1 (columns 4-7): same kind. Query and key are the kind (noun, verb, function).
    c = SHARPNESS["same kind"]
    for feat, kind in _KIND_OF_FEATURE.items():
        w_k[col[feat], dh + KINDS.index(kind)] = 1.0
        w_q[col[feat], dh + KINDS.index(kind)] = c

    # head 2 (columns 8-11): start. Every query is the bias (c, 0, 0, 0); only the first
    # token's key answers it.
    b_q[2 * dh] = SHARPNESS["start"]
    w_k[col["first"], 2 * dh] = 1.0

    # values: head 0 passes the word's kind (so a token learns its predecessor's kind),
    # head 1 the content of words of the same kind, head 2 what the first word is.
    value_names = ([f"prev: {k}" for k in KINDS] + ["prev: none"]
                   + [f"kind: {f}" for f in _CONTENT] + [f"start: {f}" for f in _SUBJECT])
    for feat, kind in _KIND_OF_FEATURE.items():
        w_v[col[feat], KINDS.index(kind)] = 1.0
    w_v[col["first"], 3] = 1.0
    for j, feat in enumerate(_CONTENT):
        w_v[col[feat], dh + j] = 1.0
    for j, feat in enumerate(_SUBJECT):
        w_v[col[feat], 2 * dh + j] = 1.0

    return HeadsExample(
        sentence=base.sentence, tokens=list(tokens), kinds=[_kind(t) for t in tokens],
        dims=dims, value_names=value_names, head_names=list(HEAD_NAMES), n_heads=3, x=x,
        w_q=w_q, w_k=w_k, w_v=w_v, w_o=torch.eye(d, dtype=dtype), b_q=b_q,
    )


def _kind(token: str) -> str:
    if token in ("went", "bought"):
        return "verb"
    if token in ("to", "the", "."):
        return "function"
    return "noun"


def pattern_targets(example: HeadsExample) -> dict[str, torch.Tensor]:
    """For each pattern, a bool ``(N, N)``: which keys a query following it should read.

    "previous token": ``j = i - 1`` (``j = 0`` for the first token); "same kind": words of
    the query's kind; "start": ``j = 0``.
    """
    n = len(example.tokens)
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    kinds = [KINDS.index(k) for k in example.kinds]
    kind = torch.tensor(kinds)
    return {
        "previous token": j == (i - 1).clamp_min(0),
        "same kind": kind[:, None] == kind[None, :],
        "start": (j == 0).expand(n, n),
    }


def pattern_scores(weights: torch.Tensor, example: HeadsExample) -> torch.Tensor:
    """How much each head follows each pattern: ``(..., N, N) -> (..., 3)``.

    Entry p is the weight a query puts on pattern p's keys, averaged over the queries
    (1 = the head follows the pattern exactly), in the order of :data:`PATTERNS`.
    """
    targets = pattern_targets(example)
    return torch.stack([(weights * targets[p].to(weights.dtype)).sum(-1).mean(-1)
                        for p in PATTERNS], dim=-1)
