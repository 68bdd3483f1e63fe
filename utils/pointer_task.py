"""A tiny pointer task, learned three ways: soft attention, REINFORCE and Gumbel-softmax.

Each example is a memory of ``length`` slots. Slot i holds a key ``k_i`` (random, d numbers)
and a value ``v_i``: the one-hot of a label (the labels are a random permutation, so every
slot's label is unique). A query q arrives; the answer is the label stored in the slot whose
key matches it best, ``target = argmax_i q·k_i``. The model scores each slot with one learned
matrix W, ``s_i = (q W)·k_i`` (W starts at zero: uniform attention), and reads the memory:

* ``"soft"``: c = Σ α_i v_i, trained by backpropagating the cross-entropy -log c[label];
* ``"reinforce"``: i ~ Categorical(α), c = v_i; reward R = 1 if c holds the right label;
  score-function gradient (R - b) ∇ log α_i with a leave-one-out batch-mean baseline b;
* ``"gumbel"``: c = Σ y_i v_i with y = Gumbel-softmax(s, τ), τ annealed geometrically from
  ``tau_start`` to ``tau_end``; the same cross-entropy, backpropagated through the sample.

All three are evaluated the same way: point at ``argmax_i s_i`` on a fixed held-out set.
Training is a few hundred Adam steps on a (d × d) matrix: well under a second on a CPU,
seeded and deterministic (data and sampling use their own generators, so the three methods
see exactly the same batches). ``torch.optim`` is not used: building an optimizer imports
much of torch's compiler stack (seconds); the Adam update is five lines below.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import _validate
from .hard import gumbel_softmax, hard_attention, soft_attention

__all__ = ["METHODS", "PointerBatch", "TrainResult", "anneal", "make_batch", "pointer_scores", "train"]

METHODS = ("soft", "reinforce", "gumbel")


@dataclass(frozen=True)
class PointerBatch:
    """``query (B, d)``, ``keys (B, L, d)``, ``values (B, L, L)`` (one-hot labels),
    ``target (B,)`` the slot to point at, ``label (B,)`` the label stored there."""

    query: torch.Tensor
    keys: torch.Tensor
    values: torch.Tensor
    target: torch.Tensor
    label: torch.Tensor


def make_batch(n: int, length: int = 16, d: int = 8,
               generator: torch.Generator | None = None) -> PointerBatch:
    """``n`` random memories of ``length`` slots with ``d``-dimensional keys."""
    for name, value in (("n", n), ("length", length), ("d", d)):
        _validate.positive(name, value, integer=True)
    keys = torch.randn(n, length, d, generator=generator)
    query = torch.randn(n, d, generator=generator)
    labels = torch.rand(n, length, generator=generator).argsort(-1)  # a permutation per row
    values = torch.nn.functional.one_hot(labels, length).float()
    target = (keys @ query[:, :, None]).squeeze(-1).argmax(-1)
    label = labels.gather(1, target[:, None]).squeeze(1)
    return PointerBatch(query, keys, values, target, label)


def pointer_scores(w: torch.Tensor, batch: PointerBatch) -> torch.Tensor:
    """Scores ``s_i = (q W)·k_i``: ``w (d, d)`` -> ``(B, L)``."""
    return ((batch.query @ w)[:, None, :] * batch.keys).sum(-1)


def anneal(step: int, steps: int, tau_start: float, tau_end: float) -> float:
    """Geometric temperature schedule: ``tau_start`` at step 0, ``tau_end`` at the last step."""
    if steps <= 1:
        return float(tau_end)
    return float(tau_start * (tau_end / tau_start) ** (step / (steps - 1)))


@dataclass
class TrainResult:
    """Learning curve of one method.

    ``eval_steps``: the steps at which the held-out accuracy ``accuracy`` (argmax pointer)
    was measured; ``reward``: per training step, the fraction of the batch whose read-out
    held the right label (for "soft": Σ α over the right slot, the expected reward);
    ``taus``: the temperature used at each step (Gumbel only); ``w``: the learned matrix.
    """

    method: str
    eval_steps: list[int] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    reward: list[float] = field(default_factory=list)
    taus: list[float] = field(default_factory=list)
    w: torch.Tensor | None = None

    @property
    def final_accuracy(self) -> float:
        return self.accuracy[-1]


def _loss(method: str, scores: torch.Tensor, batch: PointerBatch, tau: float,
          generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The training loss of ``method`` and the reward of each example ``(B,)``."""
    rows = torch.arange(scores.shape[0])
    if method == "soft":
        context, weights = soft_attention(scores, batch.values)
        loss = -context[rows, batch.label].clamp_min(1e-12).log().mean()
        return loss, weights[rows, batch.target].detach()
    if method == "reinforce":
        context, index = hard_attention(scores, batch.values, generator=generator)
        reward = context[rows, batch.label]  # 1 if the chosen slot holds the right label
        n = reward.shape[0]
        baseline = (reward.sum() - reward) / (n - 1)  # leave-one-out: independent of the sample
        log_p = torch.log_softmax(scores, -1)[rows, index]
        return -((reward - baseline) * log_p).mean(), reward
    y = gumbel_softmax(scores, tau, generator=generator)
    context = (y.unsqueeze(-2) @ batch.values).squeeze(-2)
    loss = -context[rows, batch.label].clamp_min(1e-12).log().mean()
    return loss, context[rows, batch.label].detach()


