"""Score functions, trained: which of them still learn when ``d_k`` is large.

Chapter 6 measures, on random vectors, that unscaled dot-product scores spread like
``sqrt(d_k)`` and saturate the softmax. Here the five score functions are *trained* on one
task, at a small and a large ``d_k``, with plain SGD and with Adam, to see what that
saturation does to learning. Every score is computed by the course's own
:mod:`utils.scores` (``dot``, ``scaled_dot``, ``general``, ``additive``, ``cosine``).

**Task** (key–value retrieval, :func:`sample`). Each example holds :data:`L` = 8 keys, the
embeddings of 8 distinct symbols drawn from :data:`VOCAB` = 16, and one query, the embedding
of one of those 8 symbols. The query must put its attention weight on the key with the same
symbol. The values are one-hot (value ``j`` is ``e_j``), so the attention output *is* the
weight vector, and the loss is the squared error ``||alpha - e_target||^2`` (averaged over the
batch): the gradient reaches the scores only through the softmax, as it does from any layer
above an attention layer. Accuracy: the share of queries whose largest weight is on the right
key (:func:`evaluate`, on a fixed batch of 256 examples).

**Model** (:class:`ScoreLayer`). Fixed random symbol embeddings ``(VOCAB, D_IN)``, entries
N(0, 1); learned ``W_Q, W_K (D_IN, d_k)`` with entries N(0, 1/D_IN), so that the entries of
``q`` and ``k`` have variance about 1 (the assumption behind ``1/sqrt(d_k)``); then one score
function and a softmax over the 8 keys:

=============  ===============================================  ======================
name           score                                            its parameters (init)
=============  ===============================================  ======================
dot            ``q . k``                                        none
scaled_dot     ``q . k / sqrt(d_k)``                            none
general        ``q W k``                                        ``W (d_k, d_k)``, N(0, 1/d_k)
additive       ``v . tanh(q W_q + k W_k)``, hidden :data:`H`    N(0, 1/d_k), ``v`` N(0, 1/H)
cosine         ``beta cos(q, k)``, learned ``beta = exp(b)``    ``b = 0`` (``beta = 1``)
=============  ===============================================  ======================

The cosine score with a learned sharpness ``beta`` is the content-based addressing of the
Neural Turing Machine (Graves, Wayne & Danihelka 2014, "key strength" beta); Swin
Transformer V2 learns ``1/beta`` as a temperature.

**One run trains all ten layers** (:class:`AllScores`: 5 score functions x ``d_k`` in
:data:`D_KS`) side by side on the same batches, each with its own parameters and its own
loss; the loss minimised is their sum. Without gradient clipping and with element-wise
optimisers (SGD, Adam) the layers do not interact: each is updated exactly as if it were
trained alone on those batches. This keeps one run (:func:`fit`) well under the 3 s budget.

**What it shows** (asserted for seeds 0-4 in ``tests/test_training_scores.py``, also held
for seeds 5-9), after :data:`STEPS` = 60 steps:

* scaled dot and additive learn at both sizes with both optimizers (accuracy >= 0.99);
* dot and general at ``d_k = 256`` get stuck, with SGD *and* with Adam: some queries keep
  more than 0.99 of their weight on a wrong key, where the softmax passes almost no gradient
  (mean accuracy over the seeds < 0.9); at ``d_k = 16`` they learn (dot with Adam: most seeds);
* cosine with a learned ``beta``: with SGD sharp at ``d_k = 16`` (``beta`` about 10) but
  nearly uniform at 256 (the cosine's gradient shrinks like ``1/|q|``); with Adam right at
  both sizes, but ``beta`` reaches only about 2 (Adam moves ``log beta`` by about ``lr`` per
  step), so the right key gets about half of the weight.

Training runs on one CPU thread (these tensors are tiny).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable

import torch
from torch import nn

from .. import scores
from . import loop

__all__ = [  # noqa: RUF022 (constants first)
    "BATCH_SIZE", "D_IN", "D_KS", "FUNCTIONS", "H", "L", "LR", "STEPS", "VOCAB",
    "AllScores", "ScoreLayer", "evaluate", "evaluation_batch", "fit", "fit_seeds", "histories",
    "loss", "sample",
]

#: keys per example, symbols to draw them from, embedding size, additive's hidden size
L, VOCAB, D_IN, H = 8, 16, 16, 16
#: the score functions compared, in order (names of :mod:`utils.scores`)
FUNCTIONS = ("dot", "scaled_dot", "general", "additive", "cosine")
#: the two key sizes
D_KS = (16, 256)
#: training schedule of :func:`fit`: steps, batch size and learning rate per optimizer
STEPS, BATCH_SIZE = 60, 32
LR = {"sgd": 0.5, "adam": 0.01}
_EVAL_EVERY = 5
_EVAL_SEED, _EVAL_SIZE = 12345, 256


class ScoreLayer(nn.Module):
    """``W_Q``, ``W_K`` and one score function: symbol embeddings -> attention weights.

    Args:
        name: one of :data:`FUNCTIONS`.
        d_k: size of queries and keys.

    ``forward(x_q (B, D_IN), x_k (B, L, D_IN)) -> (B, L)`` weights over the keys (rows sum
    to 1); :meth:`scores` gives the scores before the softmax.
    """

    def __init__(self, name: str, d_k: int):
        super().__init__()
        if name not in FUNCTIONS:
            raise ValueError(f"name must be one of {FUNCTIONS}, got {name!r}")
        self.name, self.d_k = name, d_k
        self.w_Q = nn.Parameter(torch.randn(D_IN, d_k) / math.sqrt(D_IN))
        self.w_K = nn.Parameter(torch.randn(D_IN, d_k) / math.sqrt(D_IN))
        if name == "general":
            self.w = nn.Parameter(torch.randn(d_k, d_k) / math.sqrt(d_k))
        elif name == "additive":
            self.w_q = nn.Parameter(torch.randn(d_k, H) / math.sqrt(d_k))
            self.w_k = nn.Parameter(torch.randn(d_k, H) / math.sqrt(d_k))
            self.v = nn.Parameter(torch.randn(H) / math.sqrt(H))
        elif name == "cosine":
            self.log_beta = nn.Parameter(torch.zeros(()))

    def scores(self, x_q: torch.Tensor, x_k: torch.Tensor) -> torch.Tensor:
        """Scores ``(B, L)`` of the query against each key."""
        q, k = (x_q @ self.w_Q).unsqueeze(-2), x_k @ self.w_K  # (B, 1, d_k), (B, L, d_k)
        if self.name == "general":
            s = scores.general(q, k, self.w)
        elif self.name == "additive":
            s = scores.additive(q, k, self.w_q, self.w_k, self.v)
        elif self.name == "cosine":
            s = scores.cosine(q, k) * self.log_beta.exp()
        else:
            s = scores.SCORE_FUNCTIONS[self.name](q, k)
        return s.squeeze(-2)

    def forward(self, x_q: torch.Tensor, x_k: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.scores(x_q, x_k), dim=-1)


class AllScores(nn.Module):
    """A :class:`ScoreLayer` for every (function, d_k), sharing the fixed symbol embeddings.

    ``layers[f"{name}@{d_k}"]``; ``forward(symbols_q (B,), symbols_k (B, L))`` returns
    ``{label: (B, L) weights}``.
    """

    def __init__(self, d_ks: Iterable[int] = D_KS, functions: Iterable[str] = FUNCTIONS):
        super().__init__()
        self.register_buffer("embedding", torch.randn(VOCAB, D_IN))
        self.layers = nn.ModuleDict({f"{name}@{d}": ScoreLayer(name, d)
                                     for d in d_ks for name in functions})

    def forward(self, symbols_q: torch.Tensor, symbols_k: torch.Tensor) -> dict[str, torch.Tensor]:
        x_q, x_k = self.embedding[symbols_q], self.embedding[symbols_k]
        return {label: layer(x_q, x_k) for label, layer in self.layers.items()}


def sample(generator: torch.Generator, batch_size: int = BATCH_SIZE):
    """A batch: ``(symbols_q (B,), symbols_k (B, L), target (B,))``, ``long``.

    The keys are ``L`` distinct symbols; the query is the symbol of key ``target``.
    """
    symbols_k = torch.rand(batch_size, VOCAB, generator=generator).argsort(-1)[:, :L]
    target = torch.randint(L, (batch_size,), generator=generator)
    return symbols_k[torch.arange(batch_size), target], symbols_k, target


def _losses(model: AllScores, batch) -> dict[str, torch.Tensor]:
    symbols_q, symbols_k, target = batch
    one_hot = nn.functional.one_hot(target, L).to(model.embedding.dtype)
    return {label: ((a - one_hot) ** 2).sum(-1).mean()
            for label, a in model(symbols_q, symbols_k).items()}


def loss(model: AllScores, batch) -> torch.Tensor:
    """The sum over the layers of the mean squared error ``||alpha - e_target||^2``."""
    return sum(_losses(model, batch).values())


_EVAL_BATCH = None


def evaluation_batch():
    """The fixed evaluation batch (256 examples, its own seed)."""
    global _EVAL_BATCH
    if _EVAL_BATCH is None:
        _EVAL_BATCH = sample(torch.Generator().manual_seed(_EVAL_SEED), _EVAL_SIZE)
    return _EVAL_BATCH


def evaluate(model: AllScores) -> dict[str, float]:
    """Each layer's metrics on the evaluation batch: ``f"{label} accuracy"``, the share of
    queries whose largest weight is on the right key; ``f"{label} weight"``, the mean weight
    on it; ``f"{label} stuck"``, the share of queries with more than 0.99 of their weight
    on one *wrong* key (a saturated softmax: almost no gradient reaches their scores)."""
    symbols_q, symbols_k, target = evaluation_batch()
    rows = torch.arange(len(target))
    out = {}
    for label, a in model(symbols_q, symbols_k).items():
        out[f"{label} accuracy"] = (a.argmax(-1) == target).double().mean().item()
        out[f"{label} weight"] = a[rows, target].double().mean().item()
        top, where = a.max(-1)
        out[f"{label} stuck"] = ((top > 0.99) & (where != target)).double().mean().item()
    return out


@contextlib.contextmanager
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def fit(optimizer: str = "adam", *, seed: int = 0, steps: int = STEPS,
        d_ks: Iterable[int] = D_KS) -> loop.Run:
    """Train every score function at every ``d_k`` (one :class:`AllScores`) with ``optimizer``.

    ``"sgd"`` (lr 0.5) or ``"adam"`` (lr 0.01), :data:`STEPS` steps of :data:`BATCH_SIZE`
    examples; evaluated every 5 steps (:func:`evaluate`). Deterministic for ``seed``.
    """
    if optimizer not in LR:
        raise ValueError(f"optimizer must be one of {sorted(LR)}, got {optimizer!r}")
    d_ks = tuple(d_ks)
    with _one_thread():
        return loop.train(lambda: AllScores(d_ks), sample, loss, steps=steps, seed=seed,
                          lr=LR[optimizer], optimizer=optimizer, eval_fn=evaluate,
                          eval_every=_EVAL_EVERY)


def fit_seeds(optimizer: str = "adam", seeds: Iterable[int] = range(3), **kwargs) -> list[loop.Run]:
    """:func:`fit` for each seed."""
    return [fit(optimizer, seed=s, **kwargs) for s in seeds]


def histories(runs: Iterable[loop.Run], metric: str = "accuracy") -> dict[str, list[loop.History]]:
    """``{label: [History, ...]}``: each layer's ``metric`` curve (as the History's ``metric``),
    one History per run, ready for :func:`utils.plotting.learning_curves` (``metric=metric``)."""
    out: dict[str, list[loop.History]] = {}
    for run in runs:
        h = run.history
        for name, values in h.metrics.items():
            label, _, what = name.rpartition(" ")
            if what == metric:
                out.setdefault(label, []).append(loop.History(
                    seed=h.seed, eval_steps=list(h.eval_steps), metrics={metric: list(values)}))
    return out
