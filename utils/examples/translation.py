"""Chapter 2's translation example: "the black cat sat on a red mat" -> French.

English (the encoder's source, M tokens) and French (the decoder's target, N tokens)
share one hand-designed feature space, as the states of a multilingual model would:
nine *concept* features (what a word means) and five *word-class* features. The
target sentence reorders both adjective-noun pairs ("black cat" -> "chat noir",
"red mat" -> "tapis rouge") and spreads one English word over two ("sat" ->
"s'est assis": "s'est" carries the past, "assis" the sitting), so its alignment
is worth looking at.

The projections are a "meaning detector": a query asks for its own concepts
(weight 3.5) and, more weakly, its word class (weight 1.5); a key offers the same.
The values keep only the concepts (``W_v`` drops the word class), so each output
row reads as the English meaning the French word found in the source.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..masks import padding_mask

__all__ = [
    "CONCEPTS",
    "FEATURES",
    "PAD",
    "PAIRS",
    "TranslationBatch",
    "TranslationExample",
    "embed",
    "translation_batch",
    "translation_example",
]

#: the padding token; its embedding is all zeros (like ``nn.Embedding(padding_idx=...)``)
PAD = "<pad>"
CONCEPTS = ["definite", "indefinite", "cat", "mat", "black", "red", "sit", "past", "on"]
CLASSES = ["article", "noun", "adjective", "verb", "preposition"]
FEATURES = CONCEPTS + CLASSES
CONCEPT_WEIGHT = 3.5
CLASS_WEIGHT = 1.5

#: (English source, French target); the first is the chapter's main example
PAIRS = [
    ("the black cat sat on a red mat", "le chat noir s'est assis sur un tapis rouge"),
    ("the black cat sat", "le chat noir s'est assis"),
    ("a red mat", "un tapis rouge"),
]

# token -> its features (all 1.0); English and French words live in the same space
_VOCAB = {
    # English
    "the": ("definite", "article"),
    "a": ("indefinite", "article"),
    "black": ("black", "adjective"),
    "red": ("red", "adjective"),
    "cat": ("cat", "noun"),
    "mat": ("mat", "noun"),
    "sat": ("sit", "past", "verb"),
    "on": ("on", "preposition"),
    # French
    "le": ("definite", "article"),
    "un": ("indefinite", "article"),
    "noir": ("black", "adjective"),
    "rouge": ("red", "adjective"),
    "chat": ("cat", "noun"),
    "tapis": ("mat", "noun"),
    "s'est": ("past", "verb"),  # the auxiliary carries the past tense
    "assis": ("sit", "verb"),  # the participle carries the sitting
    "sur": ("on", "preposition"),
    PAD: (),
}
#: the hand-made alignment: French word -> the English word it translates
GOLD = {"le": "the", "un": "a", "noir": "black", "rouge": "red", "chat": "cat", "tapis": "mat",
        "s'est": "sat", "assis": "sat", "sur": "on"}


def embed(tokens: Sequence[str], dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The hand-designed embeddings of ``tokens``: ``(len(tokens), d_model = 14)``."""
    unknown = [t for t in tokens if t not in _VOCAB]
    if unknown:
        raise ValueError(f"unknown token(s) {unknown}; the vocabulary is {sorted(_VOCAB)}")
    x = torch.zeros(len(tokens), len(FEATURES), dtype=dtype)
    for i, token in enumerate(tokens):
        for feature in _VOCAB[token]:
            x[i, FEATURES.index(feature)] = 1.0
    return x