def train(method: str, steps: int = 200, batch_size: int = 32, length: int = 16, d: int = 8,
          lr: float = 0.02, tau_start: float = 2.0, tau_end: float = 0.1, seed: int = 0,
          eval_every: int = 10, n_test: int = 1000) -> TrainResult:
    """Train W for the pointer task with ``method`` ("soft", "reinforce" or "gumbel").

    Deterministic for a given ``seed``. Returns the learning curve (see :class:`TrainResult`).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    for name, value in (("steps", steps), ("eval_every", eval_every), ("n_test", n_test)):
        _validate.positive(name, value, integer=True)
    _validate.positive("batch_size", batch_size, integer=True)
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 (the baseline leaves one out), got {batch_size}")
    _validate.positive("lr", lr)
    _validate.positive("tau_start", tau_start)
    _validate.positive("tau_end", tau_end)
    data = torch.Generator().manual_seed(seed)
    sampling = torch.Generator().manual_seed(seed + 1)
    test = make_batch(n_test, length, d, torch.Generator().manual_seed(seed + 2))
    w = torch.zeros(d, d, requires_grad=True)
    m, v = torch.zeros(d, d), torch.zeros(d, d)  # Adam's running moments
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    result = TrainResult(method)
    for step in range(steps):
        if step % eval_every == 0:
            result.eval_steps.append(step)
            result.accuracy.append(_accuracy(w, test))
        batch = make_batch(batch_size, length, d, data)
        tau = anneal(step, steps, tau_start, tau_end)
        loss, reward = _loss(method, pointer_scores(w, batch), batch, tau, sampling)
        (grad,) = torch.autograd.grad(loss, w)
        with torch.no_grad():  # Adam
            m.mul_(beta1).add_(grad, alpha=1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            m_hat, v_hat = m / (1 - beta1 ** (step + 1)), v / (1 - beta2 ** (step + 1))
            w -= lr * m_hat / (v_hat.sqrt() + eps)
        result.reward.append(reward.float().mean().item())
        if method == "gumbel":
            result.taus.append(tau)
    result.eval_steps.append(steps)
    result.accuracy.append(_accuracy(w, test))
    result.w = w.detach().clone()
    return result


def _accuracy(w: torch.Tensor, batch: PointerBatch) -> float:
    """Fraction of ``batch`` where the argmax pointer hits the target slot."""
    with torch.no_grad():
        return (pointer_scores(w, batch).argmax(-1) == batch.target).float().mean().item()
