"""Input checks shared by every `utils` module.

Each check raises a `TypeError` or `ValueError` whose message names the argument
and shows the offending shape or value, so a student sees at once what went wrong.
"""

from __future__ import annotations

import math

import torch


def tensor(name: str, x, *, min_dim: int = 1, allow_empty: bool = False,
           check_nan: bool = True, finite: bool = False) -> torch.Tensor:
    """Check that ``x`` is a floating-point tensor with at least ``min_dim`` dims and no NaN
    (with ``finite``, no ``+inf`` or ``-inf`` either).

    The checks cost one reduction (``x.sum()``); only when that is not finite are the
    elements looked at one by one.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not (x.is_floating_point() or x.is_complex()):
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() < min_dim:
        raise ValueError(
            f"{name} must have at least {min_dim} dimension(s), got shape {tuple(x.shape)}"
        )
    if not allow_empty and x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); it needs at least one element")
    if (check_nan or finite) and x.numel() and not finite_sum(x):
        if check_nan and torch.isnan(x).any():
            raise ValueError(f"{name} contains NaN (shape {tuple(x.shape)})")
        if finite:
            not_finite(name, x)
    return x


def finite_sum(x: torch.Tensor) -> bool:
    """Whether ``x.sum()`` is finite: False if ``x`` holds NaN or an inf (or if the sum
    overflows; then look at the elements). One reduction, read back as a Python number,
    which is several times cheaper for small tensors than ``bool(torch.isfinite(...))``."""
    total = x.detach().sum()
    if total.is_complex():
        return bool(torch.isfinite(total))
    return math.isfinite(total.item())


def not_finite(name: str, x: torch.Tensor, hint: str = "") -> None:
    """Raise a ValueError naming ``name`` if ``x`` holds NaN, ``+inf`` or ``-inf``."""
    found = [word for word, test in (("NaN", torch.isnan), ("+inf", torch.isposinf),
                                     ("-inf", torch.isneginf)) if test(x).any()]
    if found:
        raise ValueError(f"{name} contains {' and '.join(found)} (shape {tuple(x.shape)}); "
                         f"{hint or 'it must hold finite numbers'}")


def bool_mask(name: str, mask, target_shape: tuple[int, ...],
              target: str = "the scores' shape (..., Lq, Lk)") -> torch.Tensor:
    """Check that ``mask`` is a bool tensor broadcastable to ``target_shape`` (described as
    ``target`` in the messages) without enlarging it."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a bool torch.Tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(
            f"{name} must have dtype torch.bool (True = may attend), got {mask.dtype}"
        )
    try:
        broadcast_shapes(mask.shape, target_shape)
    except RuntimeError:
        raise ValueError(
            f"{name} of shape {tuple(mask.shape)} is not broadcastable to {target} = "
            f"{tuple(target_shape)}"
        ) from None
    if broadcast_shapes(mask.shape, target_shape) != torch.Size(target_shape):
        raise ValueError(
            f"{name} of shape {tuple(mask.shape)} would enlarge {target} = "
            f"{tuple(target_shape)}"
        )
    return mask


def positive(name: str, value, *, integer: bool = False, allow_zero: bool = False):
    """Check that ``value`` is a positive (or non-negative) number."""
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        want = "an int" if integer else "a number"
        raise TypeError(f"{name} must be {want}, got {type(value).__name__} {value!r}")
    if value != value:  # NaN
        raise ValueError(f"{name} must be a number, got NaN")
    if value == float("inf"):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return value


def broadcast_shapes(*shapes) -> torch.Size:
    """The shape that ``shapes`` broadcast to, like ``torch.broadcast_shapes`` (RuntimeError
    if they do not), in plain Python: torch's own imports sympy on first use (~0.6 s)."""
    ndim = max((len(s) for s in shapes), default=0)
    out = [1] * ndim
    for shape in shapes:
        for i, size in enumerate(shape, start=ndim - len(shape)):
            if size != 1:
                if out[i] not in (1, size):
                    raise RuntimeError(f"shapes {[tuple(s) for s in shapes]} do not broadcast")
                out[i] = size
    return torch.Size(out)


