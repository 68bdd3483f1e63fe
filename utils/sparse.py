"""Sparse attention that is actually cheap: sliding-window attention computed blockwise.

A dense boolean band mask gives the right answer but still computes and stores all
``L x L`` scores: masking is not sparsity. :func:`sliding_window_attention` instead cuts
the sequence into blocks of ``b >= window`` positions. Every key a query in block i may
see lies in blocks i-1, i and i+1 (only i-1 and i when causal), so each block of queries
is scored against that small neighbourhood alone: ``(b, 3b)`` scores per block instead of
``(b, L)``. Time and memory are O(L * b * d) and O(L * b): linear in L.

Inside the neighbourhood, query row r and key column c are the positions
``i = ib + r`` and ``j = (i-1)b + c``, so ``i - j = b + r - c`` is the same for every
block: one small band mask of shape ``(b, 3b)`` serves them all (plus a mask of the
padding keys beyond either end of the sequence).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import _validate

__all__ = ["sliding_window_attention"]

# Blocks smaller than this waste time in per-block overhead; larger ones waste work.
_MIN_BLOCK = 32
# Process at most about this many score entries at a time, bounding temporary memory.
_CHUNK_ELEMENTS = 1 << 21


def _check(q, k, v, window, causal) -> None:
    for name, x in (("q", q), ("k", k), ("v", v)):
        _validate.tensor(name, x, min_dim=2)
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q and k must have the same last dimension d_k, got q {tuple(q.shape)} "
            f"and k {tuple(k.shape)}"
        )
    if not q.shape[-2] == k.shape[-2] == v.shape[-2]:
        raise ValueError(
            "sliding-window (self-)attention needs q, k and v of the same length L (dim -2), "
            f"got q {tuple(q.shape)}, k {tuple(k.shape)} and v {tuple(v.shape)}"
        )
    try:
        torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"the leading (batch) dimensions of q {tuple(q.shape)}, k {tuple(k.shape)} and "
            f"v {tuple(v.shape)} do not broadcast"
        ) from None
    _validate.positive("window", window, integer=True, allow_zero=True)
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__} {causal!r}")


def sliding_window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: int,
    causal: bool = False,
    block_size: int | None = None,
) -> torch.Tensor:
    """Local attention: query i sees keys j with ``|i - j| <= window`` (``0 <= i - j <= window``
    when causal), scaled by ``1/sqrt(d_k)``, without building an ``L x L`` matrix.

    Equals ``scaled_dot_product_attention(q, k, v, mask=sliding_window_mask(L, window, causal))``
    up to rounding, in O(L * window) time and memory.

    Args:
        q: ``(..., L, d_k)`` queries; k: ``(..., L, d_k)`` keys; v: ``(..., L, d_v)`` values
            (self-attention: one length L; leading dimensions broadcast).
        window: how far each query sees, ``>= 0``; 0 means each token sees only itself.
        causal: if True, only the past ``window`` tokens and the token itself.
        block_size: optional block size ``b`` (at least ``window``); by default
            ``max(window, 32)``.

    Returns:
        ``(..., L, d_v)``.
    """
    _check(q, k, v, window, causal)
    n = q.shape[-2]
    window = min(window, n - 1)  # a wider window sees no more keys
    if block_size is None:
        b = max(window, _MIN_BLOCK)
    else:
        _validate.positive("block_size", block_size, integer=True)
        if block_size < window:
            raise ValueError(f"block_size={block_size} must be >= window={window}")
        b = block_size
    b = min(b, n)
    n_blocks = -(-n // b)
    # Neighbourhood of query block i: blocks i - before .. i + after (none if one block).
    before = 1 if n_blocks > 1 else 0
    after = 1 if n_blocks > 1 and not causal else 0
    width = (before + 1 + after) * b  # keys per neighbourhood

    batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
    q, k, v = (x.to(dtype).expand(*batch, *x.shape[-2:]) for x in (q, k, v))

    pad = n_blocks * b - n
    # Queries pre-scaled (L*d multiplications instead of L*width): (..., nb, b, d).
    qb = (F.pad(q, (0, 0, 0, pad)) * (1.0 / math.sqrt(q.shape[-1]))).unflatten(-2, (n_blocks, b))
    # Keys/values padded by `before` blocks in front and `after` blocks (+ pad) behind, then
    # viewed (no copy) as overlapping neighbourhoods of `width` rows with step b.
    kp = F.pad(k, (0, 0, before * b, pad + after * b))
    vp = F.pad(v, (0, 0, before * b, pad + after * b))
    kt = kp.unfold(-2, width, b)  # (..., nb, d_k, width): already K^T per block
    vb = vp.unfold(-2, width, b).transpose(-2, -1)  # (..., nb, width, d_v)

    # Which (query row r, key column c) pairs of a neighbourhood are inside the band.
    offset = before * b + torch.arange(b)[:, None] - torch.arange(width)[None, :]  # i - j
    band = (offset >= 0) & (offset <= window) if causal else offset.abs() <= window
    # Key positions of each neighbourhood; those outside 0..n-1 are padding.
    key_pos = (torch.arange(n_blocks)[:, None] - before) * b + torch.arange(width)[None, :]
    blocked = ~(band & ((key_pos >= 0) & (key_pos < n))[:, None, :])  # (nb, b, width)
    blocked = blocked.to(q.device)

    out = torch.empty(*batch, n_blocks, b, v.shape[-1], dtype=dtype, device=q.device)
    # Chunk over blocks so the scores never exceed ~_CHUNK_ELEMENTS entries at once.
    per_block = max(1, math.prod(batch) * b * width)
    step = max(1, _CHUNK_ELEMENTS // per_block)
    for s in range(0, n_blocks, step):
        e = min(s + step, n_blocks)
        scores = qb[..., s:e, :, :] @ kt[..., s:e, :, :]  # (..., c, b, width)
        scores.masked_fill_(blocked[s:e], float("-inf"))
        # Stable softmax. Every real query sees at least itself, so its row max is finite
        # and its sum of exponentials is >= 1; only padding query rows (sliced off below)
        # can be fully blocked: clamping keeps them finite (0) instead of NaN.
        top = scores.amax(dim=-1, keepdim=True).clamp_min_(torch.finfo(dtype).min)
        scores.sub_(top).exp_()
        total = scores.sum(dim=-1, keepdim=True).clamp_min_(1.0)
        out[..., s:e, :, :] = (scores @ vb[..., s:e, :, :]).div_(total)
    return out.flatten(-3, -2)[..., :n, :]
