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

The work goes a tile of blocks at a time, so temporary memory stays bounded whatever the
length: a tile's queries, keys and values are copied once into zero-padded buffers, and the
overlapping neighbourhoods are read from them through a strided view (no copy per block),
which batched matrix products (``bmm``) take as they are.
"""

from __future__ import annotations

import math

import torch

from . import _validate
from .attention import _work_dtype

__all__ = ["sliding_window_attention"]

# Default block size: half the window, within these bounds. Smaller blocks compute fewer
# scores outside the band ((2m+1)b per query against 2*window+1 needed, m = ceil(window/b))
# but make smaller, less efficient matrix products; b = window/2 measured best at window 64.
_MIN_BLOCK = 16
_MAX_BLOCK = 64
# Process at most about this many score entries at a time, bounding temporary memory.
_CHUNK_ELEMENTS = 1 << 20


def _check(q, k, v, window, causal) -> None:
    _validate.qkv(q, k, v, same_length=True)
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
    *,
    key_padding_mask: torch.Tensor | None = None,
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
        key_padding_mask: optional bool ``(B, L)``, True = a real token (may be attended),
            False = padding, B the first batch dimension (``(L,)`` if unbatched), as in
            :func:`utils.attention.scaled_dot_product_attention`. A query whose window holds
            only padding gets a zero output.

    q, k and v must be finite. float16 and bfloat16 are computed in float32, as torch does,
    and returned in their own dtype; scores too large even for that are handled (softmax is
    shift invariant), never NaN.

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

    batch = _validate.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    n_seq = math.prod(batch)
    pad = None  # (n_seq, L) bool, True = a padding key
    if key_padding_mask is not None:
        keep = _validate.key_padding_mask(key_padding_mask, tuple(batch), n,
                                          f"q {tuple(q.shape)} and k {tuple(k.shape)}")
        keep = keep.to(q.device).expand(*batch, 1, n).reshape(n_seq, n)
        pad = None if keep.all() else ~keep
    dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
    work = _work_dtype(dtype)  # float16/bfloat16 are computed in float32, as torch does
    opts = {"dtype": work, "device": q.device}
    scale = 1.0 / math.sqrt(d_k)
    # |q_i . k_j| <= d_k max|q| max|k|. If that could overflow, q and k are divided by their
    # largest entries and each row's scores are shifted by its maximum before those factors
    # are applied again (see _normalise): never NaN, however large the (finite) inputs.
    q_max, k_max = (_abs_max(x) for x in (q, k))
    boost = None
    if d_k * q_max * k_max > torch.finfo(work).max / 4:
        q, k = q.to(work) / q_max, k.to(work) / k_max
        boost, scale = (q_max, k_max, scale), 1.0
    # Contiguous (n_seq, L, d): views, unless an input is broadcast over the batch dimensions
    # or not contiguous (e.g. heads split by a transpose), then one copy.
    qf, kf, vf = (
        x.to(work).expand(*batch, *x.shape[-2:]).reshape(n_seq, n, -1).contiguous()
        for x in (q, k, v)
    )

    # Additive band mask, the same for every block: query row r and key column c of a
    # neighbourhood are i - j = before*b + r - c apart. Blocked entries get the most negative
    # finite number (exp gives exactly 0), so even a padding query row stays finite.
    neg = torch.finfo(work).min
    offset = before * b + torch.arange(b)[:, None] - torch.arange(width)[None, :]
    band = (offset >= 0) & (offset <= window) if causal else offset.abs() <= window
    bias = torch.zeros(b, width, **opts).masked_fill_(~band.to(q.device), neg)
    # Neighbourhoods of query blocks that reach past either end of the sequence.
    key_pos = (torch.arange(n_blocks)[:, None] - before) * b + torch.arange(width)[None, :]
    outside = ((key_pos < 0) | (key_pos >= n)).to(q.device)  # (n_blocks, width)
    edges = outside.any(dim=1).nonzero().flatten().tolist()

    out = torch.empty(n_seq, n, d_v, **opts)
    # Work a tile at a time, so temporary memory is about one tile's scores.
    tiles = _tiles(n_seq, n, b, n_blocks, before, after, width)
    for t0, t1, i0, i1 in tiles:
        q_rows = slice(i0 * b, min(i1 * b, n))
        if t1 - t0 == 1 and i0 >= before and (i1 + after) * b <= n:
            # An inner tile of one sequence: every neighbourhood lies inside it, so the
            # queries, keys, values and output are used in place, without any copy.
            t = t0
            n_win = i1 - i0
            start = (i0 - before) * b
            scores = torch.baddbmm(
                bias,
                qf[t, q_rows].view(n_win, b, d_k),
                kf[t, start:].as_strided((n_win, d_k, width), (b * d_k, 1, d_k)),
                alpha=scale,
            )
            if pad is not None:
                scores.masked_fill_(pad[t, start:].as_strided((n_win, 1, width), (b, 0, 1)), neg)
            weights = _normalise(scores, boost)
            vw = vf[t, start:].as_strided((n_win, width, d_v), (b * d_v, d_v, 1))
            torch.bmm(weights, vw, out=out[t, q_rows].view(n_win, b, d_v))
        else:
            y = _tile(qf[t0:t1], kf[t0:t1], vf[t0:t1], i0, i1, b, before, after, scale,
                      bias, outside, edges, neg, boost, None if pad is None else pad[t0:t1])
            out[t0:t1, q_rows] = y[:, : q_rows.stop - q_rows.start]
    if pad is not None:
        # A query whose window holds only padding attends to nothing: zero, as in dense
        # attention (its softmax above spread over the padding). Real keys per window from
        # a cumulative count.
        real = torch.nn.functional.pad((~pad).cumsum(-1), (1, 0))  # (n_seq, L + 1)
        i = torch.arange(n, device=q.device)
        lo, hi = (i - window).clamp_min(0), (i + (0 if causal else window)).clamp_max(n - 1)
        out[real[:, hi + 1] == real[:, lo]] = 0.0
    return out.view(*batch, n, d_v).to(dtype)


def _abs_max(x: torch.Tensor) -> float:
    """``max |x|`` from one ``aminmax`` pass (``vector_norm(ord=inf)`` is 20x slower here)."""
    low, high = torch.aminmax(x.detach())
    return max(-low.item(), high.item())


def _normalise(scores: torch.Tensor, boost: tuple[float, ...] | None) -> torch.Tensor:
    """Softmax over the last dimension. With ``boost = (q_max, k_max, scale)`` the true scores are
    ``scores * q_max * k_max * scale``, too large for the dtype: each row is shifted by its maximum
    first (softmax is shift invariant), then multiplied by the factors one at a time, so the
    entries far below the maximum become ``-inf`` (weight 0) and none becomes NaN."""
    if boost is not None:
        scores = scores - scores.amax(dim=-1, keepdim=True)
        for factor in boost:
            scores.mul_(factor)
    return torch.softmax(scores, dim=-1)


def _tiles(n_seq, n, b, n_blocks, before, after, width):
    """``(t0, t1, i0, i1)``: query blocks i0..i1-1 of sequences t0..t1-1, in tiles of about
    ``_CHUNK_ELEMENTS`` scores.

    Short sequences go several whole ones to a tile. A long sequence is cut into its
    inner blocks, whose neighbourhoods lie inside it (done in place, tile by tile), and
    its first and last few blocks, done for all sequences together in small tiles.
    """
    per_seq = (before + n_blocks + after) * b * width

    def seq_chunks(i0, i1):
        per = (before + (i1 - i0) + after) * b * width
        step = max(1, _CHUNK_ELEMENTS // per)
        return [(t, min(t + step, n_seq), i0, i1) for t in range(0, n_seq, step)]

    if per_seq <= _CHUNK_ELEMENTS:
        return seq_chunks(0, n_blocks)
    step = max(1, _CHUNK_ELEMENTS // (b * width))  # blocks per tile
    inner_lo = before
    inner_hi = max(inner_lo, n // b - after)  # blocks whose keys all lie inside
    tiles = []
    for i in range(0, inner_lo, step):
        tiles += seq_chunks(i, min(i + step, inner_lo))
    tiles += [(t, t + 1, i, min(i + step, inner_hi))
              for t in range(n_seq) for i in range(inner_lo, inner_hi, step)]
    for i in range(inner_hi, n_blocks, step):
        tiles += seq_chunks(i, min(i + step, n_blocks))
    return tiles


def _tile(q, k, v, i0, i1, b, before, after, scale, bias, outside, edges, neg, boost, pad):
    """Query blocks ``i0..i1-1`` of the ``(c, L, d)`` sequences q, k, v: ``(c, (i1-i0)*b, d_v)``.

    Each sequence's queries and keys are copied into a small zero-padded buffer of
    ``p = before + (i1 - i0) + after`` blocks: query block i then sees the key blocks
    ``i .. i + before + after`` of its own buffer, and across all c buffers, laid end to end,
    neighbourhood w starts at key block w. So one strided view of the keys (no copy) gives
    every neighbourhood with a single, uniform batch stride for ``bmm``. ``pad`` (c, L) bool,
    True at padding keys, or None, is laid out like the keys.
    """
    c, n, d_k = k.shape
    d_v = v.shape[-1]
    ci = i1 - i0
    p = before + ci + after
    width = (before + 1 + after) * b
    opts = {"dtype": bias.dtype, "device": bias.device}
    lo, hi = max((i0 - before) * b, 0), min((i1 + after) * b, n)  # keys in range
    at = lo - (i0 - before) * b  # where they go in the buffer
    tail = (before + after) * b if c > 1 else 0  # room for the last junk neighbourhoods
    kp = torch.zeros(c * p * b + tail, d_k, **opts)
    vp = torch.zeros(c * p * b + tail, d_v, **opts)
    kp[: c * p * b].view(c, p * b, d_k)[:, at : at + hi - lo] = k[:, lo:hi]
    vp[: c * p * b].view(c, p * b, d_v)[:, at : at + hi - lo] = v[:, lo:hi]
    q_hi = min(i1 * b, n)
    qp = torch.zeros(c, p * b, d_k, **opts)
    torch.mul(q[:, i0 * b : q_hi], scale, out=qp[:, : q_hi - i0 * b])  # pre-scaled queries
    # With one sequence only its ci real neighbourhoods are needed; with several, the
    # junk ones between them (before + after per sequence) come along, so the batch
    # stride stays uniform.
    n_win = ci if c == 1 else c * p
    qw = qp.view(c * p, b, d_k)[:n_win]
    kt = kp.as_strided((n_win, d_k, width), (b * d_k, 1, d_k))  # K^T per neighbourhood
    vw = vp.as_strided((n_win, width, d_v), (b * d_v, d_v, 1))
    scores = torch.baddbmm(bias, qw, kt)  # (n_win, b, width)
    if pad is not None:
        pp = torch.zeros(c * p * b + tail, dtype=torch.bool, device=pad.device)
        pp[: c * p * b].view(c, p * b)[:, at : at + hi - lo] = pad[:, lo:hi]
        scores.masked_fill_(pp.as_strided((n_win, 1, width), (b, 0, 1)), neg)
    blocks = scores.view(c, -1, b, width) if c > 1 else scores[None]
    for i in edges:
        if i0 <= i < i1:
            blocks[:, i - i0].masked_fill_(outside[i], neg)
    out = torch.bmm(_normalise(scores, boost), vw)  # (n_win, b, d_v)
    if c == 1:
        return out.view(1, ci * b, d_v)
    return out.view(c, p * b, d_v)[:, : ci * b]
