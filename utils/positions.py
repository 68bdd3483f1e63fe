r"""Position codes: what attention needs to know about word order.

Self-attention is permutation-equivariant: shuffle the tokens and the outputs shuffle the
same way, so on its own it cannot tell "John met Tom" from "Tom met John". A position code
added to the token embeddings breaks that symmetry.

The sinusoidal code of Vaswani et al. (2017), "Attention Is All You Need", §3.5:

.. math::
    PE_{p,\,2i} = \sin\!\left(p / 10000^{2i/d}\right), \qquad
    PE_{p,\,2i+1} = \cos\!\left(p / 10000^{2i/d}\right)

for position ``p = 0 .. n-1`` and ``i = 0 .. d/2 - 1``: each pair of dimensions is a clock
turning at its own speed, from one radian per position (``i = 0``) down to about
``1/10000`` of a radian.
"""

from __future__ import annotations

import torch

__all__ = ["sinusoidal"]


def sinusoidal(n: int, d: int, *, base: float = 10000.0,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The sinusoidal position code ``(n, d)`` of Vaswani et al. (2017), §3.5.

    Args:
        n: number of positions (``int >= 1``); row ``p`` is position ``p`` (from 0).
        d: code size (even ``int >= 2``), usually ``d_model``, so the code can be added to
            the embeddings.
        base: the longest wavelength is ``2π · base`` positions (10000 in the paper).
        dtype: a floating-point dtype.

    Returns:
        Tensor ``(n, d)``: even columns ``sin(p / base^(2i/d))``, odd columns
        ``cos(p / base^(2i/d))``; every entry is in ``[-1, 1]``.

    Raises:
        TypeError: ``n`` or ``d`` not an int, or ``dtype`` not floating point.
        ValueError: ``n < 1``, ``d`` odd or ``< 2``, or ``base <= 1``.
    """
    for name, value in (("n", n), ("d", d)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1 (the number of positions), got {n}")
    if d < 2 or d % 2:
        raise ValueError(f"d must be even and >= 2 (sin/cos pairs), got {d}")
    if isinstance(base, bool) or not isinstance(base, int | float) or not base > 1:
        raise ValueError(f"base must be a number > 1, got {base!r}")
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point dtype, got {dtype}")
    position = torch.arange(n, dtype=torch.float64)[:, None]
    frequency = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)  # (d/2,)
    angle = position * frequency  # (n, d/2)
    code = torch.empty(n, d, dtype=torch.float64)
    code[:, 0::2] = torch.sin(angle)
    code[:, 1::2] = torch.cos(angle)
    return code.to(dtype)
