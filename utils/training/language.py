r"""A tiny causal language model on a made-up language, trained with and without the mask.

Chapter 4 says that without the causal mask a language model "would learn to copy instead
of to predict". This module lets the notebook show it: the same model, trained the same
way on the same sentences, once with :func:`utils.masks.causal_mask` and once without.

**The language** (made up, generated in code). :data:`WORDS` holds 12 words. A sentence has
:data:`LENGTH` = 12 words: the first two are free (any word); after that, each word must be
one of the **two** words that :data:`RULES` allows after the word *two places before it*:
``x[i] in RULES[x[i - 2]]``, both equally likely. So when word ``i + 1`` is predicted from
words ``0..i``, the best any honest predictor can do is a coin toss between two words: a
cross-entropy of :data:`FLOOR` ``= ln 2 ≈ 0.69`` nats. The first two words are pure
chance, so their prediction is not scored (:func:`lm_loss` scores words ``2..11``).

**The model** (:class:`TinyLM`): token embedding + learned position embedding, **one**
:class:`utils.multihead.MultiHeadAttention` layer (the course's own attention: its weights
come from :func:`utils.attention.scaled_dot_product_attention`) and a linear read-out to the
12 words. No residual, no MLP, no layer norm: the read-out sees only what attention
brought, so the attention weights show exactly what the model uses. With ``causal=True``
the layer gets ``mask=causal_mask(n)``; with ``causal=False`` every position reads every
other one, **including the word it must predict**.

**What training shows** (:func:`fit`, 100 Adam steps; asserted for seeds 0-4 in
``tests/test_training_language.py``, and seen for seeds 5-9 too):

* with the mask, the held-out loss ends near :data:`FLOOR` and position i attends to key
  ``i - 1`` (the word two places before the one it predicts, where the grammar's
  information is); sentences sampled from it follow the grammar;
* without the mask, position i attends to key ``i + 1``, the answer
  (:func:`weight_on_offset`), and its loss falls to about 0 at every position whose next
  word is in its input, far below :data:`FLOOR` (:func:`position_losses`). At the last
  position the next word is not in the input, and there its loss is above :data:`FLOOR`;
  generation is that position at every step, and the sentences it writes break the grammar;
* :func:`generate` with ``cache=True`` (a :class:`utils.kv_cache.KVCache`) writes the same
  words as recomputing the whole prefix at every step, with logits equal within round-off.

Training, evaluation and generation run on one CPU thread: these tensors are tiny, and waking a
second thread costs more than it saves (on a busy 2-core machine, 30-50x more).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import torch
from torch import nn

from .. import _validate
from ..kv_cache import KVCache
from ..masks import causal_mask
from ..multihead import MultiHeadAttention, merge_heads, split_heads
from . import loop

__all__ = [
    "BATCH",
    "FLOOR",
    "LENGTH",
    "LR",
    "RULES",
    "STEPS",
    "WORDS",
    "TinyLM",
    "attention_weights",
    "decode",
    "fit",
    "follows_grammar",
    "generate",
    "lm_loss",
    "position_losses",
    "sentences",
    "weight_on_offset",
]

#: the made-up language's words (token ids 0..11)
WORDS = ("ba", "di", "fo", "gu", "ka", "le", "mi", "no", "pu", "ra", "si", "tu")
#: RULES[w]: the two words that may come two places after word w (id w); 5 is invertible
#: mod 12, so every word has two successors and is the successor of exactly two words
RULES = tuple(((5 * w + 1) % 12, (5 * w + 6) % 12) for w in range(len(WORDS)))
#: words per sentence
LENGTH = 12
#: the least cross-entropy (nats) an honest next-word predictor can reach: ln 2
FLOOR = math.log(2)
#: training schedule of :func:`fit` (Adam): about 0.5 s of CPU on one thread of this machine
STEPS, LR, BATCH = 100, 1e-2, 64
#: how many words of a sentence are free (not scored)
FREE = 2

_ALLOWED = torch.zeros(len(WORDS), len(WORDS), dtype=torch.bool)
_ALLOWED[torch.arange(len(WORDS))[:, None], torch.tensor(RULES)] = True
_RULES = torch.tensor(RULES)


def sentences(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` random sentences of the language: ``(n, LENGTH)`` long token ids.

    The first two words are uniform; word i (i >= 2) is one of ``RULES[word i - 2]``, each
    with probability 1/2. All draws use ``generator``.
    """
    _validate.positive("n", n, integer=True)
    x = torch.empty(n, LENGTH, dtype=torch.long)
    x[:, :FREE] = torch.randint(0, len(WORDS), (n, FREE), generator=generator)
    choice = torch.randint(0, 2, (n, LENGTH), generator=generator)
    for i in range(FREE, LENGTH):
        x[:, i] = _RULES[x[:, i - 2], choice[:, i]]
    return x


