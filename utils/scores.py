r"""Score functions: how much query i "matches" key j, before the softmax.

Every function maps ``q (..., Lq, d_q)`` and ``k (..., Lk, d_k)`` to scores
``(..., Lq, Lk)``; leading batch dimensions broadcast. Weights are ``(d_in, d_out)``
and applied as ``x @ w``, as everywhere in ``utils``.

===========  ==========================================  ==============================
name         score(q, k)                                 parameters
===========  ==========================================  ==============================
dot          :math:`q^\top k`                            none
scaled_dot   :math:`q^\top k / \sqrt{d}`                 none
general      :math:`q^\top W k` (Luong)                  ``w (d_q, d_k)``
additive     :math:`v^\top \tanh(q W_q + k W_k)`         ``w_q (d_q, h), w_k (d_k, h),
             (Bahdanau)                                  v (h,)``
concat       :math:`v^\top \tanh([q; k] W)` (Luong)      ``w (d_q + d_k, h), v (h,)``
cosine       :math:`\cos(q, k) / T`                      temperature ``T > 0``
===========  ==========================================  ==============================

Inputs must be finite. float16 and bfloat16 are computed in float32 (as torch's attention
does) and the scores returned in the inputs' (promoted) dtype; scores too large for that
dtype raise a ``ValueError`` rather than come back as ``inf``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from . import _validate

__all__ = [
    "SCORE_FUNCTIONS",
    "additive",
    "concat",
    "cosine",
    "dot",
    "general",
    "scaled_dot",
]

# Budget (in elements) for the (..., Lq, chunk, h) tensor of additive scores.
_ADDITIVE_CHUNK_ELEMENTS = 1 << 22


def _check_qk(q, k, *, same_d: bool) -> None:
    _validate.tensor("q", q, min_dim=2, finite=True)
    _validate.tensor("k", k, min_dim=2, finite=True)
    if same_d and q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q and k must have the same last dimension d, got q {tuple(q.shape)} "
            f"and k {tuple(k.shape)}"
        )
    try:
        _validate.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"the leading (batch) dimensions of q {tuple(q.shape)} and k {tuple(k.shape)} "
            "do not broadcast"
        ) from None


def _check_weight(name: str, w, shape: tuple[int, ...], meaning: str) -> None:
    _validate.tensor(name, w, finite=True)
    if tuple(w.shape) != shape:
        raise ValueError(f"{name} must have shape {meaning} = {shape}, got {tuple(w.shape)}")


def _work(*xs: torch.Tensor) -> tuple[torch.dtype, list[torch.Tensor]]:
    """The promoted dtype of ``xs``, and ``xs`` in at least float32 (no copy if they are)."""
    dtype = xs[0].dtype
    for x in xs[1:]:
        dtype = torch.promote_types(dtype, x.dtype)
    work = torch.promote_types(dtype, torch.float32)
    return dtype, [x if x.dtype == work else x.to(work) for x in xs]


def _finish(scores: torch.Tensor, dtype: torch.dtype, name: str) -> torch.Tensor:
    """``scores`` in ``dtype``; a ValueError if they overflow it (finite inputs, too large)."""
    out = scores if scores.dtype == dtype else scores.to(dtype)
    if not _validate.finite_sum(out) and not torch.isfinite(out).all():
        largest = scores.detach().abs().max().item()
        raise ValueError(
            f"the {name} scores of q and k overflow {dtype} (largest |score| {largest:.3g}, "
            f"{dtype} holds up to {torch.finfo(dtype).max:.3g}): scale q and k down or pass "
            "them in a wider dtype"
        )
    return out


def dot(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Dot-product scores ``q @ k^T``: ``(..., Lq, d), (..., Lk, d) -> (..., Lq, Lk)``."""
    _check_qk(q, k, same_d=True)
    dtype, (q, k) = _work(q, k)
    return _finish(q @ k.transpose(-2, -1), dtype, "dot")


