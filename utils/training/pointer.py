"""Chapter 7's pointer task, learned four ways: soft, REINFORCE, Gumbel-softmax, straight-through.

**Task** (data made in code, :func:`make_batch`). Each example is a memory of ``length`` slots.
Slot i holds a key ``k_i`` (random, ``d`` numbers) and a value ``v_i``: the one-hot of a label
(a random permutation, so every slot's label is unique). A query ``q`` arrives; the answer is
the label stored in the slot whose key matches it best, ``target = argmax_i q·k_i``.

**Model** (:class:`PointerModel`). One learned ``(d, d)`` matrix W scores every slot,
``s_i = (q W)·k_i``; W starts at zero (uniform attention). It reads the memory with the
course's own :mod:`utils.hard`, one way per ``method``:

* ``"soft"``: c = Σ α_i v_i (:func:`utils.hard.soft_attention`), loss -log c[label];
* ``"reinforce"``: i ~ Categorical(α), c = v_i (:func:`utils.hard.hard_attention`), reward
  R = 1 if c holds the right label; surrogate loss -(R - b) log α_i with a leave-one-out
  batch-mean baseline b (Williams 1992, as Mnih et al. 2014 and Xu et al. 2015 train hard
  attention);
* ``"gumbel"``: c = Σ y_i v_i, y = Gumbel-softmax(s, τ) (:func:`utils.hard.gumbel_softmax`;
  Jang et al. 2016, Maddison et al. 2016), the same cross-entropy backpropagated through the
  relaxed sample;
* ``"straight-through"``: c = v_i with i = argmax(s + g) (a hard, exactly one-hot read), the
  gradient that of the relaxed sample (``gumbel_softmax(..., hard=True)``: straight-through
  Gumbel-softmax, Jang et al. 2016 §2.2; straight-through estimator, Bengio et al. 2013).
  The read is one-hot, so log c[label] would be 0 or -inf: the loss is -c[label], minus the
  reward R (the objective REINFORCE maximises), whose gradient flows back through y.

τ (Gumbel and straight-through) is annealed geometrically from :data:`TAU_START` to
:data:`TAU_END` over the run (:func:`anneal`). Every method is evaluated the same way, on a
fixed held-out set: point at ``argmax_i s_i`` (metric ``"accuracy"``).

Training uses :func:`utils.training.train` (``torch.optim.Adam``): deterministic per seed,
data from the run's generator, and the sampling (hard draws, Gumbel noise) from torch's global
generator, which ``train`` seeds and restores. One CPU thread, like the other tiny models.
``tests/test_training_pointer.py`` asserts the chapter's claims for seeds 0-4.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch._dynamo  # torch.optim imports it when an optimizer is built (~2 s): paid here, in
from torch import nn  # a notebook's set-up cell, rather than in its first training run

from .. import _validate, hard
from . import loop

__all__ = [
    "BATCH_SIZE",
    "LENGTH",
    "LR",
    "METHODS",
    "STEPS",
    "TAU_END",
    "TAU_START",
    "D",
    "PointerBatch",
    "PointerModel",
    "accuracy",
    "anneal",
    "evaluation_batch",
    "fit",
    "loss",
    "make_batch",
]

#: the ways of reading the memory, in the order the chapter plots them
METHODS = ("soft", "reinforce", "gumbel", "straight-through")
#: memory slots (chance = 1/LENGTH) and key width
LENGTH, D = 16, 8
#: training schedule of :func:`fit` (Adam)
STEPS, LR, BATCH_SIZE = 100, 0.03, 32
#: the temperature schedule of the Gumbel methods
TAU_START, TAU_END = 2.0, 0.1
_EVAL_SEED, _EVAL_SIZE = 12345, 1000


@dataclass(frozen=True)
class PointerBatch:
    """``query (B, d)``, ``keys (B, L, d)``, ``values (B, L, L)`` (one-hot labels),
    ``target (B,)`` the slot to point at, ``label (B,)`` the label stored there."""

    query: torch.Tensor
    keys: torch.Tensor
    values: torch.Tensor
    target: torch.Tensor
    label: torch.Tensor


def make_batch(n: int, length: int = LENGTH, d: int = D,
               generator: torch.Generator | None = None) -> PointerBatch:
    """``n`` random memories of ``length`` slots with ``d``-dimensional keys (float32)."""
    for name, value in (("n", n), ("length", length), ("d", d)):
        _validate.positive(name, value, integer=True)
    keys = torch.randn(n, length, d, generator=generator)
    query = torch.randn(n, d, generator=generator)
    labels = torch.rand(n, length, generator=generator).argsort(-1)  # a permutation per row
    values = nn.functional.one_hot(labels, length).float()
    target = (keys @ query[:, :, None]).squeeze(-1).argmax(-1)
    label = labels.gather(1, target[:, None]).squeeze(1)
    return PointerBatch(query, keys, values, target, label)


def evaluation_batch() -> PointerBatch:
    """The fixed held-out set: 1000 memories (its own seed)."""
    return make_batch(_EVAL_SIZE, generator=torch.Generator().manual_seed(_EVAL_SEED))


def anneal(step: int, steps: int, tau_start: float = TAU_START, tau_end: float = TAU_END) -> float:
    """Geometric temperature schedule: ``tau_start`` at step 0, ``tau_end`` at step ``steps - 1``."""
    if steps <= 1:
        return float(tau_end)
    return float(tau_start * (tau_end / tau_start) ** (min(step, steps - 1) / (steps - 1)))


class PointerModel(nn.Module):
    """Scores ``s_i = (q W)·k_i`` with one learned ``W (d, d)``, zero at the start.

    ``scores(batch)`` -> ``(B, L)``. ``method`` says how :func:`loss` reads the memory;
    ``steps`` sets the τ schedule (the model counts its training steps in ``self.step``).
    """

    def __init__(self, method: str = "soft", d: int = D, steps: int = STEPS):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.method, self.steps, self.step = method, steps, 0
        self.w = nn.Parameter(torch.zeros(d, d))

    def scores(self, batch: PointerBatch) -> torch.Tensor:
        return ((batch.query @ self.w)[:, None, :] * batch.keys).sum(-1)

    @property
    def tau(self) -> float:
        """The temperature of the current step (Gumbel methods)."""
        return anneal(self.step, self.steps)


def loss(model: PointerModel, batch: PointerBatch) -> torch.Tensor:
    """The training loss of ``model.method`` on ``batch`` (advances the model's step counter)."""
    scores = model.scores(batch)
    rows = torch.arange(scores.shape[0])
    tau = model.tau
    model.step += 1
    if model.method == "soft":
        context, _ = hard.soft_attention(scores, batch.values)
    elif model.method == "reinforce":
        context, index = hard.hard_attention(scores, batch.values)
        reward = context[rows, batch.label]  # 1 if the chosen slot holds the right label
        baseline = (reward.sum() - reward) / (reward.shape[0] - 1)  # leave-one-out
        log_p = torch.log_softmax(scores, -1)[rows, index]
        return -((reward - baseline) * log_p).mean()
    else:  # Gumbel-softmax, relaxed or straight-through
        y = hard.gumbel_softmax(scores, tau, hard=model.method == "straight-through")
        context = (y.unsqueeze(-2) @ batch.values).squeeze(-2)
        if model.method == "straight-through":  # c is one-hot: log c[label] is 0 or -inf
            return -context[rows, batch.label].mean()  # maximise the reward, as REINFORCE
    return -context[rows, batch.label].clamp_min(1e-12).log().mean()


def accuracy(model: PointerModel, batch: PointerBatch | None = None) -> float:
    """Fraction of ``batch`` (default :func:`evaluation_batch`) where argmax_i s_i is the target."""
    batch = evaluation_batch() if batch is None else batch
    with torch.no_grad():
        return (model.scores(batch).argmax(-1) == batch.target).float().mean().item()


def fit(method: str, seed: int = 0, steps: int = STEPS, lr: float = LR,
        batch_size: int = BATCH_SIZE, eval_every: int = 10) -> loop.Run:
    """Train :class:`PointerModel` with ``method`` for ``seed`` (:func:`utils.training.train`,
    Adam) on one CPU thread. History: the loss per step and ``"accuracy"`` every
    ``eval_every`` steps on :func:`evaluation_batch`."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    _validate.positive("batch_size", batch_size, integer=True)
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 (the baseline leaves one out), got {batch_size}")
    test = evaluation_batch()
    threads = torch.get_num_threads()
    with contextlib.ExitStack() as stack:
        torch.set_num_threads(1)
        stack.callback(torch.set_num_threads, threads)
        return loop.train(
            lambda: PointerModel(method, steps=steps),
            lambda g: make_batch(batch_size, generator=g),
            loss,
            steps=steps, seed=seed, lr=lr,
            eval_fn=lambda m: {"accuracy": accuracy(m, test)},
            eval_every=eval_every,
        )