def follows_grammar(tokens: torch.Tensor) -> torch.Tensor:
    """``(B,)`` bool: True where every word from position 2 on is allowed by :data:`RULES`
    after the word two places before it. ``tokens``: ``(B, n)`` long, ``n >= 3``."""
    _check_tokens("tokens", tokens)
    if tokens.shape[-1] <= FREE:
        raise ValueError(f"tokens needs more than {FREE} words to be judged, got shape "
                         f"{tuple(tokens.shape)}")
    return _ALLOWED[tokens[:, :-2], tokens[:, 2:]].all(dim=-1)


def decode(tokens: Sequence[int] | torch.Tensor, mark: bool = False) -> str:
    """One sentence's token ids as words: ``"ba ka di ..."``. With ``mark=True`` a word that
    breaks the grammar (not allowed after the word two places before it) is shown ``[like]
    this``."""
    ids = tokens.tolist() if isinstance(tokens, torch.Tensor) else list(tokens)
    words = [WORDS[i] for i in ids]
    if mark:
        words = [f"[{w}]" if i >= FREE and not _ALLOWED[ids[i - 2], ids[i]] else w
                 for i, w in enumerate(words)]
    return " ".join(words)


def _check_tokens(name: str, tokens) -> None:
    if not isinstance(tokens, torch.Tensor) or tokens.dtype != torch.long or tokens.dim() != 2:
        got = (f"{tokens.dtype} tensor of shape {tuple(tokens.shape)}"
               if isinstance(tokens, torch.Tensor) else type(tokens).__name__)
        raise TypeError(f"{name} must be a (batch, n) long tensor of word ids, got {got}")
    if tokens.numel() and (tokens.min() < 0 or tokens.max() >= len(WORDS)):
        raise ValueError(f"{name} holds ids outside 0..{len(WORDS) - 1}: "
                         f"{tokens.min().item()}..{tokens.max().item()}")