def scaled_dot(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product scores ``q @ k^T / sqrt(d)`` (the Transformer's)."""
    _check_qk(q, k, same_d=True)
    dtype, (q, k) = _work(q, k)
    return _finish(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dtype, "scaled_dot")


def general(q: torch.Tensor, k: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Luong's "general" (bilinear) scores ``q W k^T``.

    Args:
        q: ``(..., Lq, d_q)``; k: ``(..., Lk, d_k)``; w: ``(d_q, d_k)``.

    Returns:
        ``(..., Lq, Lk)``.
    """
    _check_qk(q, k, same_d=False)
    _check_weight("w", w, (q.shape[-1], k.shape[-1]), "(d_q, d_k)")
    dtype, (q, k, w) = _work(q, k, w)
    return _finish((q @ w) @ k.transpose(-2, -1), dtype, "general")


def additive(
    q: torch.Tensor, k: torch.Tensor, w_q: torch.Tensor, w_k: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """Bahdanau's additive scores ``v^T tanh(q W_q + k W_k)``.

    The projections are computed once (``(..., Lq, h)`` and ``(..., Lk, h)``), then
    broadcast to ``(..., Lq, Lk, h)``, squashed with tanh and contracted with ``v``.
    That 4-D tensor is built a chunk of keys at a time, so memory stays bounded.

    Args:
        q: ``(..., Lq, d_q)``; k: ``(..., Lk, d_k)``.
        w_q: ``(d_q, h)``; w_k: ``(d_k, h)``; v: ``(h,)``.

    Returns:
        ``(..., Lq, Lk)``.
    """
    _check_qk(q, k, same_d=False)
    _validate.tensor("v", v, finite=True)
    if v.dim() != 1:
        raise ValueError(f"v must be a vector (h,), got shape {tuple(v.shape)}")
    h = v.shape[0]
    _check_weight("w_q", w_q, (q.shape[-1], h), "(d_q, h)")
    _check_weight("w_k", w_k, (k.shape[-1], h), "(d_k, h)")
    dtype, (q, k, w_q, w_k, v) = _work(q, k, w_q, w_k, v)
    return _finish(_additive(q @ w_q, k @ w_k, v), dtype, "additive")


def _additive(pq: torch.Tensor, pk: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``v^T tanh(pq_i + pk_j)`` for projected ``pq (..., Lq, h)``, ``pk (..., Lk, h)``."""
    batch = _validate.broadcast_shapes(pq.shape[:-2], pk.shape[:-2])
    lq, lk, h = pq.shape[-2], pk.shape[-2], pq.shape[-1]
    per_key = max(1, math.prod(batch) * lq * h)
    chunk = max(1, _ADDITIVE_CHUNK_ELEMENTS // per_key)
    pq = pq.unsqueeze(-2)  # (..., Lq, 1, h)
    out = []
    for start in range(0, lk, chunk):
        part = pk[..., start : start + chunk, :].unsqueeze(-3)  # (..., 1, c, h)
        out.append(torch.tanh(pq + part) @ v)  # (..., Lq, c)
    return torch.cat(out, dim=-1) if len(out) > 1 else out[0]


def concat(q: torch.Tensor, k: torch.Tensor, w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Luong's "concat" scores ``v^T tanh([q; k] W)``.

    ``[q; k] W = q W[:d_q] + k W[d_q:]``, so it is computed as :func:`additive` with
    the split weight, never building the ``(Lq, Lk, d_q + d_k)`` concatenation.

    Args:
        q: ``(..., Lq, d_q)``; k: ``(..., Lk, d_k)``.
        w: ``(d_q + d_k, h)``; v: ``(h,)``.

    Returns:
        ``(..., Lq, Lk)``.
    """
    _check_qk(q, k, same_d=False)
    _validate.tensor("v", v, finite=True)
    if v.dim() != 1:
        raise ValueError(f"v must be a vector (h,), got shape {tuple(v.shape)}")
    d_q = q.shape[-1]
    _check_weight("w", w, (d_q + k.shape[-1], v.shape[0]), "(d_q + d_k, h)")
    dtype, (q, k, w, v) = _work(q, k, w, v)
    return _finish(_additive(q @ w[:d_q], k @ w[d_q:], v), dtype, "concat")


def cosine(q: torch.Tensor, k: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Cosine-similarity scores ``cos(q_i, k_j) / temperature``, in ``[-1/T, 1/T]``.

    A zero vector has cosine 0 with everything (no division by zero).

    Args:
        q: ``(..., Lq, d)``; k: ``(..., Lk, d)``; temperature: ``> 0``.

    Returns:
        ``(..., Lq, Lk)``.
    """
    _check_qk(q, k, same_d=True)
    _validate.positive("temperature", temperature)
    dtype, (q, k) = _work(q, k)
    qn, kn = _unit(q), _unit(k)
    # Rounding can push |cos| a hair above 1; clamp so the bound is exact.
    return _finish((qn @ kn.transpose(-2, -1)).clamp_(-1.0, 1.0) / temperature, dtype, "cosine")


def _unit(x: torch.Tensor) -> torch.Tensor:
    """``x / |x|`` row-wise; a zero row stays zero. A norm whose square would overflow or
    underflow the dtype (huge or tiny entries) is taken after dividing that row by its
    largest entry; other rows are left as they are."""
    info = torch.finfo(x.dtype)
    norm = x.norm(dim=-1, keepdim=True)
    unsafe = ~(torch.isfinite(norm) & (norm > info.tiny**0.5 / info.eps))
    if unsafe.any():  # (zero rows too, which stay zero)
        top = x.abs().amax(dim=-1, keepdim=True)
        x = torch.where(unsafe, x / top.masked_fill(top == 0, 1.0), x)
        norm = x.norm(dim=-1, keepdim=True)
    return x / norm.clamp_min(info.tiny)


SCORE_FUNCTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "dot": dot,
    "scaled_dot": scaled_dot,
    "general": general,
    "additive": additive,
    "concat": concat,
    "cosine": cosine,
}
