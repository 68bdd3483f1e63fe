"""Heads that learn two relations at once: each word outputs the word before it *and* the first word.

Chapter 3 designs three heads by hand (previous token, same kind, start). Here two of those
questions are *learned*, by a tiny model built on the course's own
:class:`utils.multihead.MultiHeadAttention` (so the student's ``split_heads`` /
``merge_heads`` / scaled dot-product attention is what trains), in well under a second.

**Task** (data made in code, :func:`sample`). Sequences of :data:`LENGTH` = 10 words drawn
at random (with repetition) from :data:`WORDS`, 16 words that include every word of the
running example "John went to the store. He bought milk.". At every position ``i`` the
model must output two words, as the two halves of its output (:func:`targets`):

* **previous**: the word at position ``i − 1`` (position 0, which has no previous word,
  outputs itself, as the designed previous-token head looks at itself there);
* **first**: the word at position 0.

**Model** (:class:`TwoRelationsModel`). A learned word embedding plus a fixed position code
→ ``MultiHeadAttention(d_model, n_heads)`` → a linear read-out to ``2 × len(WORDS)`` logits.
The position code is the designed example's (:func:`utils.examples.heads.position_code`:
``cos`` and ``sin`` of 60° and 90° times the position) in the first four columns, zeros in
the others, times :data:`POSITION_SCALE` = 4 (norm 4√2 ≈ 5.7, a little above a fresh word
embedding's, whose 16 entries are drawn from N(0, 1): norm ≈ 4). The designed heads read this code through
hand-set ``W_Q`` / ``W_K``; here every projection is learned. No residual connection and no
MLP: all the model outputs was read by attention. ``d_model`` = 16 whatever ``n_heads`` is
(``d_head = d_model / H``), so ``H = 1, 2, 4`` have the same number of parameters.

(A learned position embedding works too, but about 1 seed in 30 ends with both heads on the
first word; with this code, 40 seeds of 40 tried found one head per role within 70 of the 80
steps, for H = 2 and H = 4. Scales 2 to 5 work as well; 4 converges fastest without the loss
jumping at the end.)

**Why one head is not enough.** One head's weights over the keys sum to 1 and its output
is their weighted sum of the values, so it cannot put most of its weight on both ``i − 1``
and ``0``: it splits its weight between them (and the two words come out blended) or
settles on one (and the other half of the output is a guess). Two heads can each take one
position. :func:`head_roles` measures each head's mean weight on ``i − 1`` and on ``0``
(over the queries ``i ≥ 2``, where the two differ).

Importing this module also imports ``torch._dynamo``, which ``torch.optim`` imports anyway when
it makes its first optimizer (about 1.3 s here): the cost is paid with the notebook's imports,
not in the middle of its first training run.

Training and the measurements run on one CPU thread (:func:`fit`, :func:`roles`,
:func:`accuracy`, ...): these tensors are tiny, and waking a second thread costs more than it
saves (much more on a busy machine).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence

import torch
import torch._dynamo  # torch.optim imports it for its first optimizer: see the docstring
from torch import nn

from .. import multihead
from ..examples.heads import position_code
from . import loop

__all__ = [
    "BATCH_SIZE", "D_MODEL", "LENGTH", "LR", "POSITION_SCALE", "ROLES", "RUNNING", "STEPS",
    "WORDS", "TwoRelationsModel", "ablated", "accuracy", "encode", "evaluation_batch", "fit", "fit_seeds",
    "head_roles", "loss", "positions", "role_heads", "roles", "sample", "targets",
]

#: the vocabulary: the running example's nine words, then seven more
WORDS = ("John", "went", "to", "the", "store", ".", "He", "bought", "milk",
         "Mary", "She", "sold", "at", "a", "bread", "home")
#: the running example, which is also a sequence of the task
RUNNING = ("John", "went", "to", "the", "store", ".", "He", "bought", "milk", ".")
#: sequence length (that of the running example)
LENGTH = len(RUNNING)
#: model dimension, for every number of heads
D_MODEL = 16
#: the position code's size relative to the designed example's (whose entries are cos and sin)
POSITION_SCALE = 4.0
#: the two halves of the output, in order
ROLES = ("previous", "first")
#: training schedule of :func:`fit` (Adam)
STEPS, LR, BATCH_SIZE = 80, 0.02, 64
_EVAL_SEED, _EVAL_SIZE = 12345, 256


@contextlib.contextmanager
def _one_thread():
    """Run on one CPU thread (restored afterwards): these tensors are tiny, and on a busy
    machine waking a second thread costs many times what it saves. Also a decorator."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def encode(words: Sequence[str]) -> torch.Tensor:
    """Indices (``long``) of ``words`` in :data:`WORDS`; ``KeyError`` names an unknown word."""
    unknown = [w for w in words if w not in WORDS]
    if unknown:
        raise KeyError(f"not in WORDS: {unknown}")
    return torch.tensor([WORDS.index(w) for w in words])


