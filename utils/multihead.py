"""Multi-head attention: H small attentions side by side on slices of the model dimension.

``split_heads`` turns ``(..., L, D)`` into ``(..., H, L, D/H)``: head h owns the
columns ``h*D/H : (h+1)*D/H`` of every token. ``merge_heads`` undoes it. In between,
each head runs :func:`utils.attention.scaled_dot_product_attention` on its own slice.

:class:`MultiHeadAttention` holds the four projections as ``torch.nn.Linear`` layers
(``w_q``, ``w_k``, ``w_v``, ``w_o``). Note that ``nn.Linear`` stores its weight as
``(d_out, d_in)`` and computes ``x @ weight.T + bias``; the rest of ``utils`` writes
plain weight matrices as ``(d_in, d_out)`` applied as ``x @ w``, so
``layer.weight.T`` is the matrix in the course's convention.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import _validate
from .attention import _attend

__all__ = ["MultiHeadAttention", "merge_heads", "split_heads"]


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Split the last dimension into heads: ``(..., L, D) -> (..., H, L, D/H)``.

    A view ``(..., L, H, D/H)`` followed by a transpose of L and H, so head h holds
    columns ``h*D/H : (h+1)*D/H`` of each token (no data is copied).
    """
    _validate.tensor("x", x, min_dim=2)
    _validate.positive("n_heads", n_heads, integer=True)
    d = x.shape[-1]
    if d % n_heads:
        raise ValueError(
            f"n_heads={n_heads} must divide the model dimension d_model={d} "
            f"(x has shape {tuple(x.shape)})"
        )
    x = x.unflatten(-1, (n_heads, d // n_heads))  # (..., L, H, Dh)
    return x.transpose(-3, -2)  # (..., H, L, Dh)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`split_heads`: ``(..., H, L, Dh) -> (..., L, H*Dh)``."""
    _validate.tensor("x", x, min_dim=3)
    return x.transpose(-3, -2).flatten(-2)  # (..., L, H, Dh) -> (..., L, H*Dh)


class MultiHeadAttention(nn.Module):
    """Multi-head attention, batch first, as in "Attention Is All You Need".

    ``MultiHead(Q, K, V) = Concat(head_1, ..., head_H) W_o`` with
    ``head_h = Attention(Q W_q^h, K W_k^h, V W_v^h)``. The H heads of size
    ``D/H`` together cost the same parameters as one head of size D:
    ``4 D^2`` weights plus ``4 D`` biases.

    Args:
        d_model: model dimension D.
        n_heads: number of heads H; must divide ``d_model``.
        bias: whether the four projections have biases.
        dtype: optional parameter dtype (e.g. ``torch.float64``).
        dropout: probability of zeroing each attention weight in training mode
            (``module.train()``, the default for a new module), as
            ``torch.nn.MultiheadAttention(dropout=...)`` does: the kept weights are scaled by
            ``1 / (1 - dropout)``. No dropout in evaluation mode (``module.eval()``).
    """

    def __init__(
        self, d_model: int, n_heads: int, bias: bool = True, dtype: torch.dtype | None = None,
        *, dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _validate.positive("d_model", d_model, integer=True)
        _validate.positive("n_heads", n_heads, integer=True)
        _validate.positive("dropout", dropout, allow_zero=True)
        if dropout > 1:
            raise ValueError(f"dropout must be a probability in [0, 1], got {dropout!r}")
        if d_model % n_heads:
            raise ValueError(
                f"n_heads={n_heads} must divide d_model={d_model} "
                f"(d_model / n_heads = {d_model / n_heads:g})"
            )
        self.d_model = d_model
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.dropout = float(dropout)
        # nn.Linear weights are (d_out, d_in); layer(x) = x @ weight.T + bias.
        self.w_q = nn.Linear(d_model, d_model, bias=bias, dtype=dtype)
        self.w_k = nn.Linear(d_model, d_model, bias=bias, dtype=dtype)
        self.w_v = nn.Linear(d_model, d_model, bias=bias, dtype=dtype)
        self.w_o = nn.Linear(d_model, d_model, bias=bias, dtype=dtype)

    @property
    def n_parameters(self) -> int:
        """Number of parameters: ``4 D^2 + 4 D`` with biases, ``4 D^2`` without."""
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        key_padding_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attend from ``query`` over ``key``/``value``.

        Args:
            query: ``(B, Lq, D)``; key, value: ``(B, Lk, D)`` (any leading dimensions that
                broadcast, or none), finite, in the parameters' dtype.
            mask: optional bool, True = may attend, broadcastable to
                ``(B, H, Lq, Lk)``: e.g. ``(Lq, Lk)`` (same for all), ``(B, 1, Lq, Lk)``
                (per example) or ``(B, H, Lq, Lk)``.
            key_padding_mask: optional bool ``(B, Lk)``, True = a real token (may be
                attended), False = padding; ``(Lk,)`` for unbatched inputs. Combined with
                ``mask`` by "and". torch's ``key_padding_mask`` means the opposite (True =
                padding): pass torch ``~key_padding_mask``.

        In training mode with ``dropout > 0`` the attention weights go through dropout before
        they weight the values (see the class), and the weights returned are those.

        Returns:
            ``(output (B, Lq, D), weights (B, H, Lq, Lk))``; a fully masked query gets
            zero weights, so its output is the output projection's bias.
        """
        param_dtype = self.w_q.weight.dtype
        for name, x in (("query", query), ("key", key), ("value", value)):
            _validate.tensor(name, x, min_dim=2, finite=True)
            if x.shape[-1] != self.d_model:
                raise ValueError(
                    f"{name} must have last dimension d_model={self.d_model}, "
                    f"got shape {tuple(x.shape)}"
                )
            if x.dtype != param_dtype:
                raise TypeError(
                    f"{name} has dtype {x.dtype} but the module's parameters are "
                    f"{param_dtype}: convert one, e.g. {name}.to({param_dtype}) or "
                    f"module.to({x.dtype})"
                )
        if key.shape[-2] != value.shape[-2]:
            raise ValueError(
                f"key and value must have the same length, got key {tuple(key.shape)} "
                f"and value {tuple(value.shape)}"
            )
        try:
            batch = _validate.broadcast_shapes(query.shape[:-2], key.shape[:-2], value.shape[:-2])
        except RuntimeError:
            raise ValueError(
                f"the leading (batch) dimensions of query {tuple(query.shape)}, key "
                f"{tuple(key.shape)} and value {tuple(value.shape)} do not broadcast"
            ) from None
        n_q, n_k = query.shape[-2], key.shape[-2]
        if mask is not None:
            _validate.bool_mask("mask", mask, (*batch, self.n_heads, n_q, n_k),
                                "(B, H, Lq, Lk)")
        if key_padding_mask is not None:
            keep = _validate.key_padding_mask(
                key_padding_mask, tuple(batch), n_k,
                f"query {tuple(query.shape)} and key {tuple(key.shape)}",
            ).unsqueeze(-3)  # (B, 1, 1, Lk): the same for every head and query
            mask = keep if mask is None else mask & keep
        projected = []
        for name, layer, x in (("query", "w_q", query), ("key", "w_k", key),
                               ("value", "w_v", value)):
            y = getattr(self, layer)(x)
            if not _validate.finite_sum(y):
                _validate.not_finite(
                    f"{layer}({name})", y,
                    f"{name} is too large for {layer} in {y.dtype}, or {layer}'s parameters "
                    "are not finite")
            projected.append(split_heads(y, self.n_heads))  # (B, H, L, Dh)
        q, k, v = projected
        dropout = self.dropout if self.training else 0.0
        out, weights = _attend(q, k, v, mask, 1.0 / math.sqrt(self.d_head), q.dtype, dropout)
        return self.w_o(merge_heads(out)), weights

    @classmethod
    def from_torch(cls, m: nn.MultiheadAttention) -> MultiHeadAttention:
        """A copy of ``torch.nn.MultiheadAttention`` ``m`` (same weights, dtype and device).

        torch packs the three input projections as ``in_proj_weight = [W_q; W_k; W_v]``
        (``(3D, D)``, in ``nn.Linear``'s ``(d_out, d_in)`` layout). Whether ``m`` is
        ``batch_first`` or not does not matter for the weights; this module is always
        batch first. ``dropout`` and the training mode (``m.training``) are copied too, so
        both modules drop attention weights in training mode and none in evaluation mode.
        Remember that torch's masks mean True = *blocked*: pass it ``~mask`` where this
        module takes ``mask`` (and ``~key_padding_mask`` for ``key_padding_mask``).
        """
        if not isinstance(m, nn.MultiheadAttention):
            raise TypeError(f"m must be a torch.nn.MultiheadAttention, got {type(m).__name__}")
        if not m._qkv_same_embed_dim or m.in_proj_weight is None:
            raise ValueError("m must use the same embed_dim for query, key and value (kdim = vdim)")
        if m.bias_k is not None or m.add_zero_attn:
            raise ValueError("m must not use add_bias_kv or add_zero_attn")
        w = m.in_proj_weight
        has_bias = m.in_proj_bias is not None
        new = cls(m.embed_dim, m.num_heads, bias=has_bias, dtype=w.dtype, dropout=m.dropout)
        new = new.to(w.device).train(m.training)
        d = m.embed_dim
        with torch.no_grad():
            for i, layer in enumerate((new.w_q, new.w_k, new.w_v)):
                layer.weight.copy_(w[i * d : (i + 1) * d])
                if has_bias:
                    layer.bias.copy_(m.in_proj_bias[i * d : (i + 1) * d])
            new.w_o.weight.copy_(m.out_proj.weight)
            if has_bias:
                new.w_o.bias.copy_(m.out_proj.bias)
        return new