@contextlib.contextmanager
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class TinyLM(nn.Module):
    """One attention layer over token + position embeddings, then a linear read-out.

    ``logits = out(attention(e))`` with ``e = tok(x) + pos(0..n-1)`` and ``attention``
    a :class:`utils.multihead.MultiHeadAttention` (``mask=causal_mask(n)`` if ``causal``).

    Args:
        causal: apply the causal mask (True) or let every position read every other (False).
        d_model: embedding size D; n_heads: heads H (must divide D).
        max_len: longest sequence (positions 0..max_len-1 have an embedding).
    """

    def __init__(self, causal: bool = True, d_model: int = 32, n_heads: int = 1,
                 max_len: int = LENGTH) -> None:
        super().__init__()
        _validate.positive("max_len", max_len, integer=True)
        self.causal = bool(causal)
        self.tok = nn.Embedding(len(WORDS), d_model)
        self.pos = nn.Embedding(max_len, d_model)
        self.attn = MultiHeadAttention(d_model, n_heads)
        self.out = nn.Linear(d_model, len(WORDS))

    def embed(self, tokens: torch.Tensor, start: int = 0) -> torch.Tensor:
        """``(B, n, D)``: embeddings of ``tokens`` ``(B, n)`` at positions ``start..start+n-1``."""
        _check_tokens("tokens", tokens)
        n = tokens.shape[-1]
        if start + n > self.pos.num_embeddings:
            raise ValueError(f"positions {start}..{start + n - 1} exceed max_len="
                             f"{self.pos.num_embeddings}")
        return self.tok(tokens) + self.pos(torch.arange(start, start + n))

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``tokens (B, n)`` -> ``(logits (B, n, V), weights (B, H, n, n))``; the logits at
        position i predict word ``i + 1``."""
        e = self.embed(tokens)
        mask = causal_mask(tokens.shape[-1]) if self.causal else None
        a, weights = self.attn(e, e, e, mask=mask)
        return self.out(a), weights

    def step(self, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """The logits ``(B, n, V)`` of ``n`` new tokens ``(B, n)`` through a KV cache.

        The new tokens sit at positions ``len(cache) .. len(cache) + n - 1``; their keys and
        values (``(B, H, n, D/H)``) are appended to ``cache``, then their queries attend over
        everything cached (:meth:`utils.kv_cache.KVCache.attend`: bottom-right causal mask).
        """
        e = self.embed(tokens, start=len(cache))
        heads = self.attn.n_heads
        cache.append(split_heads(self.attn.w_k(e), heads), split_heads(self.attn.w_v(e), heads))
        a, _ = cache.attend(split_heads(self.attn.w_q(e), heads))
        return self.out(self.attn.w_o(merge_heads(a)))


def lm_loss(model: TinyLM, tokens: torch.Tensor) -> torch.Tensor:
    """Next-word cross-entropy (nats) of ``model`` on sentences ``tokens (B, LENGTH)``:
    the logits at positions ``1..n-2`` against words ``2..n-1`` (words 0 and 1 are free)."""
    logits, _ = model(tokens[:, :-1])
    scored = logits[:, FREE - 1:]
    return nn.functional.cross_entropy(scored.reshape(-1, scored.shape[-1]),
                                       tokens[:, FREE:].reshape(-1))


@torch.no_grad()
def position_losses(model: TinyLM, tokens: torch.Tensor) -> torch.Tensor:
    """``(n - 2,)``: the mean next-word cross-entropy (nats) at each scored position
    ``1..n-2`` of sentences ``tokens (B, n)`` (entry 0 is position 1, predicting word 2).

    The last entry is the position whose next word is **not** in the model's input
    (``tokens[:, :-1]``): there an unmasked model has nothing to copy from."""
    with _one_thread():
        logits, _ = model(tokens[:, :-1])
        ce = nn.functional.cross_entropy(logits.transpose(1, 2), tokens[:, 1:], reduction="none")
    return ce[:, FREE - 1:].mean(dim=0)


@torch.no_grad()
def attention_weights(model: TinyLM, tokens: torch.Tensor) -> torch.Tensor:
    """The attention weights ``(B, H, n, n)`` of ``model`` on ``tokens (B, n)``."""
    with _one_thread():
        return model(tokens)[1]


def weight_on_offset(weights: torch.Tensor, offset: int) -> float:
    """Mean attention weight of query i on key ``i + offset``, over every batch item, head
    and scored query ``i >= 1`` (query 0 predicts a free word) that has such a key.

    ``weights``: ``(..., n, n)``. ``offset=1``: the next word (the answer); ``-1``: the word
    before the current one (where the grammar's information is)."""
    mean = weights.reshape(-1, *weights.shape[-2:]).mean(dim=0)[FREE - 1:, :]
    return torch.diagonal(mean, offset + FREE - 1).mean().item()


def fit(causal: bool = True, *, seed: int = 0, steps: int = STEPS, lr: float = LR,
        batch_size: int = BATCH, d_model: int = 32, n_heads: int = 1,
        eval_every: int | None = None) -> loop.Run:
    """Train a :class:`TinyLM` on :func:`sentences` with :func:`utils.training.train` (Adam).

    Args:
        causal: train with the causal mask (True) or without it (False).
        seed: the run's seed (initial weights and training sentences).
        steps, lr, batch_size: the training schedule.
        d_model, n_heads: the model's size.
        eval_every: how often the held-out loss is recorded (default ``steps // 20``).

    Returns:
        :class:`utils.training.Run`; its history's metric ``"held-out loss"`` is
        :func:`lm_loss` on 256 sentences drawn from seed ``10_000 + seed`` (never trained on).
    """
    held_out = sentences(256, torch.Generator().manual_seed(10_000 + seed))

    def eval_fn(model):
        return {"held-out loss": lm_loss(model, held_out).item()}

    with _one_thread():
        return loop.train(lambda: TinyLM(causal, d_model, n_heads),
                          lambda g: sentences(batch_size, g), lm_loss, steps=steps, seed=seed,
                          lr=lr, eval_fn=eval_fn, eval_every=eval_every, foreach=True)


@torch.no_grad()
def generate(model: TinyLM, prompt: torch.Tensor, n_new: int, *,
             generator: torch.Generator | None = None, cache: bool = False,
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Write ``n_new`` words after ``prompt`` ``(B, n)``, sampling each from the model.

    Each new word is drawn from ``softmax(logits)`` of the last position
    (``torch.multinomial`` with ``generator``; the same generator state gives the same words).

    Args:
        cache: False: run the whole prefix through ``model`` at every step (full
            recomputation). True: one :class:`utils.kv_cache.KVCache` per call; the prompt
            goes through :meth:`TinyLM.step` at once, then one new word per step.

    Returns:
        ``(tokens (B, n + n_new), logits (B, n_new, V))``: the prompt and the new words, and
        the logits each new word was drawn from.
    """
    _check_tokens("prompt", prompt)
    _validate.positive("n_new", n_new, integer=True)
    if prompt.shape[-1] == 0:
        raise ValueError("prompt must hold at least one word")
    tokens, logits = prompt, []
    with _one_thread():
        kv = KVCache() if cache else None
        new = prompt
        for _ in range(n_new):
            if kv is None:
                last = model(tokens)[0][:, -1]
            else:
                last = model.step(new, kv)[:, -1]
            logits.append(last)
            new = torch.multinomial(last.softmax(dim=-1), 1, generator=generator)
            tokens = torch.cat([tokens, new], dim=-1)
    return tokens, torch.stack(logits, dim=1)