def targets(ids: torch.Tensor) -> torch.Tensor:
    """The two answers at every position: ``(..., L) -> (..., L, 2)``.

    ``[..., i, 0]`` is the word at ``i − 1`` (at ``i = 0`` the word itself), ``[..., i, 1]``
    the word at position 0.
    """
    previous = torch.cat([ids[..., :1], ids[..., :-1]], dim=-1)
    first = ids[..., :1].expand_as(ids)
    return torch.stack([previous, first], dim=-1)


def sample(batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch ``(ids (batch_size, LENGTH), targets (batch_size, LENGTH, 2))`` of random words."""
    ids = torch.randint(len(WORDS), (batch_size, LENGTH), generator=generator)
    return ids, targets(ids)


def positions(n: int = LENGTH, d_model: int = D_MODEL) -> torch.Tensor:
    """The fixed position code ``(n, d_model)`` float32 added to the word embeddings.

    Columns 0-3: ``POSITION_SCALE ×`` :func:`utils.examples.heads.position_code` (``cos``,
    ``sin`` of 60° and 90° times the position); the other columns are 0.
    """
    code = torch.zeros(n, d_model)
    code[:, :4] = POSITION_SCALE * position_code(n, torch.float32)
    return code


class TwoRelationsModel(nn.Module):
    """Embeddings (learned word embedding + fixed position code) → ``MultiHeadAttention``
    → linear read-out.

    Call it on word indices ``(..., L)`` with ``L <= LENGTH``: returns ``(logits (..., L, 2,
    len(WORDS)), weights (..., H, L, L))``; ``logits[..., 0, :]`` scores the previous word,
    ``logits[..., 1, :]`` the first word.
    """

    def __init__(self, n_heads: int, d_model: int = D_MODEL):
        super().__init__()
        self.n_heads, self.d_model = n_heads, d_model
        self.embedding = nn.Embedding(len(WORDS), d_model)
        self.register_buffer("position", positions(LENGTH, d_model))
        self.attention = multihead.MultiHeadAttention(d_model, n_heads)
        self.readout = nn.Linear(d_model, len(ROLES) * len(WORDS))

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = ids.shape[-1]
        if n > LENGTH:
            raise ValueError(f"ids must have at most {LENGTH} positions, got shape "
                             f"{tuple(ids.shape)}")
        x = self.embedding(ids) + self.position[:n]
        out, weights = self.attention(x, x, x)
        return self.readout(out).unflatten(-1, (len(ROLES), len(WORDS))), weights

    @torch.no_grad()
    @_one_thread()
    def attend(self, words: Sequence[str] = RUNNING) -> torch.Tensor:
        """Every head's weights ``(H, L, L)`` (float64) on one sequence of words."""
        return self(encode(words))[1].double()

    @torch.no_grad()
    @_one_thread()
    def predict(self, words: Sequence[str] = RUNNING) -> list[tuple[str, str]]:
        """The model's ``(previous, first)`` words at every position of ``words``."""
        best = self(encode(words))[0].argmax(-1)  # (L, 2)
        return [(WORDS[p], WORDS[f]) for p, f in best.tolist()]


def loss(model: TwoRelationsModel, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy of both halves of the output, averaged over positions and halves."""
    ids, answers = batch
    logits, _ = model(ids)
    return nn.functional.cross_entropy(logits.flatten(0, -2), answers.flatten())


def evaluation_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed batch of 256 sequences (its own seed, never a training batch's)."""
    return sample(_EVAL_SIZE, torch.Generator().manual_seed(_EVAL_SEED))


def head_roles(weights: torch.Tensor) -> torch.Tensor:
    """How much each head reads the previous and the first position: ``(..., L, L) -> (..., 2)``.

    Entry 0: the mean weight of query ``i`` on key ``i − 1``; entry 1: on key ``0``; both
    averaged over the queries ``i = 2 .. L−1`` (where ``i − 1`` and ``0`` differ). Leading
    dimensions (batch, heads) are kept: average a batch first to get one row per head.
    """
    n = weights.shape[-1]
    if n < 3 or weights.shape[-2] != n:
        raise ValueError(f"weights must be (..., L, L) with L >= 3, got {tuple(weights.shape)}")
    i = torch.arange(2, n)
    return torch.stack([weights[..., i, i - 1].mean(-1), weights[..., i, 0].mean(-1)], dim=-1)


@torch.no_grad()
@_one_thread()
def roles(model: TwoRelationsModel) -> torch.Tensor:
    """:func:`head_roles` of every head on :func:`evaluation_batch`: ``(H, 2)``, float64."""
    was_training = model.training
    model.eval()
    _, weights = model(evaluation_batch()[0])
    model.train(was_training)
    return head_roles(weights.double().mean(0))


def role_heads(table: torch.Tensor, threshold: float = 0.9) -> dict[str, int | None]:
    """Which head plays each role: ``{"previous": h, "first": h}`` from a ``(H, 2)`` table.

    A head plays a role when its mean weight there is above ``threshold``; ``None`` when no
    head does (with ``H = 1``, at most one role can have a head: the weights sum to 1).
    """
    found = {}
    for r, role in enumerate(ROLES):
        column = table[:, r]
        best = int(column.argmax())
        found[role] = best if column[best] > threshold else None
    return found


@contextlib.contextmanager
def ablated(model: TwoRelationsModel, head: int | None):
    """Within the ``with`` block, head ``head``'s output is zeroed before ``W_O`` (ablated).

    The head still attends; only what it read is removed from the merged heads (its
    ``d_head`` columns, see :func:`utils.multihead.merge_heads`). ``None``: no change.
    """
    n_heads = model.attention.n_heads
    if head is None:
        yield model
        return
    if isinstance(head, bool) or not isinstance(head, int) or not 0 <= head < n_heads:
        raise ValueError(f"head must be an int in 0..{n_heads - 1}, got {head!r}")
    d_head = model.attention.d_head

    def zero_head(_layer, inputs):
        merged = inputs[0].clone()
        merged[..., head * d_head:(head + 1) * d_head] = 0.0
        return (merged,)

    handle = model.attention.w_o.register_forward_pre_hook(zero_head)
    try:
        yield model
    finally:
        handle.remove()


@torch.no_grad()
@_one_thread()
def accuracy(model: TwoRelationsModel, ablate: int | None = None) -> dict[str, float]:
    """How often each half of the output is right on :func:`evaluation_batch`.

    Returns ``{"previous": a, "first": b}``: the fraction of positions whose highest-scoring
    word is the answer, over all positions of the 256 sequences; ``ablate``: a head whose
    output is zeroed (:func:`ablated`). Chance is 1/16.
    """
    ids, answers = evaluation_batch()
    was_training = model.training
    model.eval()
    with ablated(model, ablate):
        logits, _ = model(ids)
    model.train(was_training)
    right = (logits.argmax(-1) == answers).double().mean(dim=(0, 1))  # (2,)
    return dict(zip(ROLES, right.tolist(), strict=True))


def fit(n_heads: int, *, seed: int = 0, steps: int = STEPS, lr: float = LR,
        batch_size: int = BATCH_SIZE, eval_every: int | None = None) -> loop.Run:
    """Train a :class:`TwoRelationsModel` with ``n_heads`` heads (:func:`utils.training.train`,
    Adam with ``fused=True``: one kernel for all parameters, a seventh faster here).

    Args:
        n_heads: number of heads H; must divide :data:`D_MODEL` (1, 2, 4, 8 or 16).
        seed: the run's seed (initial weights and training batches).
        steps, lr, batch_size: the schedule (defaults: 80 Adam steps, about a quarter of a
            second of one CPU thread).
        eval_every: how often the metrics are recorded (default: before and after training
            only; the training loss is recorded at every step anyway).

    Returns:
        :class:`utils.training.Run`. Its history's metrics, on :func:`evaluation_batch`:
        ``"eval loss"``; ``"previous"`` and ``"first"``, the largest mean weight any head
        puts on ``i − 1`` and on ``0`` (:func:`head_roles`).
    """
    if isinstance(n_heads, bool) or not isinstance(n_heads, int) or n_heads < 1 \
            or D_MODEL % n_heads:
        raise ValueError(f"n_heads must divide d_model={D_MODEL} (1, 2, 4, 8 or 16), "
                         f"got {n_heads!r}")
    evaluation = evaluation_batch()

    def eval_fn(model):
        _, weights = model(evaluation[0])
        table = head_roles(weights.mean(0))
        return {"eval loss": loss(model, evaluation).item(),
                "previous": table[:, 0].max().item(), "first": table[:, 1].max().item()}

    with _one_thread():
        return loop.train(lambda: TwoRelationsModel(n_heads), lambda g: sample(batch_size, g),
                          loss, steps=steps, seed=seed, lr=lr, eval_fn=eval_fn,
                          eval_every=eval_every or steps, fused=True)


def fit_seeds(n_heads: int, seeds: Iterable[int], **kwargs) -> list[loop.Run]:
    """:func:`fit` once per seed (same arguments): a list of runs."""
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds is empty; give at least one seed")
    return [fit(n_heads, seed=s, **kwargs) for s in seeds]