def projections(x_name: str, x: torch.Tensor, **weights: torch.Tensor) -> None:
    """Check projection matrices ``name=w`` of shape ``(d_in, d_out)`` for an input ``x``
    ``(..., d_in)`` named ``x_name``: 2-D tensors whose first dimension is x's feature size."""
    for name, w in weights.items():
        tensor(name, w, min_dim=2)
        if w.dim() != 2:
            raise ValueError(f"{name} must be a 2-D (d_in, d_out) matrix, got {tuple(w.shape)}")
        if w.shape[0] != x.shape[-1]:
            raise ValueError(
                f"{name} has shape {tuple(w.shape)} but {x_name} has feature size "
                f"{x.shape[-1]} (shape {tuple(x.shape)}); {name} must be ({x.shape[-1]}, d_out)"
            )


def dim(name: str, x: torch.Tensor, d: int) -> int:
    """Check that ``d`` is a valid dimension index of ``x``; return it as non-negative."""
    if isinstance(d, bool) or not isinstance(d, int):
        raise TypeError(f"{name} must be an int, got {type(d).__name__}")
    if not -x.dim() <= d < x.dim():
        raise ValueError(f"{name}={d} is out of range for a tensor of shape {tuple(x.shape)}")
    return d % x.dim()


def qkv(q, k, v, *, same_length: bool = False) -> None:
    """Check queries ``(..., Lq, d_k)``, keys ``(..., Lk, d_k)`` and values ``(..., Lk, d_v)``:
    finite tensors (no NaN or inf), matching d_k, keys and values of one length (and, with
    ``same_length``, queries too: self-attention), broadcastable batch dimensions."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        tensor(name, x, min_dim=2, finite=True)
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q and k must have the same last dimension d_k, got q {tuple(q.shape)} "
            f"and k {tuple(k.shape)}"
        )
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"k and v must have the same length (dim -2), got k {tuple(k.shape)} "
            f"and v {tuple(v.shape)}"
        )
    if same_length and q.shape[-2] != k.shape[-2]:
        raise ValueError(
            "self-attention needs q, k and v of the same length L (dim -2), "
            f"got q {tuple(q.shape)}, k {tuple(k.shape)} and v {tuple(v.shape)}"
        )
    try:
        broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"the leading (batch) dimensions of q {tuple(q.shape)}, k {tuple(k.shape)} and "
            f"v {tuple(v.shape)} do not broadcast"
        ) from None


def key_padding_mask(mask, batch: tuple[int, ...], n_keys: int, keys: str) -> torch.Tensor:
    """Check a key padding mask: bool ``(B, Lk)``, True = a real token that may be attended,
    where B is the first batch dimension of the inputs (``batch``) and Lk their number of
    keys; ``(Lk,)`` for unbatched inputs, as in ``torch.nn.MultiheadAttention``.

    ``keys`` says how the inputs were passed (e.g. ``"k of shape (2, 7, 4)"``) for the
    messages. Returns ``mask`` as a ``(B, 1, ..., 1, Lk)`` view that broadcasts over the
    other batch dimensions and the queries: ``(*batch, Lq, Lk)``.
    """
    if not isinstance(mask, torch.Tensor):
        raise TypeError(
            f"key_padding_mask must be a bool torch.Tensor (B, Lk), got {type(mask).__name__}"
        )
    if mask.dtype != torch.bool:
        raise TypeError(
            "key_padding_mask must have dtype torch.bool (True = real token, may attend; "
            "torch.nn.MultiheadAttention's key_padding_mask means the opposite, pass ~mask), "
            f"got {mask.dtype}"
        )
    expected = (batch[0], n_keys) if batch else (n_keys,)
    if tuple(mask.shape) != expected:
        want = "(B, Lk)" if batch else "(Lk,) for unbatched inputs"
        raise ValueError(
            f"key_padding_mask must have shape {want} = {expected} for {keys}, "
            f"got {tuple(mask.shape)}"
        )
    return mask.view(*mask.shape[:-1], *[1] * max(len(batch) - 1, 0), 1, n_keys)