def _projections(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    weights = torch.tensor([CONCEPT_WEIGHT] * len(CONCEPTS) + [CLASS_WEIGHT] * len(CLASSES),
                           dtype=dtype)
    w_q = torch.diag(weights)  # (d_model, d_k): a query asks for its own meaning and class
    w_k = torch.diag(weights)  # (d_model, d_k): a key offers the same
    w_v = torch.eye(len(FEATURES), len(CONCEPTS), dtype=dtype)  # (d_model, d_v): concepts only
    return w_q, w_k, w_v


@dataclass(frozen=True)
class TranslationExample:
    """One sentence pair: ``x_enc (M, d_model)`` for the source, ``x_dec (N, d_model)``
    for the target, and the projections ``w_q, w_k (d_model, d_k)``, ``w_v (d_model, d_v)``."""

    source: str
    target: str
    source_tokens: list[str]
    target_tokens: list[str]
    features: list[str]
    roles: list[str]
    value_features: list[str]
    x_enc: torch.Tensor
    x_dec: torch.Tensor
    w_q: torch.Tensor
    w_k: torch.Tensor
    w_v: torch.Tensor
    #: for each target token, the index of the source token it translates
    gold: list[int]

    def source_index(self, token: str) -> int:
        """Position of ``token`` in the source."""
        return self.source_tokens.index(token)

    def target_index(self, token: str) -> int:
        """Position of ``token`` in the target."""
        return self.target_tokens.index(token)


def translation_example(pair: int = 0, dtype: torch.dtype = torch.float64) -> TranslationExample:
    """Sentence pair ``PAIRS[pair]`` (default: the 8-word source and its 9-word translation).

    d_model = d_k = 14 (9 concepts + 5 word classes), d_v = 9 (the concepts).
    """
    if not 0 <= pair < len(PAIRS):
        raise ValueError(f"pair must be in 0..{len(PAIRS) - 1}, got {pair}")
    source, target = PAIRS[pair]
    src, tgt = source.split(), target.split()
    w_q, w_k, w_v = _projections(dtype)
    return TranslationExample(
        source=source,
        target=target,
        source_tokens=src,
        target_tokens=tgt,
        features=list(FEATURES),
        roles=list(FEATURES),
        value_features=list(CONCEPTS),
        x_enc=embed(src, dtype),
        x_dec=embed(tgt, dtype),
        w_q=w_q,
        w_k=w_k,
        w_v=w_v,
        gold=[src.index(GOLD[t]) for t in tgt],
    )


@dataclass(frozen=True)
class TranslationBatch:
    """Sentence pairs padded into one batch.

    ``x_enc (B, M, d_model)`` and ``x_dec (B, N, d_model)`` hold zeros at padded positions;
    ``source_lengths``/``target_lengths`` ``(B,)`` count the real tokens; token lists are
    unpadded (``padded_source(b)`` adds the ``<pad>`` tokens).
    """

    source_tokens: list[list[str]]
    target_tokens: list[list[str]]
    x_enc: torch.Tensor
    x_dec: torch.Tensor
    source_lengths: torch.Tensor
    target_lengths: torch.Tensor
    w_q: torch.Tensor
    w_k: torch.Tensor
    w_v: torch.Tensor

    def padded_source(self, b: int) -> list[str]:
        """Source ``b``'s tokens followed by ``<pad>`` up to the batch's length M."""
        return self.source_tokens[b] + [PAD] * (self.x_enc.shape[-2] - len(self.source_tokens[b]))

    def key_padding_mask(self) -> torch.Tensor:
        """``(B, 1, M)`` bool, True at real source tokens (broadcasts over the queries)."""
        return padding_mask(self.source_lengths, self.x_enc.shape[-2])[:, None, :]


def _pad(rows: list[list[str]], dtype: torch.dtype) -> torch.Tensor:
    longest = max(len(r) for r in rows)
    return torch.stack([embed(r + [PAD] * (longest - len(r)), dtype) for r in rows])


def translation_batch(pairs: Sequence[int] = (0, 1, 2),
                      dtype: torch.dtype = torch.float64) -> TranslationBatch:
    """The sentence pairs ``PAIRS[i]`` for i in ``pairs``, padded to the longest source
    (M) and the longest target (N)."""
    bad = [i for i in pairs if not 0 <= i < len(PAIRS)]
    if bad or not pairs:
        raise ValueError(f"pairs must be a non-empty list of indices in 0..{len(PAIRS) - 1}, "
                         f"got {list(pairs)}")
    src = [PAIRS[i][0].split() for i in pairs]
    tgt = [PAIRS[i][1].split() for i in pairs]
    w_q, w_k, w_v = _projections(dtype)
    return TranslationBatch(
        source_tokens=src,
        target_tokens=tgt,
        x_enc=_pad(src, dtype),
        x_dec=_pad(tgt, dtype),
        source_lengths=torch.tensor([len(s) for s in src]),
        target_lengths=torch.tensor([len(t) for t in tgt]),
        w_q=w_q,
        w_k=w_k,
        w_v=w_v,
    )
