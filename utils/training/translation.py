"""Chapter 2's learned counterpart: a tiny encoder–decoder that learns to translate.

The task is a made-up translation from a small English into a small French (real words,
made-up grammar), with the two reorderings of the chapter's designed example:

* an adjective goes **after** its noun: *the black cat* → *le chat noir*;
* a verb becomes **two** words: *sat* → *s'est assis*, *slept* → *a dormi*.

A sentence is a noun phrase ``determiner [adjective] noun``, optionally followed by a verb
and optionally by a prepositional phrase ``preposition determiner [adjective] noun``: 2 to 8
English words, then ``<eos>``. Pairs are drawn in code (:func:`sample`); 1 in 5
adjective–noun pairs (:func:`unseen_pair`, among them *black cat* and *red mat*) never
occur in training, so the held-out sentences, each with at least one such pair, test
whether the model translates words or memorised phrases. The chapter's sentence *the black
cat sat on a red mat* has two of them.

The model (:class:`Translator`) is as small as an encoder–decoder can be:

* **encoder**: each source token's state is its embedding plus a learned position
  embedding, ``x_enc (B, M, d)``;
* **decoder state**: at target position i, the embedding of the **previous** target token
  (``<bos>`` at i = 0) plus a learned position embedding, ``x_dec (B, N, d)``: built from
  the words written so far, never from the word being written (a Transformer decoder
  builds it with masked self-attention over all of them, chapter 4);
* **cross-attention**: ``utils.attention.cross_attention(x_dec, x_enc, W_Q, W_K, W_V,
  key_padding_mask=...)``, the course's own function, so the student's library is what
  trains;
* **output**: a linear layer on ``[x_dec, attention output]`` gives the next word's logits.

Nobody tells the model which source word a target word translates: the only training
signal is the next target word (teacher forcing, cross-entropy). :func:`fit` trains it with
:func:`utils.training.train` (Adam, 200 steps of 64 sentence pairs: about a second on a
laptop's CPU). ``tests/test_training_translation.py`` checks every claim the chapter makes
about the trained model for seeds 0–4.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch._dynamo  # torch.optim imports it when an optimizer is built (~2 s): paid here, in
from torch import nn  # a notebook's set-up cell, rather than in its first training run

from .. import attention
from ..examples.translation import PAD
from ..masks import padding_mask
from .loop import Run, train

__all__ = [
    "BOS",
    "EOS",
    "PAD",
    "SOURCE_VOCAB",
    "TARGET_VOCAB",
    "Batch",
    "Decoded",
    "Translation",
    "Translator",
    "decode",
    "evaluate",
    "fit",
    "greedy",
    "held_out_set",
    "loss_fn",
    "one_thread",
    "reference",
    "sample",
    "source_batch",
    "translate",
    "unseen_pair",
]

BOS, EOS = "<bos>", "<eos>"
DETERMINERS = {"the": "le", "a": "un", "this": "ce", "my": "mon", "your": "ton"}
ADJECTIVES = {"black": "noir", "red": "rouge", "green": "vert", "blue": "bleu", "white": "blanc",
              "grey": "gris", "yellow": "jaune", "pink": "rose", "round": "rond", "hot": "chaud",
              "cold": "froid", "heavy": "lourd"}
NOUNS = {"cat": "chat", "mat": "tapis", "dog": "chien", "hat": "chapeau", "book": "livre",
         "garden": "jardin", "bed": "lit", "boat": "bateau", "horse": "cheval", "cake": "gâteau",
         "fish": "poisson", "bag": "sac", "wall": "mur", "train": "train", "wolf": "loup",
         "bench": "banc"}
#: English verb -> (French auxiliary, participle): one word becomes two
VERBS = {"sat": ("s'est", "assis"), "hid": ("s'est", "caché"), "lay": ("s'est", "couché"),
         "slept": ("a", "dormi"), "jumped": ("a", "sauté"), "waited": ("a", "attendu"),
         "fell": ("est", "tombé"), "came": ("est", "venu"), "stayed": ("est", "resté")}
PREPOSITIONS = {"on": "sur", "under": "sous", "in": "dans", "behind": "derrière", "with": "avec"}
AUXILIARIES = ["s'est", "a", "est"]

#: token lists; index 0 is ``<pad>`` in both (``nn.Embedding(padding_idx=0)``)
SOURCE_VOCAB = [PAD, EOS, *DETERMINERS, *ADJECTIVES, *NOUNS, *VERBS, *PREPOSITIONS]
TARGET_VOCAB = [PAD, BOS, EOS, *DETERMINERS.values(), *ADJECTIVES.values(), *NOUNS.values(),
                *AUXILIARIES, *(p for _, p in VERBS.values()), *PREPOSITIONS.values()]
SRC = {w: i for i, w in enumerate(SOURCE_VOCAB)}
TGT = {w: i for i, w in enumerate(TARGET_VOCAB)}
#: the longest source (8 words + <eos>) and target (<bos> + 10 words, or 10 words + <eos>)
MAX_SOURCE, MAX_TARGET = 9, 11
#: word classes of the target vocabulary, for per-class statistics
TARGET_CLASS = {
    **{TGT[w]: "determiner" for w in DETERMINERS.values()},
    **{TGT[w]: "adjective" for w in ADJECTIVES.values()},
    **{TGT[w]: "noun" for w in NOUNS.values()},
    **{TGT[w]: "auxiliary" for w in AUXILIARIES},
    **{TGT[p]: "participle" for _, p in VERBS.values()},
    **{TGT[w]: "preposition" for w in PREPOSITIONS.values()},
    TGT[EOS]: "<eos>",
}

_ADJ, _NOUN = list(ADJECTIVES), list(NOUNS)


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread inside the block (the caller's setting is restored after).

    The model's tensors are tiny (64 sentences × 10 tokens × 32 numbers): splitting each
    operation over threads costs more than it saves, and on a busy 2-core machine the
    waiting threads made a run 8 times slower in CPU time (measured: 1.0 s on one thread).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def unseen_pair(adjective: str, noun: str) -> bool:
    """True for the adjective–noun pairs held out of training (1 in 5, e.g. *black cat*,
    *red mat*): those whose positions in ``ADJECTIVES`` and ``NOUNS`` agree modulo 5."""
    return (_ADJ.index(adjective) - _NOUN.index(noun)) % 5 == 0


def reference(source: str | Sequence[str]) -> tuple[list[str], list[int]]:
    """The task's rule: the French words of an English sentence (no ``<eos>``) and, for
    each, the index of the English word it translates (its alignment).

    Raises:
        ValueError: a word outside the vocabulary, or an adjective not followed by a noun.
    """
    words = source.split() if isinstance(source, str) else list(source)
    unknown = [w for w in words if w not in SRC or w in (PAD, EOS)]
    if unknown:
        raise ValueError(f"unknown English word(s) {unknown}; the vocabulary is {SOURCE_VOCAB[2:]}")
    target, align = [], []
    for j, w in enumerate(words):
        if w in ADJECTIVES:
            if j + 1 >= len(words) or words[j + 1] not in NOUNS:
                raise ValueError(f"the adjective {w!r} must be followed by a noun in {words}")
            continue  # written after its noun
        if w in VERBS:
            target += list(VERBS[w])
            align += [j, j]
            continue
        target.append({**DETERMINERS, **NOUNS, **PREPOSITIONS}[w])
        align.append(j)
        if w in NOUNS and j > 0 and words[j - 1] in ADJECTIVES:
            target.append(ADJECTIVES[words[j - 1]])
            align.append(j - 1)
    return target, align


@dataclass(frozen=True)
class Batch:
    """Sentence pairs as padded ids (``<pad>`` = 0).

    ``src (B, M)``: English ids then ``<eos>``; ``src_len (B,)``: real source tokens,
    ``<eos>`` included; ``tgt_in (B, N)``: ``<bos>`` then the French ids (the decoder's
    inputs); ``tgt_out (B, N)``: the French ids then ``<eos>`` (what it must predict);
    ``align (B, N)``: for each target token, the source index it translates (-1 at padding).
    """

    src: torch.Tensor
    src_len: torch.Tensor
    tgt_in: torch.Tensor
    tgt_out: torch.Tensor
    align: torch.Tensor

    def source_words(self, b: int) -> list[str]:
        """Sentence ``b``'s source tokens, ``<eos>`` included, padding dropped."""
        return [SOURCE_VOCAB[i] for i in self.src[b, : int(self.src_len[b])].tolist()]

    def target_words(self, b: int) -> list[str]:
        """Sentence ``b``'s target tokens, ``<eos>`` included, padding dropped."""
        return [TARGET_VOCAB[i] for i in self.tgt_out[b].tolist() if i != 0]


