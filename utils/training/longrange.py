"""What a sparse pattern costs in quality: copy the first token over a growing distance.

Chapter 5 counts what sparse attention saves; here it is trained, to see what it gives up.
A tiny model built on the course's own :func:`utils.attention.scaled_dot_product_attention`
and masks from :mod:`utils.masks` learns one long-range task with different patterns.

**Task** (data made in code, :func:`sample`). Sequences of :data:`LENGTH` = 13 tokens drawn
uniformly at random from :data:`VOCAB` = 8 symbols. Every position ``i`` must output the
**first** token of the sequence, which is ``i`` positions away: position ``i`` measures
accuracy at distance ``δ = i`` (:func:`accuracy_by_distance`). Chance is ``1/8``.

**Model** (:class:`LongRangeModel`). A learned token embedding plus a learned position
embedding (``d_model`` = :data:`D_MODEL`), then ``layers`` single-head attention layers, each
``x = x + W_o · attention(W_q x, W_k x, W_v x, mask)`` (the residual connection keeps what a
position already knew), and a linear read-out of the last ``x``. The mask is the pattern:

* ``"dense"``: no mask;
* ``"window"``: :func:`utils.masks.sliding_window_mask` with ``w`` = :data:`WINDOW` = 4;
* ``"window+global"``: the same window ``|`` :func:`utils.masks.global_mask` on position 0.

**What is guaranteed and what is learned.** With the window alone, position ``i``'s output
after ``L`` layers depends on the inputs ``j`` with ``|i - j| <= L·w`` only (the receptive
field of chapter 5, :func:`utils.cost.reach`): at distances beyond ``L·w`` the first token is
*invisible* and any model is at chance, ``1/8``, whatever it learns. That accuracy reaches
about 1 *within* the receptive field is what training shows: one layer copies directly; two
layers learn to relay the first token through the keys of a window that already read it.
The tests (``tests/test_training_longrange.py``) assert both for seeds 0-4 (held for 5-9).
(Three layers reach every distance of this task too, but need about 250 steps to be right
at distances 9-12 for every seed, too slow for the notebook; they are left out.)

Training runs on one CPU thread (:func:`fit`), like the other tiny models.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from .. import attention, masks
from . import loop

__all__ = [
    "BATCH_SIZE", "D_MODEL", "LENGTH", "LR", "PATTERNS", "STEPS", "VOCAB", "WINDOW",
    "LongRangeModel", "accuracy_by_distance", "evaluation_batch", "fit", "loss", "pattern_mask",
    "sample",
]

#: sequence length: distances 0..12
LENGTH = 13
#: number of token symbols (chance = 1/VOCAB)
VOCAB = 8
#: the sliding window's half-width w
WINDOW = 4
#: model width
D_MODEL = 16
#: the patterns :func:`pattern_mask` knows
PATTERNS = ("dense", "window", "window+global")
#: training schedule of :func:`fit` (Adam)
STEPS, LR, BATCH_SIZE = 100, 0.01, 64
_EVAL_SEED, _EVAL_SIZE = 12345, 2000


def sample(batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids (batch_size, LENGTH), targets (batch_size, LENGTH))``: every target is ``ids[:, 0]``."""
    ids = torch.randint(VOCAB, (batch_size, LENGTH), generator=generator)
    return ids, ids[:, :1].expand(-1, LENGTH)


def evaluation_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed held-out batch of 2000 sequences (its own seed)."""
    return sample(_EVAL_SIZE, torch.Generator().manual_seed(_EVAL_SEED))


def pattern_mask(pattern: str, n: int = LENGTH, window: int = WINDOW) -> torch.Tensor | None:
    """The ``(n, n)`` bool mask of ``pattern`` (None for ``"dense"``), from :mod:`utils.masks`."""
    if pattern == "dense":
        return None
    if pattern == "window":
        return masks.sliding_window_mask(n, window)
    if pattern == "window+global":
        return masks.sliding_window_mask(n, window) | masks.global_mask(n, [0])
    raise ValueError(f"pattern must be one of {PATTERNS}, got {pattern!r}")


class LongRangeModel(nn.Module):
    """Token + position embedding → ``layers`` × (residual single-head attention) → read-out.

    Call it on ids ``(B, L)``: returns ``(logits (B, L, VOCAB), weights)``, ``weights`` a list
    of the layers' attention weights ``(B, L, L)``.
    """

    def __init__(self, pattern: str = "window", layers: int = 1, d_model: int = D_MODEL):
        super().__init__()
        self.pattern, self.n_layers = pattern, layers
        self.register_buffer("mask", pattern_mask(pattern), persistent=False)
        self.tok = nn.Embedding(VOCAB, d_model)
        self.pos = nn.Parameter(torch.randn(LENGTH, d_model))
        self.qkv = nn.ModuleList(nn.Linear(d_model, 3 * d_model, bias=False)
                                 for _ in range(layers))
        self.proj = nn.ModuleList(nn.Linear(d_model, d_model, bias=False) for _ in range(layers))
        self.out = nn.Linear(d_model, VOCAB)

    def forward(self, ids: torch.Tensor):
        x = self.tok(ids) + self.pos[: ids.shape[-1]]
        weights = []
        for qkv, proj in zip(self.qkv, self.proj, strict=True):
            q, k, v = qkv(x).chunk(3, dim=-1)
            y, w = attention.scaled_dot_product_attention(q, k, v, mask=self.mask)
            x = x + proj(y)  # residual: a position keeps what it knew
            weights.append(w)
        return self.out(x), weights


def loss(model: LongRangeModel, batch) -> torch.Tensor:
    """Cross-entropy of every position's prediction of the first token."""
    ids, target = batch
    logits, _ = model(ids)
    return nn.functional.cross_entropy(logits.reshape(-1, VOCAB), target.reshape(-1))


def accuracy_by_distance(model: LongRangeModel, batch=None) -> torch.Tensor:
    """Accuracy at each distance ``δ = 0..LENGTH-1`` (position δ outputs token 0), ``(LENGTH,)``
    float, on :func:`evaluation_batch` by default."""
    ids, target = evaluation_batch() if batch is None else batch
    was = model.training
    model.eval()
    with torch.no_grad():
        logits, _ = model(ids)
    model.train(was)
    return (logits.argmax(-1) == target).float().mean(0)


def fit(pattern: str = "window", layers: int = 1, seed: int = 0, steps: int = STEPS) -> loop.Run:
    """Train :class:`LongRangeModel` ``(pattern, layers)`` for ``seed`` with :func:`utils.training.train`
    (Adam, lr :data:`LR`, batches of :data:`BATCH_SIZE`) on one CPU thread. History metric:
    ``"accuracy"`` (mean over distances)."""
    threads = torch.get_num_threads()
    with contextlib.ExitStack() as stack:
        torch.set_num_threads(1)
        stack.callback(torch.set_num_threads, threads)
        held = sample(256, torch.Generator().manual_seed(_EVAL_SEED + 1))  # for the curve
        return loop.train(
            lambda: LongRangeModel(pattern, layers),
            lambda g: sample(BATCH_SIZE, g),
            loss,
            steps=steps, seed=seed, lr=LR,
            eval_fn=lambda m: {"accuracy": accuracy_by_distance(m, held).mean().item()},
            eval_every=max(1, steps // 5),
        )
