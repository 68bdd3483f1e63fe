r"""A KV cache: causal attention one token (or one chunk) at a time, as in generation.

With a causal mask, the keys and values of a token never change once it is made: a new
token only *adds* one key and one value. Generation therefore keeps them in a cache and,
at each step, attends with the new query over everything cached so far:

.. math::
    o_t = \operatorname{softmax}\!\left(\frac{q_t [k_1, \dots, k_t]^\top}{\sqrt{d_k}}\right)
          [v_1, \dots, v_t]

which is exactly row t of full causal attention, at a cost of ``O(t d)`` per step instead of
recomputing the whole ``t × t`` matrix. Several new queries at once (a chunk, or the prompt)
are the **last** ``n_q`` of ``n_k`` positions, so their mask is bottom-right aligned:
:func:`utils.masks.causal_mask` ``(n_q, n_k)``.

This cache grows by concatenation, which copies it at every step (``O(t)``); production
caches preallocate ``max_len`` slots and write in place. The arithmetic is the same.
"""

from __future__ import annotations

import math

import torch

from . import _validate
from .attention import _attend, _project, _promote, _work_dtype
from .masks import causal_mask

__all__ = ["KVCache", "incremental_self_attention"]


class KVCache:
    """The keys ``(..., t, d_k)`` and values ``(..., t, d_v)`` of the ``t`` tokens seen so far."""

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def __len__(self) -> int:
        """Number of cached positions ``t``."""
        return 0 if self.k is None else self.k.shape[-2]

    def __repr__(self) -> str:
        if self.k is None:
            return "KVCache(empty)"
        return f"KVCache(k {tuple(self.k.shape)}, v {tuple(self.v.shape)})"

    def reset(self) -> None:
        """Forget everything (start a new sequence)."""
        self.k = self.v = None

    def append(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """Add the keys ``(..., n, d_k)`` and values ``(..., n, d_v)`` of ``n`` new tokens
        (finite; the cache keeps them as given, in their dtype)."""
        _validate.tensor("k", k, min_dim=2, finite=True)
        _validate.tensor("v", v, min_dim=2, finite=True)
        if k.shape[:-1] != v.shape[:-1]:
            raise ValueError(f"k {tuple(k.shape)} and v {tuple(v.shape)} must agree in every "
                             "dimension but the last (batch..., n new tokens)")
        if self.k is not None:
            for name, new, old in (("k", k, self.k), ("v", v, self.v)):
                if new.shape[:-2] != old.shape[:-2] or new.shape[-1] != old.shape[-1]:
                    raise ValueError(
                        f"{name} of shape {tuple(new.shape)} does not fit the cache's "
                        f"{tuple(old.shape)}: only dimension -2 (positions) may differ"
                    )
            k, v = torch.cat([self.k, k], dim=-2), torch.cat([self.v, v], dim=-2)
        self.k, self.v = k, v

    def attend(self, q: torch.Tensor, scale: float | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Causal attention of the **newest** ``n_q`` tokens' queries over the cache.

        Args:
            q: ``(..., n_q, d_k)``, the queries of the last ``n_q`` appended tokens
                (append their keys and values first), ``n_q <= len(self)``.
            scale: multiplies the scores; defaults to ``1 / sqrt(d_k)``.

        Computed as :func:`utils.attention.scaled_dot_product_attention` (float16 and
        bfloat16 in float32).

        Returns:
            ``(output (..., n_q, d_v), weights (..., n_q, t))`` with the bottom-right
            aligned mask ``causal_mask(n_q, t)``: query i sees keys ``0 .. t - n_q + i``.
        """
        if self.k is None:
            raise ValueError("the cache is empty: append the new token's k and v before attend")
        _validate.tensor("q", q, min_dim=2, finite=True)
        n_q, n_k = q.shape[-2], len(self)
        if q.shape[-1] != self.k.shape[-1]:
            raise ValueError(f"q has d_k={q.shape[-1]} (shape {tuple(q.shape)}) but the cached "
                             f"keys have d_k={self.k.shape[-1]} (k {tuple(self.k.shape)})")
        try:
            _validate.broadcast_shapes(q.shape[:-2], self.k.shape[:-2])
        except RuntimeError:
            raise ValueError(f"the leading (batch) dimensions of q {tuple(q.shape)} and of the "
                             f"cache's k {tuple(self.k.shape)} do not broadcast") from None
        if n_q > n_k:
            raise ValueError(f"q has {n_q} queries (shape {tuple(q.shape)}) but the cache holds "
                             f"only {n_k} positions: append their keys and values first")
        if scale is None:
            scale = 1.0 / math.sqrt(q.shape[-1])
        else:
            _validate.positive("scale", scale)
        return _attend(q, self.k, self.v, causal_mask(n_q, n_k), scale,
                       _promote(q, self.k, self.v))


def incremental_self_attention(
    x: torch.Tensor,
    w_q: torch.Tensor,
    w_k: torch.Tensor,
    w_v: torch.Tensor,
    chunk: int = 1,
) -> torch.Tensor:
    """Causal self-attention computed ``chunk`` tokens at a time through a :class:`KVCache`.

    Args:
        x: ``(..., N, d_model)``.
        w_q, w_k: ``(d_model, d_k)``; w_v: ``(d_model, d_v)``.
        chunk: tokens per step (1 = token-by-token generation).

    Like :func:`utils.attention.self_attention`, float16 and bfloat16 are computed (and
    cached) in float32 and the output is returned in the inputs' dtype.

    Returns:
        ``(..., N, d_v)``, equal to ``self_attention(x, ..., mask=causal_mask(N))[0]``.
    """
    _validate.tensor("x", x, min_dim=2, finite=True)
    _validate.projections("x", x, w_q=w_q, w_k=w_k, w_v=w_v)
    _validate.positive("chunk", chunk, integer=True)
    dtype = _promote(x, w_q, w_k, w_v)
    work = _work_dtype(dtype)
    cache, outputs = KVCache(), []
    for start in range(0, x.shape[-2], chunk):
        x_new = x[..., start:start + chunk, :]
        cache.append(_project(x_new, w_k, "x", "w_k", work), _project(x_new, w_v, "x", "w_v", work))
        outputs.append(cache.attend(_project(x_new, w_q, "x", "w_q", work))[0])
    return torch.cat(outputs, dim=-2).to(dtype)
