"""Sparse attention that is actually cheap: sliding-window attention computed blockwise.

A dense boolean band mask gives the right answer but still computes and stores all
``L x L`` scores: masking is not sparsity. :func:`sliding_window_attention` instead cuts
the sequence into blocks of ``b`` queries. Every key a query of block i may see lies in
the ``m = ceil(window / b)`` blocks on either side of block i (only before it when
causal), so each block of queries is scored against that neighbourhood alone:
``(b, (2m+1)b)`` scores per block instead of ``(b, L)``. With ``b`` about the window,
time and memory are O(L * window * d) and O(L * window): linear in L.

Inside a neighbourhood, query row r and key column c are the positions ``i = ib + r``
and ``j = (i-m)b + c``, so ``i - j = mb + r - c`` is the same for every block: one small
band mask of shape ``(b, (2m+1)b)`` serves them all, plus a mask of the padding keys
past either end of the sequence in the first and last few blocks.

The neighbourhoods overlap, and they are read straight from the (padded) keys and values
through a strided view, so nothing is copied per block; the scores are computed a tile of
blocks at a time so that temporary memory stays bounded whatever the length.
"""

from __future__ import annotations

import math

import torch

from . import _validate

__all__ = ["sliding_window_attention"]

# Default block size: half the window, within these bounds. Smaller blocks compute fewer
# scores outside the band ((2m+1)b per query against 2*window+1 needed, m = ceil(window/b))
# but make smaller, less efficient matrix products; b = window/2 measured best at window 64.
_MIN_BLOCK = 16
_MAX_BLOCK = 64
# Process at most about this many score entries at a time, bounding temporary memory.
_CHUNK_ELEMENTS = 1 << 20


def _check_tensor(name: str, x) -> None:
    """``_validate.tensor(name, x, min_dim=2)``, with a cheaper NaN test for the usual case:
    NaN anywhere makes the sum NaN, so a non-NaN sum proves there is none (one fast
    reduction instead of an element-wise test and an ``any``)."""
    if (
        isinstance(x, torch.Tensor)
        and x.is_floating_point()
        and x.dim() >= 2
        and x.numel() > 0
        and not torch.isnan(x.sum())
    ):
        return
    _validate.tensor(name, x, min_dim=2)  # raises the standard message (or finds no NaN)


def _check(q, k, v, window, causal) -> None:
    for name, x in (("q", q), ("k", k), ("v", v)):
        _check_tensor(name, x)
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
        block_size: optional number of queries per block ``b`` (any size ``>= 1``; a query
            block is scored against the ``ceil(window / b)`` key blocks on either side of
            it). By default ``window / 2`` rounded up, kept within 16..64 and at most L.

    Returns:
        ``(..., L, d_v)``.
    """
    _check(q, k, v, window, causal)
    n, d_k, d_v = q.shape[-2], q.shape[-1], v.shape[-1]
    window = min(window, n - 1)  # a wider window sees no more keys
    if block_size is None:
        b = min(max(-(-window // 2), _MIN_BLOCK), _MAX_BLOCK)
    else:
        b = _validate.positive("block_size", block_size, integer=True)
    b = min(b, n)
    n_blocks = -(-n // b)
    # Key blocks each query block needs on either side of its own.
    before = min(-(-window // b), n_blocks - 1)
    after = 0 if causal else before
    width = (before + 1 + after) * b  # keys per neighbourhood
    # Each sequence is laid out as `before` zero blocks, its n_blocks blocks (zero-padded to
    # a multiple of b), `after` zero blocks: p blocks in all. Query block i of sequence t
    # then sees the keys of flat blocks t*p + i ... t*p + i + before + after, so one strided
    # view of the flat keys gives every neighbourhood with a single, uniform batch stride.
    p = before + n_blocks + after

    batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    n_seq = math.prod(batch)
    dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
    opts = {"dtype": dtype, "device": q.device}

    # Padding positions are zeroed; everything else is overwritten by the copies below.
    qp = torch.empty(n_seq, p * b, d_k, **opts)
    qp[:, n:].zero_()
    # Queries pre-scaled by 1/sqrt(d_k) as they are copied in.
    torch.mul(q.expand(*batch, n, d_k), 1.0 / math.sqrt(d_k),
              out=qp.view(*batch, p * b, d_k)[..., :n, :])
    tail = (before + after) * b  # lets the last sequence's junk windows stay in bounds
    lo = before * b
    kp = torch.empty(n_seq * p * b + tail, d_k, **opts)
    vp = torch.empty(n_seq * p * b + tail, d_v, **opts)
    for xp in (kp, vp):
        xp[n_seq * p * b :].zero_()
        seqs = xp[: n_seq * p * b].view(n_seq, p * b, -1)
        seqs[:, :lo].zero_()
        seqs[:, lo + n :].zero_()
    kp[: n_seq * p * b].view(*batch, p * b, d_k)[..., lo : lo + n, :] = k
    vp[: n_seq * p * b].view(*batch, p * b, d_v)[..., lo : lo + n, :] = v
    n_win = n_seq * p  # one per flat block; each sequence's last before+after are junk
    qw = qp.view(n_win, b, d_k)
    kt = kp.as_strided((n_win, d_k, width), (b * d_k, 1, d_k))  # K^T per neighbourhood
    vw = vp.as_strided((n_win, width, d_v), (b * d_v, d_v, 1))

    # Additive band mask, the same for every block: query row r, key column c are
    # positions i - j = before*b + r - c apart. Blocked entries get the most negative
    # finite number (exp gives exactly 0), so even a junk row stays finite.
    neg = torch.finfo(dtype).min
    offset = before * b + torch.arange(b)[:, None] - torch.arange(width)[None, :]
    band = (offset >= 0) & (offset <= window) if causal else offset.abs() <= window
    bias = torch.zeros(b, width, **opts).masked_fill_(~band.to(q.device), neg)
    # Neighbourhoods of real query blocks that reach past either end of the sequence.
    key_pos = (torch.arange(n_blocks)[:, None] - before) * b + torch.arange(width)[None, :]
    outside = ((key_pos < 0) | (key_pos >= n)).to(q.device)  # (n_blocks, width)
    edges = outside.any(dim=1).nonzero().flatten().tolist()

    out = torch.empty(n_seq, p * b, d_v, **opts)
    # Tiles of whole sequences, or of blocks of one sequence when a sequence alone is over
    # the budget: either way a contiguous range of flat neighbourhoods.
    per_seq = p * b * width
    if per_seq <= _CHUNK_ELEMENTS:
        step = _CHUNK_ELEMENTS // per_seq
        tiles = [(t, min(t + step, n_seq), 0, p) for t in range(0, n_seq, step)]
    else:
        step = max(1, _CHUNK_ELEMENTS // (b * width))
        tiles = [(t, t + 1, i, min(i + step, n_blocks)) for t in range(n_seq)
                 for i in range(0, n_blocks, step)]
    for t0, t1, i0, i1 in tiles:
        s, e = t0 * p + i0, (t1 - 1) * p + i1
        scores = torch.baddbmm(bias, qw[s:e], kt[s:e])  # (tile, b, width)
        tile = scores.view(t1 - t0, i1 - i0, b, width)
        for i in edges:
            if i0 <= i < i1:
                tile[:, i - i0].masked_fill_(outside[i], neg)
        weights = torch.softmax(scores, dim=-1)
        torch.bmm(weights, vw[s:e], out=out.view(n_win, b, d_v)[s:e])
    return out.view(*batch, p * b, d_v)[..., :n, :]  # a view: no copy