def _ids(vocab: dict, words) -> torch.Tensor:
    return torch.tensor([vocab[w] for w in words])


# Each class's source ids and the target ids of their translations, in the same order.
_SRC_IDS = {name: _ids(SRC, d) for name, d in
            (("det", DETERMINERS), ("adj", ADJECTIVES), ("noun", NOUNS), ("verb", VERBS),
             ("prep", PREPOSITIONS))}
_TGT_IDS = {"det": _ids(TGT, DETERMINERS.values()), "adj": _ids(TGT, ADJECTIVES.values()),
            "noun": _ids(TGT, NOUNS.values()), "aux": _ids(TGT, [a for a, _ in VERBS.values()]),
            "part": _ids(TGT, [p for _, p in VERBS.values()]),
            "prep": _ids(TGT, PREPOSITIONS.values())}
# A sentence's 9 source slots: det adj noun verb prep det adj noun <eos> (some absent), and
# its 10 target slots, each given by the source slot it translates.
_TARGET_SLOTS = torch.tensor([0, 2, 1, 3, 3, 4, 5, 7, 6, 8])


def _left_align(ids: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Each row's present slots, in order, from column 0; padded with 0: ``(B, S) -> (B, S)``."""
    out = torch.zeros(ids.shape[0], ids.shape[1] + 1, dtype=ids.dtype)
    column = torch.where(present, present.cumsum(1) - 1, ids.shape[1])  # absent: a spare column
    return out.scatter_(1, column, ids)[:, :-1]


def sample(n: int, generator: torch.Generator, *, held_out: bool = False,
           p_adjective: float = 0.5, p_verb: float = 0.9, p_phrase: float = 0.6) -> Batch:
    """``n`` random sentence pairs, padded.

    Each noun phrase has an adjective with probability ``p_adjective``; a verb follows the
    first with probability ``p_verb``, and a prepositional phrase the verb with probability
    ``p_phrase``. Training pairs (``held_out=False``) never contain an :func:`unseen_pair`;
    held-out pairs always do (their first noun phrase is one).
    """
    g = generator
    r = torch.rand(n, 4, generator=g)
    has_adj, has_verb = r[:, :2] < p_adjective, r[:, 2] < p_verb
    has_pp = has_verb & (r[:, 3] < p_phrase)
    det = torch.randint(len(DETERMINERS), (n, 2), generator=g)
    adj = torch.randint(len(ADJECTIVES), (n, 2), generator=g)
    noun = torch.randint(len(NOUNS), (n, 2), generator=g)
    verb = torch.randint(len(VERBS), (n,), generator=g)
    prep = torch.randint(len(PREPOSITIONS), (n,), generator=g)
    if held_out:  # the first pair is unseen: noun index ≡ adjective index (mod 5)
        has_adj[:, 0] = True
        noun[:, 0] = adj[:, 0] % 5 + 5 * torch.randint(3, (n,), generator=g)
    else:  # move every unseen pair to a neighbouring noun (a seen pair)
        neighbour = torch.where(noun + 1 < len(NOUNS), noun + 1, noun - 1)
        noun = torch.where(has_adj & ((adj - noun) % 5 == 0), neighbour, noun)
    one = torch.ones(n, dtype=torch.bool)
    present = torch.stack([one, has_adj[:, 0], one, has_verb, has_pp, has_pp,
                           has_pp & has_adj[:, 1], has_pp, one], 1)
    s, t = _SRC_IDS, _TGT_IDS
    src = torch.stack([s["det"][det[:, 0]], s["adj"][adj[:, 0]], s["noun"][noun[:, 0]],
                       s["verb"][verb], s["prep"][prep], s["det"][det[:, 1]], s["adj"][adj[:, 1]],
                       s["noun"][noun[:, 1]], torch.full((n,), SRC[EOS])], 1)
    tgt = torch.stack([t["det"][det[:, 0]], t["noun"][noun[:, 0]], t["adj"][adj[:, 0]],
                       t["aux"][verb], t["part"][verb], t["prep"][prep], t["det"][det[:, 1]],
                       t["noun"][noun[:, 1]], t["adj"][adj[:, 1]], torch.full((n,), TGT[EOS])], 1)
    src_len = present.sum(1)
    position = present.cumsum(1) - 1  # each source slot's index in its sentence
    t_present = present[:, _TARGET_SLOTS]
    n_tgt = int(t_present.sum(1).max())
    tgt_out = _left_align(tgt, t_present)[:, :n_tgt]
    align = _left_align(position[:, _TARGET_SLOTS] + 1, t_present)[:, :n_tgt] - 1
    tgt_in = torch.cat([torch.full((n, 1), TGT[BOS]), tgt_out[:, :-1]], 1)
    tgt_in = tgt_in.masked_fill(tgt_out == 0, 0)
    return Batch(_left_align(src, present)[:, : int(src_len.max())], src_len, tgt_in, tgt_out,
                 align)


def source_batch(sentences: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """English sentences as padded ids ``(B, M)`` (each followed by ``<eos>``) and their
    lengths ``(B,)``, ``<eos>`` included."""
    if isinstance(sentences, str):
        sentences = [sentences]
    rows = []
    for s in sentences:
        reference(s)  # checks the words
        rows.append([SRC[w] for w in s.split()] + [SRC[EOS]])
    m = max(len(r) for r in rows)
    if m > MAX_SOURCE:
        raise ValueError(f"a sentence has {m - 1} words; at most {MAX_SOURCE - 1}")
    ids = torch.tensor([r + [0] * (m - len(r)) for r in rows])
    return ids, torch.tensor([len(r) for r in rows])


class Translator(nn.Module):
    """Embeddings, one cross-attention (``utils.attention.cross_attention``), one linear layer.

    Args:
        d: width of every state, query, key and value.

    Parameters: ``src_emb``, ``tgt_emb`` (``nn.Embedding``, ``<pad>`` = 0 stays zero),
    ``src_pos (MAX_SOURCE, d)``, ``tgt_pos (MAX_TARGET, d)``, ``w_q``, ``w_k``, ``w_v``
    ``(d, d)`` and ``out`` (``nn.Linear(2d, len(TARGET_VOCAB))``).
    """

    def __init__(self, d: int = 32):
        super().__init__()
        self.src_emb = nn.Embedding(len(SOURCE_VOCAB), d, padding_idx=0)
        self.tgt_emb = nn.Embedding(len(TARGET_VOCAB), d, padding_idx=0)
        self.src_pos = nn.Parameter(0.5 * torch.randn(MAX_SOURCE, d))
        self.tgt_pos = nn.Parameter(0.5 * torch.randn(MAX_TARGET, d))
        self.w_q, self.w_k, self.w_v = (nn.Parameter(torch.randn(d, d) / math.sqrt(d))
                                        for _ in range(3))
        self.out = nn.Linear(2 * d, len(TARGET_VOCAB))

    def encode(self, src: torch.Tensor) -> torch.Tensor:
        """Encoder states ``x_enc (B, M, d)``: token embedding + position embedding."""
        return self.src_emb(src) + self.src_pos[: src.shape[-1]]

    def decoder_states(self, tgt_in: torch.Tensor) -> torch.Tensor:
        """Decoder states ``x_dec (B, N, d)``: row i is built from the previous target
        token ``tgt_in[:, i]`` and the position i, never from the token it will write."""
        return self.tgt_emb(tgt_in) + self.tgt_pos[: tgt_in.shape[-1]]

    def forward(self, src: torch.Tensor, src_len: torch.Tensor,
                tgt_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (B, N, |TARGET_VOCAB|), weights (B, N, M))`` for the next target tokens."""
        x_enc, x_dec = self.encode(src), self.decoder_states(tgt_in)
        real = padding_mask(src_len, src.shape[-1])  # (B, M), True = a real source token
        context, weights = attention.cross_attention(x_dec, x_enc, self.w_q, self.w_k, self.w_v,
                                                     key_padding_mask=real)
        return self.out(torch.cat([x_dec, context], dim=-1)), weights


def loss_fn(model: Translator, batch: Batch) -> torch.Tensor:
    """Cross-entropy of the next target token (teacher forcing), padding ignored."""
    logits, _ = model(batch.src, batch.src_len, batch.tgt_in)
    return nn.functional.cross_entropy(logits.flatten(0, 1), batch.tgt_out.flatten(),
                                       ignore_index=0)


@torch.no_grad()
@one_thread()
def greedy(model: Translator, src: torch.Tensor, src_len: torch.Tensor,
           max_len: int = MAX_TARGET - 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy decoding: each step feeds the words written so far and appends the most
    likely next one. Returns ``(ids (B, max_len), weights (B, max_len, M))``; a sentence's
    tokens after its ``<eos>`` are ``<pad>`` (0)."""
    out = torch.full((src.shape[0], 1), TGT[BOS])
    for _ in range(max_len):
        logits, weights = model(src, src_len, out)
        out = torch.cat([out, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    ids = out[:, 1:]
    ended = (ids == TGT[EOS]).cumsum(1) - (ids == TGT[EOS]).long() > 0  # after the first <eos>
    return ids.masked_fill(ended, 0), weights


@dataclass(frozen=True)
class Translation:
    """One decoded sentence: ``source``/``target`` tokens (``<eos>`` included), the
    cross-attention ``weights (N, M)``, and the queries ``q (N, d)`` and keys ``k (M, d)``
    that gave them (``weights = softmax(q kᵀ / √d)``, e.g. for ``AlignmentView``)."""

    source: list[str]
    target: list[str]
    weights: torch.Tensor
    q: torch.Tensor
    k: torch.Tensor


@dataclass(frozen=True)
class Decoded:
    """English sentences translated together as one padded batch.

    ``src (B, M)``, ``src_len (B,)``: the padded source ids and lengths (``<eos>``
    included); ``tgt_in (B, N)``: ``<bos>`` then the words written (the decoder's inputs);
    ``ids (B, N)``: the words written, ``<eos>`` included, then ``<pad>`` (0);
    ``weights (B, N, M)``, ``q (B, N, d)``, ``k (B, M, d)``: the cross-attention of a final
    pass over the words written, with the key padding mask.
    """

    src: torch.Tensor
    src_len: torch.Tensor
    tgt_in: torch.Tensor
    ids: torch.Tensor
    weights: torch.Tensor
    q: torch.Tensor
    k: torch.Tensor

    def key_padding_mask(self) -> torch.Tensor:
        """``(B, M)`` bool, True at real source tokens (``<eos>`` included)."""
        return padding_mask(self.src_len, self.src.shape[-1])

    def sentence(self, b: int) -> Translation:
        """Sentence ``b`` with its padding dropped (rows: its target tokens, columns: its
        source tokens)."""
        m, n = int(self.src_len[b]), int((self.ids[b] != 0).sum())
        return Translation(source=[SOURCE_VOCAB[i] for i in self.src[b, :m].tolist()],
                           target=[TARGET_VOCAB[i] for i in self.ids[b, :n].tolist()],
                           weights=self.weights[b, :n, :m], q=self.q[b, :n], k=self.k[b, :m])


@torch.no_grad()
@one_thread()
def decode(model: Translator, sentences: str | Sequence[str]) -> Decoded:
    """Translate English sentences together, as one padded batch with a key padding mask:
    greedy decoding until every sentence has written ``<eos>``."""
    src, src_len = source_batch(sentences)
    ids, _ = greedy(model, src, src_len)
    n = int((ids != 0).sum(1).max())
    ids = ids[:, :n]
    tgt_in = torch.cat([torch.full((len(ids), 1), TGT[BOS]), ids[:, :-1]], dim=1)
    tgt_in = tgt_in.masked_fill(ids == 0, 0)
    _, weights = model(src, src_len, tgt_in)
    return Decoded(src, src_len, tgt_in, ids, weights, model.decoder_states(tgt_in) @ model.w_q,
                   model.encode(src) @ model.w_k)


def translate(model: Translator, sentences: str | Sequence[str]) -> list[Translation]:
    """:func:`decode`, one :class:`Translation` per sentence (padding dropped)."""
    decoded = decode(model, sentences)
    return [decoded.sentence(b) for b in range(len(decoded.ids))]


@torch.no_grad()
@one_thread()
def evaluate(model: Translator, batch: Batch) -> dict[str, float]:
    """Held-out metrics: ``"token accuracy"`` (next token, teacher forcing), ``"sentence
    accuracy"`` (greedy decoding gives exactly the reference, ``<eos>`` included) and,
    per target word class, ``"aligned <class>"``: the fraction of its rows whose largest
    weight is on the source word it translates."""
    logits, weights = model(batch.src, batch.src_len, batch.tgt_in)
    real = batch.tgt_out != 0
    result = {"token accuracy": (logits.argmax(-1) == batch.tgt_out)[real].float().mean().item()}
    ids, _ = greedy(model, batch.src, batch.src_len, batch.tgt_out.shape[1])
    result["sentence accuracy"] = (ids == batch.tgt_out).all(1).float().mean().item()
    hit = weights.argmax(-1) == batch.align
    classes = _CLASS_OF[batch.tgt_out]
    for c, name in enumerate(_CLASSES):
        rows = classes == c
        result[f"aligned {name}"] = hit[rows].float().mean().item() if rows.any() else math.nan
    return result


_CLASSES = sorted(set(TARGET_CLASS.values()))
_CLASS_OF = torch.tensor([_CLASSES.index(TARGET_CLASS[i]) if i in TARGET_CLASS else -1
                          for i in range(len(TARGET_VOCAB))])


def fit(seed: int = 0, *, steps: int = 200, batch_size: int = 64, lr: float = 1e-2,
        d: int = 32, eval_every: int | None = 25, test_size: int = 200) -> Run:
    """Train a :class:`Translator` for ``steps`` Adam steps on fresh random pairs.

    The held-out set (``test_size`` pairs, the same for every seed, each with an unseen
    adjective–noun pair) is evaluated every ``eval_every`` steps (None: only at the start
    and the end); the run's history records :func:`evaluate`'s metrics.
    """
    test = held_out_set(test_size)
    with one_thread():
        return train(lambda: Translator(d), lambda g: sample(batch_size, g), loss_fn,
                     steps=steps, seed=seed, lr=lr, eval_fn=lambda m: evaluate(m, test),
                     eval_every=eval_every or steps)



def held_out_set(n: int = 200) -> Batch:
    """The held-out pairs :func:`fit` evaluates on (the same for every seed)."""
    return sample(n, torch.Generator().manual_seed(2024), held_out=True)
