r"""Scaled dot-product attention and its two everyday forms, self- and cross-attention.

.. math::
    \operatorname{Attention}(Q, K, V) = \operatorname{softmax}\!\left(\frac{QK^\top}{\sqrt{d_k}}\right) V

Conventions used across the course:

* tensors are ``(..., L, d)``: any leading batch/head dimensions broadcast;
* weight matrices have shape ``(d_in, d_out)`` and are applied as ``x @ w``;
* boolean masks mean **True = may attend** (as in ``torch.nn.functional.scaled_dot_product_attention``);
* a query whose keys are all masked gets zero weights and a zero output, never NaN.
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
    if not isinstance(scores, torch.Tensor) or scores.numel() == 0 or not torch.isfinite(scores.sum()):
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
        _validate.bool_mask("mask", mask, tuple(scores.shape))
        scores = scores.masked_fill(~mask, float("-inf"))
    elif not has_neg_inf:
        # finite scores: torch's fused softmax subtracts the slice's max first (stable)
        return torch.softmax(scores, dim=dim)
    # A slice with every entry masked (-inf) would be 0/0 = NaN: it attends to nothing,
    # so it gets 0. Zeroing its scores first keeps NaN out of the gradient as well.
    dead = torch.isneginf(scores).all(dim=dim, keepdim=True)
    weights = torch.softmax(scores.masked_fill(dead, 0.0), dim=dim)
    return weights.masked_fill(dead, 0.0)


def _normalise_in_place(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``softmax(scores, mask=mask)`` written into ``scores`` itself (a temporary of ours):
    it saves allocating and touching a second N × N tensor. Same results, no autograd."""
    if scores.requires_grad or not torch.isfinite(scores.sum()):
        return softmax(scores, dim=-1, mask=mask)  # the general path (checks, gradients)
    dead = None
    if mask is not None:
        _validate.bool_mask("mask", mask, tuple(scores.shape))
        scores.masked_fill_(~mask, float("-inf"))
        dead = ~mask.any(dim=-1, keepdim=True)
        if dead.any():
            scores.masked_fill_(dead, 0.0)  # a query that may attend to nothing gets 0, not NaN
        else:
            dead = None
    torch.softmax(scores, dim=-1, out=scores)
    return scores if dead is None else scores.masked_fill_(dead, 0.0)


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of queries ``q`` over keys ``k`` and values ``v``.

    Args:
        q: ``(..., Lq, d_k)`` queries.
        k: ``(..., Lk, d_k)`` keys.
        v: ``(..., Lk, d_v)`` values.
        mask: optional bool ``(..., Lq, Lk)`` (broadcastable); True = may attend.
        scale: multiplies the scores; defaults to ``1 / sqrt(d_k)``.

    Returns:
        ``(output, weights)``: output ``(..., Lq, d_v)`` and weights ``(..., Lq, Lk)``,
        whose rows sum to 1 (0 for a fully masked query).
    """
    _validate.qkv(q, k, v)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    else:
        _validate.positive("scale", scale)
    scores = (q * scale) @ k.transpose(-2, -1)  # scaling q costs N·d, not N²
    weights = _normalise_in_place(scores, mask)
    return weights @ v, weights


def self_attention(
    x: torch.Tensor,
    w_q: torch.Tensor,
    w_k: torch.Tensor,
    w_v: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-attention: Q, K and V are all projections of the same ``x``.

    Args:
        x: ``(..., N, d_model)``.
        w_q, w_k: ``(d_model, d_k)``; w_v: ``(d_model, d_v)``.
        mask: optional bool ``(..., N, N)``; True = may attend.

    Returns:
        ``(output (..., N, d_v), weights (..., N, N))``.
    """
    _validate.tensor("x", x, min_dim=2)
    _validate.projections("x", x, w_q=w_q, w_k=w_k, w_v=w_v)
    return scaled_dot_product_attention(x @ w_q, x @ w_k, x @ w_v, mask=mask)


def cross_attention(
    x_dec: torch.Tensor,
    x_enc: torch.Tensor,
    w_q: torch.Tensor,
    w_k: torch.Tensor,
    w_v: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-attention: queries from the decoder, keys and values from the encoder.

    Args:
        x_dec: ``(..., N, d_dec)`` decoder states (the queries' source).
        x_enc: ``(..., M, d_enc)`` encoder states (the keys' and values' source).
        w_q: ``(d_dec, d_k)``; w_k: ``(d_enc, d_k)``; w_v: ``(d_enc, d_v)``.
        mask: optional bool ``(..., N, M)``, e.g. a key padding mask ``(B, 1, M)``.

    Returns:
        ``(output (..., N, d_v), weights (..., N, M))``.
    """
    _validate.tensor("x_dec", x_dec, min_dim=2)
    _validate.tensor("x_enc", x_enc, min_dim=2)
    _validate.projections("x_dec", x_dec, w_q=w_q)
    _validate.projections("x_enc", x_enc, w_k=w_k, w_v=w_v)
    return scaled_dot_product_attention(x_dec @ w_q, x_enc @ w_k, x_enc @ w_v, mask=mask)
