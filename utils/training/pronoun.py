"""Learned W_Q, W_K and W_V for the running example's job: "He" finds the name it refers to.

Chapter 1 designs ``W_Q``, ``W_K`` and ``W_V`` by hand so that in "John went to the store.
He bought milk." the pronoun attends to "John". Here the same three matrices are *learned*
from generated sentences, in a second or less.

**Embeddings (fixed, not trained).** A word's embedding is the running example's seven
designed features (every name gets John's: person and male; every place gets store's,
every food milk's; the other words their own) followed by an identity code of
:data:`D_ID` numbers, a random unit vector per word drawn from the run's seed. The code is
what tells "Tom" from "Paul". ``d_model = 7 + D_ID = 20``.

**Held out.** The running example's content words, "John", "store" and "milk", are in
no training sentence: the running sentence is made only of words the model was trained on
*plus three it has never seen*, so it tests generalisation.

**Model.** :class:`PronounModel` is ``utils.attention.self_attention(x, W_Q, W_K, W_V)``
(the course's own function, so the student's library is what trains), with learned
``W_Q, W_K (d_model, 4)`` and ``W_V (d_model, d_model)``; optionally the sinusoidal
position code (:func:`utils.positions.sinusoidal`) is added to ``x`` first.

**Tasks** (:data:`TEMPLATES`):

* ``"running"``: "<name> went to the <place>. He bought <food>." with :data:`NAMES`,
  :data:`PLACES` and :data:`FOODS`;
* ``"order"``: "<name> met <name> at the <place>. He bought <food>." (two different
  names), where "He" is always the *first* name: a rule of this data (readers of English
  lean the same way). Without a position code no self-attention can learn it: swapping
  the two names only swaps their rows, so "He" reads the same blend either way.

**Loss.** The output at "He" is compared (dot product) with the embedding of every training
name, and cross-entropy picks the sentence's antecedent. Only the row of "He" in the
attention matrix is trained; the other rows are whatever falls out.

Training runs on one CPU thread (:func:`fit`): these tensors are tiny, and waking a second
thread costs more than it saves (on a busy 2-core machine, 30-100x more).
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch._dynamo  # torch.optim imports it when an optimizer is built (~2 s): paid here, in
from torch import nn  # a notebook's set-up cell, rather than in its first training run

from .. import attention, positions
from ..examples.running import FEATURES, feature_vector
from . import loop

__all__ = [
    "D_ID",
    "FOODS",
    "HELD_OUT",
    "NAMES",
    "PLACES",
    "STEPS",
    "TEMPLATES",
    "PronounModel",
    "Vocabulary",
    "fit",
    "order_accuracy",
    "sample",
    "tokenize",
    "vocabulary",
]

#: training names (the running example's "John" is not among them)
NAMES = ("Tom", "Paul", "Mark", "Peter", "David", "James", "Robert", "Michael", "William",
         "Richard", "Thomas", "Daniel", "Matthew", "Andrew", "Joseph", "Steven", "Kevin", "Brian",
         "George", "Henry", "Jack", "Sam", "Ben", "Adam", "Luke", "Oscar", "Leo", "Max", "Noah",
         "Ryan", "Ethan", "Owen", "Hugo", "Felix", "Carl", "Dennis", "Eric", "Frank", "Greg",
         "Ivan")
PLACES = ("market", "bank", "park", "school", "office", "station", "library", "bakery",
          "museum", "cafe")
FOODS = ("bread", "eggs", "apples", "cheese", "rice", "tea", "coffee", "butter", "honey", "fish")
#: the running example's content words: never in a training sentence
HELD_OUT = {"name": "John", "place": "store", "food": "milk"}
#: the training sentences; <name>, <name2>, <place>, <food> are filled in at random
TEMPLATES = {
    "running": ("<name>", "went", "to", "the", "<place>", ".", "He", "bought", "<food>", "."),
    "order": ("<name>", "met", "<name2>", "at", "the", "<place>", ".", "He", "bought",
              "<food>", "."),
}
#: training steps of :func:`fit` per task (AdamW, lr 0.05): about 0.2-0.3 s on one thread
STEPS = {"running": 200, "order": 300}
#: size of each word's identity code
D_ID = 13
PRONOUN = "He"
_FIXED = ("went", "met", "to", "at", "the", ".", "He", "bought")
_SAME_FEATURES_AS = {"met": "went", "at": "to"}  # the two words the running example lacks


def tokenize(sentence: str) -> list[str]:
    """Words and punctuation: ``"John went to the store."`` -> ``[..., "store", "."]``."""
    return re.findall(r"\w+|[^\w\s]", sentence)


@dataclass(frozen=True)
class Vocabulary:
    """Every word of both tasks and its fixed embedding.

    ``words``: the words (training names first, then the held-out words, places, foods and
    the template's own words); ``embedding (len(words), d_model)`` float32: the designed
    features then the identity code; ``dims``: a label per embedding dimension.
    """

    words: tuple[str, ...]
    embedding: torch.Tensor
    dims: tuple[str, ...]

    @property
    def d_model(self) -> int:
        return self.embedding.shape[1]

    def ids(self, words: Sequence[str]) -> torch.Tensor:
        """Vocabulary indices (``long``) of ``words``; ``KeyError`` names an unknown word."""
        index = _index(self.words)
        unknown = [w for w in words if w not in index]
        if unknown:
            raise KeyError(f"not in the vocabulary: {unknown}")
        return torch.tensor([index[w] for w in words])

    def embed(self, words: Sequence[str]) -> torch.Tensor:
        """The embeddings ``(len(words), d_model)`` of ``words``."""
        return self.embedding[self.ids(words)]


@functools.lru_cache(maxsize=4)
def _index(words: tuple[str, ...]) -> dict[str, int]:
    return {w: i for i, w in enumerate(words)}


def _features(word: str) -> torch.Tensor:
    if word in NAMES or word == HELD_OUT["name"]:
        word = HELD_OUT["name"]
    elif word in PLACES or word == HELD_OUT["place"]:
        word = HELD_OUT["place"]
    elif word in FOODS or word == HELD_OUT["food"]:
        word = HELD_OUT["food"]
    return feature_vector(_SAME_FEATURES_AS.get(word, word), torch.float32)


def vocabulary(seed: int = 0) -> Vocabulary:
    """The vocabulary; identity codes are random unit vectors drawn from ``seed``."""
    words = (*NAMES, *HELD_OUT.values(), *PLACES, *FOODS, *_FIXED)
    codes = torch.randn(len(words), D_ID, generator=torch.Generator().manual_seed(seed))
    codes = codes / codes.norm(dim=1, keepdim=True)
    features = torch.stack([_features(w) for w in words])
    dims = (*FEATURES, *(f"id {i + 1}" for i in range(D_ID)))
    return Vocabulary(words, torch.cat([features, codes], dim=1), dims)


def sample(task: str, vocab: Vocabulary, batch_size: int,
           generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of training sentences of ``task``.

    Returns:
        ``(ids (batch_size, N), answer (batch_size,))``: vocabulary indices of the words,
        and the index in :data:`NAMES` of the name "He" refers to (the first name).
    """
    template = _template(task)
    n_names = len(NAMES)
    first = torch.randint(n_names, (batch_size,), generator=generator)
    second = (first + torch.randint(1, n_names, (batch_size,), generator=generator)) % n_names
    place = torch.randint(len(PLACES), (batch_size,), generator=generator)
    food = torch.randint(len(FOODS), (batch_size,), generator=generator)
    index = _index(vocab.words)
    ids = torch.tensor([index.get(w, 0) for w in template]).repeat(batch_size, 1)
    offsets = {"<name>": (first, 0), "<name2>": (second, 0),
               "<place>": (place, index[PLACES[0]]), "<food>": (food, index[FOODS[0]])}
    for pos, slot in enumerate(template):
        if slot in offsets:
            choice, start = offsets[slot]
            ids[:, pos] = choice + start  # names are the vocabulary's first words
    return ids, first


def _template(task: str) -> tuple[str, ...]:
    if task not in TEMPLATES:
        raise ValueError(f"task must be one of {sorted(TEMPLATES)}, got {task!r}")
    return TEMPLATES[task]


class PronounModel(nn.Module):
    """Self-attention with learned ``W_Q, W_K (d_model, d_k)`` and ``W_V (d_model, d_model)``
    over fixed embeddings, optionally plus the sinusoidal position code.

    Call it on vocabulary ids ``(..., N)``: returns ``(output (..., N, d_model),
    weights (..., N, N))`` of :func:`utils.attention.self_attention`.
    """

    def __init__(self, vocab: Vocabulary, task: str = "running", *, use_positions: bool = False,
                 d_k: int = 4):
        super().__init__()
        self.vocab, self.task, self.use_positions = vocab, task, use_positions
        self.template = _template(task)
        self.pronoun = self.template.index(PRONOUN)
        d = vocab.d_model
        self.register_buffer("embedding", vocab.embedding.clone())
        self.register_buffer("position_code", positions.sinusoidal(len(self.template), d)
                             if use_positions else torch.zeros(len(self.template), d))
        self.register_buffer("names", vocab.ids(NAMES))
        self.w_q = nn.Parameter(torch.randn(d, d_k) / math.sqrt(d))
        self.w_k = nn.Parameter(torch.randn(d, d_k) / math.sqrt(d))
        self.w_v = nn.Parameter(torch.randn(d, d) / math.sqrt(d))

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """``x (..., N, d_model)``: the words' embeddings (plus the position code if used)."""
        n = ids.shape[-1]
        if n != len(self.template):
            raise ValueError(f"ids must have {len(self.template)} words (the {self.task!r} "
                             f"template), got shape {tuple(ids.shape)}")
        return self.embedding[ids] + self.position_code

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return attention.self_attention(self.embed(ids), self.w_q, self.w_k, self.w_v)

    def name_logits(self, ids: torch.Tensor, names: Sequence[str] | None = None) -> torch.Tensor:
        """``(..., len(names))``: the output at "He" dotted with the embedding of each of
        ``names`` (default: the training :data:`NAMES`)."""
        out, _ = self(ids)
        candidates = self.names if names is None else self.vocab.ids(names)
        return out[..., self.pronoun, :] @ self.embedding[candidates].T

    @torch.no_grad()
    def attend(self, words: Sequence[str]) -> torch.Tensor:
        """The attention weights ``(N, N)`` (float64) on one sentence of words."""
        return self(self.vocab.ids(words))[1].double()

    @torch.no_grad()
    def answer(self, words: Sequence[str]) -> str:
        """The name, among the training names and the held-out "John", whose embedding the
        output at "He" matches best: who the model thinks "He" is."""
        names = (*NAMES, HELD_OUT["name"])
        return names[self.name_logits(self.vocab.ids(words), names).argmax().item()]


@torch.no_grad()
def order_accuracy(model: PronounModel, pairs: int = 64, seed: int = 12345) -> float:
    """Accuracy of "who is He?" on ``pairs`` "order" sentences, each in both orders
    ("A met B" and "B met A", same place and food). A model blind to order gives the same
    answer for both orders, so it scores at most 0.5 here."""
    ids, first = sample("order", model.vocab, pairs, torch.Generator().manual_seed(seed))
    swapped = ids.clone()
    swapped[:, 0], swapped[:, 2] = ids[:, 2], ids[:, 0]
    both = torch.cat([ids, swapped])
    answer = torch.cat([first, ids[:, 2]])  # names are the vocabulary's first words
    return (model.name_logits(both).argmax(-1) == answer).double().mean().item()


@contextlib.contextmanager
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def fit(task: str = "running", *, use_positions: bool = False, seed: int = 0,
        steps: int | None = None,
        lr: float = 0.05, weight_decay: float = 0.1, batch_size: int = 64,
        eval_every: int | None = None) -> loop.Run:
    """Train a :class:`PronounModel` on ``task`` with :func:`utils.training.train` (AdamW).

    Args:
        task: ``"running"`` or ``"order"`` (see :data:`TEMPLATES`).
        use_positions: add the sinusoidal position code to the embeddings.
        seed: the run's seed: identity codes, initial weights and sentences.
        steps, lr, weight_decay, batch_size: the training schedule (default steps:
            :data:`STEPS` for the task).
        eval_every: how often the metrics are recorded (default ``steps // 20``).

    Returns:
        :class:`utils.training.Run`. Its history's metrics: ``"He → John"``, the weight of
        "He" on "John" in the running sentence (``"running"``), or ``"accuracy"``,
        :func:`order_accuracy` (``"order"``).
    """
    template = _template(task)
    steps = STEPS[task] if steps is None else steps
    vocab = vocabulary(seed)
    if task == "running":
        running = vocab.ids(tokenize("John went to the store. He bought milk."))
        he, john = template.index(PRONOUN), 0

        def eval_fn(model):
            return {"He → John": model(running)[1][he, john].item()}
    else:
        def eval_fn(model):
            return {"accuracy": order_accuracy(model)}

    def loss_fn(model, batch):
        ids, answer = batch
        return nn.functional.cross_entropy(model.name_logits(ids), answer)

    with _one_thread():
        return loop.train(lambda: PronounModel(vocab, task, use_positions=use_positions),
                          lambda g: sample(task, vocab, batch_size, g), loss_fn, steps=steps,
                          seed=seed, lr=lr, optimizer="adamw", weight_decay=weight_decay,
                          eval_fn=eval_fn, eval_every=eval_every)
