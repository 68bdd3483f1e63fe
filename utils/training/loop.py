"""A seeded training loop on ``torch.optim``: the one loop every chapter's tiny model uses."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import _validate

__all__ = ["History", "Run", "train", "train_seeds"]

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


@dataclass
class History:
    """The learning curve of one run.

    ``loss[t]``: training loss at step ``t`` (a float per step); ``eval_steps``: the steps at
    which ``eval_fn`` ran (after that many updates, so 0 is the untrained model and the last
    entry is ``steps``); ``metrics[name]``: the value of each metric at those steps;
    ``seed``, ``seconds``: the seed of the run and its wall-clock time (informational only).
    """

    seed: int
    loss: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0

    def final(self, name: str = "loss") -> float:
        """The last value of ``name`` (``"loss"`` or a metric's name)."""
        values = self.loss if name == "loss" else self.metrics.get(name)
        if not values:
            known = ["loss", *self.metrics]
            raise KeyError(f"no values recorded for {name!r}; recorded: {known}")
        return values[-1]


@dataclass
class Run:
    """A trained ``model`` (in eval mode) and its :class:`History`."""

    model: torch.nn.Module
    history: History


def train(
    model_fn: Callable[[], torch.nn.Module],
    batch_fn: Callable[[torch.Generator], Any],
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor],
    *,
    steps: int,
    seed: int = 0,
    lr: float = 1e-2,
    optimizer: str = "adam",
    eval_fn: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    eval_every: int | None = None,
    clip: float | None = None,
    threads: int | None = 1,
    **optimizer_kwargs,
) -> Run:
    """Build a model and train it, deterministically for ``seed``.

    Args:
        model_fn: ``() -> nn.Module``, called once after seeding (so the initial weights
            depend on ``seed`` only).
        batch_fn: ``(generator) -> batch``, draws one training batch; use the generator
            for every random draw (it is seeded from ``seed``).
        loss_fn: ``(model, batch) -> scalar tensor``, the loss to minimise.
        steps: number of optimizer updates (``int > 0``).
        seed: the run's seed: model initialisation, data and any sampling in the model
            (torch's global generator is seeded inside and restored afterwards, so the
            caller's random state is unchanged).
        lr: learning rate (``> 0``).
        optimizer: ``"adam"`` (default), ``"adamw"`` or ``"sgd"``: ``torch.optim.Adam``,
            ``AdamW`` or ``SGD``; ``optimizer_kwargs`` are passed on (e.g. ``momentum``).
        eval_fn: ``(model) -> {name: float}``, run under ``torch.no_grad()`` in eval mode
            before the first update, every ``eval_every`` updates and after the last.
        eval_every: default ``max(1, steps // 20)``.
        clip: if given, clip the gradients' global norm to ``clip``
            (``torch.nn.utils.clip_grad_norm_``).
        threads: torch's intra-op threads while training (restored afterwards); ``None``
            keeps the current setting. Default 1: the course's models are so small that
            a second thread only adds synchronisation, and on a busy 2-core laptop it
            made a run several times slower.

    Returns:
        :class:`Run` with the trained model (in eval mode) and its :class:`History`.

    Raises:
        ValueError: a bad ``steps``, ``lr``, ``eval_every``, ``clip`` or ``optimizer``, or a
            loss that is not a finite scalar (the message gives the step).
    """
    _validate.positive("steps", steps, integer=True)
    _validate.positive("lr", lr)
    if eval_every is None:
        eval_every = max(1, steps // 20)
    _validate.positive("eval_every", eval_every, integer=True)
    if clip is not None:
        _validate.positive("clip", clip)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    if threads is not None:
        _validate.positive("threads", threads, integer=True)
    history = History(seed=seed)
    start = time.perf_counter()
    saved_threads = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        model = _train(model_fn, batch_fn, loss_fn, steps, seed, lr, optimizer, eval_fn,
                       eval_every, clip, history, optimizer_kwargs)
    finally:
        torch.set_num_threads(saved_threads)
    history.seconds = time.perf_counter() - start
    return Run(model, history)


def _train(model_fn, batch_fn, loss_fn, steps, seed, lr, optimizer, eval_fn, eval_every, clip,
           history, optimizer_kwargs) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_fn()
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model_fn must return a torch.nn.Module, got {type(model).__name__}")
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("model_fn returned a model with no trainable parameters")
        opt = OPTIMIZERS[optimizer](params, lr=lr, **optimizer_kwargs)
        data = torch.Generator().manual_seed(seed)
        for step in range(steps):
            if eval_fn is not None and step % eval_every == 0:
                _evaluate(model, eval_fn, step, history)
            model.train()
            loss = loss_fn(model, batch_fn(data))
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise ValueError(f"loss_fn must return a scalar tensor, got {loss!r}")
            value = loss.item()
            if not math.isfinite(value):
                raise ValueError(f"the loss is {value} at step {step} (seed {seed}): lower lr "
                                 f"(now {lr}) or set clip")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            history.loss.append(value)
        if eval_fn is not None:
            _evaluate(model, eval_fn, steps, history)
    model.eval()
    return model


def _evaluate(model: torch.nn.Module, eval_fn, step: int, history: History) -> None:
    model.eval()
    with torch.no_grad():
        values = eval_fn(model)
    if not isinstance(values, dict):
        raise TypeError(f"eval_fn must return a dict of name -> float, got {type(values).__name__}")
    history.eval_steps.append(step)
    for name, value in values.items():
        history.metrics.setdefault(name, []).append(float(value))


def train_seeds(seeds: Iterable[int], *args, **kwargs) -> list[Run]:
    """:func:`train` once per seed in ``seeds`` (same arguments); a list of runs."""
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds is empty; give at least one seed")
    return [train(*args, seed=s, **kwargs) for s in seeds]
