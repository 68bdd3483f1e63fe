r"""Scaled dot-product attention and its two everyday forms, self- and cross-attention.

.. math::
    \operatorname{Attention}(Q, K, V) = \operatorname{softmax}\!\left(\frac{QK^\top}{\sqrt{d_k}}\right) V

Conventions used across the course:

* tensors are ``(..., L, d)``: any leading batch/head dimensions broadcast;
* weight matrices have shape ``(d_in, d_out)`` and are applied as ``x @ w``;
* boolean masks mean **True = may attend** (as in ``torch.nn.functional.scaled_dot_product_attention``);
* a key padding mask is its own argument, ``key_padding_mask`` ``(B, Lk)``: True = a real
  token (the opposite of ``torch.nn.MultiheadAttention``'s, where True = padding);
* a query whose keys are all masked gets zero weights and a zero output, never NaN;
* inputs must be finite (NaN or inf raise a ``ValueError`` naming the argument). float16 and
  bfloat16 are computed in float32, as torch does, and returned in their own dtype; scores
  too large even for that are handled (softmax is shift invariant), never NaN.
"""

from __future__ import annotations

import math

import torch

from . import _validate

__all__ = ["cross_attention", "scaled_dot_product_attention", "self_attention", "softmax"]


def softmax(scores: torch.Tensor, dim: int = -1, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Numerically stable softmax of ``scores`` along ``dim``.

    Args:
        scores: any shape; may hold ``-inf`` (treated as masked), not NaN or ``+inf``.
        dim: the dimension that sums to 1.
        mask: optional bool tensor broadcastable to ``scores``; True = keep.

    Returns:
        Tensor of ``scores``' shape. Masked entries are exactly 0, and a slice
        whose entries are all masked is all zeros (not NaN).
    """
    if not isinstance(scores, torch.Tensor) or scores.numel() == 0 or not _validate.finite_sum(scores):
        # the full checks only when one cheap reduction says something is off
        _validate.tensor("scores", scores)
        if torch.isposinf(scores).any():
            raise ValueError(f"scores contains +inf (shape {tuple(scores.shape)})")
        has_neg_inf = True
    else:
        _validate.tensor("scores", scores, check_nan=False)
        has_neg_inf = False
    dim = _validate.dim("dim", scores, dim)
    if mask is not None:
        _validate.bool_mask("mask", mask, tuple(scores.shape), "the shape of scores")
        scores = scores.masked_fill(~mask, float("-inf"))
    elif not has_neg_inf:
        # finite scores: torch's fused softmax subtracts the slice's max first (stable)
        return torch.softmax(scores, dim=dim)
    # A slice with every entry masked (-inf) would be 0/0 = NaN: it attends to nothing,
    # so it gets 0. Zeroing its scores first keeps NaN out of the gradient as well.
    dead = torch.isneginf(scores).all(dim=dim, keepdim=True)
    weights = torch.softmax(scores.masked_fill(dead, 0.0), dim=dim)
    return weights.masked_fill(dead, 0.0)


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype attention is computed in: at least float32, as torch's SDPA does on the CPU.

    float16 and bfloat16 inputs would otherwise overflow (float16 scores beyond 65504) and
    round every score, weight and sum to 3 or 8 significant bits.
    """
    return dtype if dtype in (torch.float32, torch.float64) else torch.promote_types(
        dtype, torch.float32)


def _normalise_in_place(scores: torch.Tensor, mask: torch.Tensor | None,
                        finite: bool) -> torch.Tensor:
    """``softmax(scores, mask=mask)`` written into ``scores`` itself (a temporary of ours):
    it saves allocating and touching a second N × N tensor. Same results, no autograd.
    ``mask`` is already checked; ``finite`` says whether the scores' sum is finite."""
    if scores.requires_grad or not finite:
        return softmax(scores, dim=-1, mask=mask)  # the general path (checks, gradients)
    dead = None
    if mask is not None:
        scores.masked_fill_(~mask, float("-inf"))
        dead = ~mask.any(dim=-1, keepdim=True)
        if dead.any():
            scores.masked_fill_(dead, 0.0)  # a query that may attend to nothing gets 0, not NaN
        else:
            dead = None
    torch.softmax(scores, dim=-1, out=scores)
    return scores if dead is None else scores.masked_fill_(dead, 0.0)


def _shifted_scores(q: torch.Tensor, k: torch.Tensor, scale: float,
                    mask: torch.Tensor | None) -> torch.Tensor:
    """Scores of finite ``q`` and ``k`` whose products overflow the dtype, shifted so that
    each row's largest allowed score is 0 (softmax does not change: it is shift invariant).

    With ``a = max|q|`` and ``b = max|k|``, ``t = (q/a)(k/b)^T`` is at most d_k in size and
    the scores are ``t * a * b * scale``; the factors are applied to ``t - max_row(t) <= 0``
    one at a time, so a score far below its row's maximum becomes ``-inf`` (weight 0),
    never NaN. Masked entries are ``-inf``; a fully masked row is all ``-inf``.
    """
    a, b = q.detach().abs().amax().item(), k.detach().abs().amax().item()
    t = (q / a) @ (k / b).transpose(-2, -1)
    if mask is not None:
        t = t.masked_fill(~mask, float("-inf"))
    top = t.detach().amax(dim=-1, keepdim=True)
    top = top.masked_fill(torch.isneginf(top), 0.0)  # fully masked rows
    return (t - top) * a * b * scale


def _weights(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None,
             scale: float) -> torch.Tensor:
    """``softmax(q k^T * scale)`` with ``mask`` (checked, True = may attend), in q's dtype.

    ``q`` and ``k`` are finite and of one dtype (the work dtype). Never NaN: if the
    products overflow, the scores are computed shifted (:func:`_shifted_scores`).
    """
    scores = (q * scale) @ k.transpose(-2, -1)  # scaling q costs N·d, not N²
    finite = _validate.finite_sum(scores)
    if not finite and not torch.isfinite(scores).all():
        return softmax(_shifted_scores(q, k, scale, mask), dim=-1)
    return _normalise_in_place(scores, mask, finite)


def _mask(mask, key_padding_mask, batch: tuple[int, ...], n_q: int, n_k: int,
          keys: str, target: str) -> torch.Tensor | None:
    """Check ``mask`` (bool, broadcastable to ``(*batch, n_q, n_k)``, described as ``target``)
    and ``key_padding_mask`` (bool ``(B, n_k)``, see :func:`utils._validate.key_padding_mask`)
    and combine them into one mask (None if both are None)."""
    shape = (*batch, n_q, n_k)
    if mask is not None:
        _validate.bool_mask("mask", mask, shape, target)
    if key_padding_mask is None:
        return mask
    keep = _validate.key_padding_mask(key_padding_mask, tuple(batch), n_k, keys)
    return keep if mask is None else mask & keep


def _attend(q, k, v, mask, scale, dtype, dropout: float = 0.0):
    """Attention of checked, finite q, k, v with a checked mask: ``(output, weights)`` in
    ``dtype``, computed in :func:`_work_dtype` (no copy when q, k and v are already in it).

    With ``dropout > 0`` the weights go through ``torch.nn.functional.dropout`` (zeroed with
    probability ``dropout``, the rest scaled by ``1 / (1 - dropout)``) before they weight the
    values, and those are the weights returned, as in ``torch.nn.MultiheadAttention``."""
    work = _work_dtype(dtype)
    q, k, v = _as(q, work), _as(k, work), _as(v, work)
    weights = _weights(q, k, mask, scale)
    if dropout > 0:
        weights = torch.nn.functional.dropout(weights, dropout)
    return _as(weights @ v, dtype), _as(weights, dtype)


def _as(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x.to(dtype)``, without even the call when it is already in it (the common case)."""
    return x if x.dtype == dtype else x.to(dtype)


def _shape(name: str, x: torch.Tensor) -> str:
    return f"{name} {tuple(x.shape)}"


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
    *,
    key_padding_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of queries ``q`` over keys ``k`` and values ``v``, like
    ``torch.nn.functional.scaled_dot_product_attention`` but also returning the weights.

    Args:
        q: ``(..., Lq, d_k)`` queries.
        k: ``(..., Lk, d_k)`` keys.
        v: ``(..., Lk, d_v)`` values.
        mask: optional bool ``(..., Lq, Lk)`` (broadcastable); True = may attend.
        scale: multiplies the scores; defaults to ``1 / sqrt(d_k)``.
        key_padding_mask: optional bool ``(B, Lk)``, True = a real token (may be attended),
            False = padding, where B is the first batch dimension of q, k, v (``(Lk,)`` if
            they have none). It applies to every query and to every other batch dimension
            (e.g. heads). Combined with ``mask`` by "and". Note: the key padding mask of
            ``torch.nn.MultiheadAttention`` means the opposite (True = padding); pass it
            ``~key_padding_mask``. Pass key padding here rather than as ``mask``: a
            ``(B, Lk)`` tensor as ``mask`` is read as ``(Lq, Lk)``, silently, when B = Lq.

    All of q, k, v must be finite (a ``ValueError`` names the one holding NaN or inf).
    float16 and bfloat16 inputs are computed in float32, as torch does; mixed dtypes in
    their promoted dtype. Products too large for the dtype are handled without NaN.

    Returns:
        ``(output, weights)``: output ``(..., Lq, d_v)`` and weights ``(..., Lq, Lk)``,
        whose rows sum to 1 (0 for a fully masked query), both in the dtype of q, k, v
        (promoted if they differ).
    """
    _validate.qkv(q, k, v)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    else:
        _validate.positive("scale", scale)
    batch = _validate.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    mask = _mask(mask, key_padding_mask, batch, q.shape[-2], k.shape[-2],
                 f"{_shape('q', q)} and {_shape('k', k)}", "the scores' shape (..., Lq, Lk)")
    dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
    return _attend(q, k, v, mask, scale, dtype)


def _project(x: torch.Tensor, w: torch.Tensor, x_name: str, w_name: str,
             work: torch.dtype) -> torch.Tensor:
    """``x @ w`` in the work dtype; a ValueError naming both if it overflows."""
    y = _as(x, work) @ _as(w, work)
    if not _validate.finite_sum(y):
        _validate.not_finite(
            f"{x_name} @ {w_name}", y,
            f"{x_name} {tuple(x.shape)} and {w_name} {tuple(w.shape)} are too large for {work}")
    return y


def self_attention(
    x: torch.Tensor,
    w_q: torch.Tensor,
    w_k: torch.Tensor,
    w_v: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    key_padding_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-attention: Q, K and V are all projections of the same ``x``.

    Args:
        x: ``(..., N, d_model)``.
        w_q, w_k: ``(d_model, d_k)``; w_v: ``(d_model, d_v)``.
        mask: optional bool ``(..., N, N)``; True = may attend.
        key_padding_mask: optional bool ``(B, N)``, True = real token (may be attended),
            B the first batch dimension of x; see :func:`scaled_dot_product_attention`.

    Inputs must be finite; float16 and bfloat16 are computed in float32 and returned in
    their own dtype.

    Returns:
        ``(output (..., N, d_v), weights (..., N, N))``.
    """
    _validate.tensor("x", x, min_dim=2, finite=True)
    _validate.projections("x", x, w_q=w_q, w_k=w_k, w_v=w_v)
    dtype = _promote(x, w_q, w_k, w_v)
    mask = _mask(mask, key_padding_mask, x.shape[:-2], x.shape[-2], x.shape[-2],
                 _shape("x", x), "the weights' shape (..., N, N)")
    work = _work_dtype(dtype)
    q, k, v = (_project(x, w, "x", name, work)
               for name, w in (("w_q", w_q), ("w_k", w_k), ("w_v", w_v)))
    return _attend(q, k, v, mask, 1.0 / math.sqrt(q.shape[-1]), dtype)


def _promote(*xs: torch.Tensor) -> torch.dtype:
    dtype = xs[0].dtype
    for x in xs[1:]:
        dtype = torch.promote_types(dtype, x.dtype)
    return dtype


def cross_attention(
    x_dec: torch.Tensor,
    x_enc: torch.Tensor,
    w_q: torch.Tensor,
    w_k: torch.Tensor,
    w_v: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    key_padding_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-attention: queries from the decoder, keys and values from the encoder.

    Args:
        x_dec: ``(..., N, d_dec)`` decoder states (the queries' source).
        x_enc: ``(..., M, d_enc)`` encoder states (the keys' and values' source).
        w_q: ``(d_dec, d_k)``; w_k: ``(d_enc, d_k)``; w_v: ``(d_enc, d_v)``.
        mask: optional bool ``(..., N, M)`` (broadcastable); True = may attend.
        key_padding_mask: optional bool ``(B, M)``, True = a real encoder token, False =
            padding, B the first batch dimension (``(M,)`` if unbatched); see
            :func:`scaled_dot_product_attention`.

    Inputs must be finite; float16 and bfloat16 are computed in float32 and returned in
    their own dtype.

    Returns:
        ``(output (..., N, d_v), weights (..., N, M))``.
    """
    _validate.tensor("x_dec", x_dec, min_dim=2, finite=True)
    _validate.tensor("x_enc", x_enc, min_dim=2, finite=True)
    _validate.projections("x_dec", x_dec, w_q=w_q)
    _validate.projections("x_enc", x_enc, w_k=w_k, w_v=w_v)
    try:
        batch = _validate.broadcast_shapes(x_dec.shape[:-2], x_enc.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"the leading (batch) dimensions of x_dec {tuple(x_dec.shape)} and x_enc "
            f"{tuple(x_enc.shape)} do not broadcast"
        ) from None
    mask = _mask(mask, key_padding_mask, batch, x_dec.shape[-2], x_enc.shape[-2],
                 f"{_shape('x_dec', x_dec)} and {_shape('x_enc', x_enc)}",
                 "the weights' shape (..., N, M)")
    dtype = _promote(x_dec, x_enc, w_q, w_k, w_v)
    work = _work_dtype(dtype)
    q = _project(x_dec, w_q, "x_dec", "w_q", work)
    k = _project(x_enc, w_k, "x_enc", "w_k", work)
    v = _project(x_enc, w_v, "x_enc", "w_v", work)
    return _attend(q, k, v, mask, 1.0 / math.sqrt(q.shape[-1]), dtype)
