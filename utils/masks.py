"""Attention masks as bool tensors: **True = may attend**, shape ``(Lq, Lk)`` unless said.

Patterns combine with ``|`` (union) and ``&`` (intersection), e.g.
``causal_mask(n) & sliding_window_mask(n, 3)``.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence

import torch

__all__ = [
    "bigbird_mask",
    "block_mask",
    "causal_mask",
    "density",
    "dilated_mask",
    "fixed_mask",
    "global_mask",
    "padding_mask",
    "random_mask",
    "sliding_window_mask",
    "strided_mask",
]


def _count(name: str, value, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _positions(name: str, values, n: int) -> torch.Tensor:
    """A sequence of token positions in ``0..n-1`` as a long tensor."""
    if isinstance(values, torch.Tensor) and values.dim() == 1:
        values = values.tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(f"{name} must be a sequence of ints, got {type(values).__name__}")
    values, ints = list(values), []
    for value in values:
        try:
            if isinstance(value, bool):
                raise TypeError
            ints.append(operator.index(value))  # int, numpy or 0-d integer tensor
        except TypeError:
            raise TypeError(f"{name} must hold ints (positions), got {type(value).__name__} "
                            f"{value!r} in {list(values)!r}") from None
    idx = torch.as_tensor(ints, dtype=torch.long)
    if idx.numel() and ((idx < 0) | (idx >= n)).any():
        raise ValueError(f"{name} must lie in 0..{n - 1}, got {idx.tolist()}")
    return idx


def _generator(generator) -> torch.Generator | None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__}"
        )
    return generator


def _offsets(n_q: int, n_k: int) -> torch.Tensor:
    """``i - j`` for every query i and key j: ``(n_q, n_k)`` long."""
    return torch.arange(n_q)[:, None] - torch.arange(n_k)[None, :]


def causal_mask(n_q: int, n_k: int | None = None) -> torch.Tensor:
    """Key j is visible to query i iff ``j <= i + (n_k - n_q)``.

    Bottom-right aligned like ``torch.nn.attention.bias.causal_lower_right``: with a
    KV cache the last query is the newest token and sees every key. Square: the
    plain lower triangle (diagonal included). Returns ``(n_q, n_k)``.
    """
    _count("n_q", n_q, minimum=1)
    n_k = n_q if n_k is None else _count("n_k", n_k, minimum=1)
    return _offsets(n_q, n_k) >= n_q - n_k


def padding_mask(lengths, max_len: int) -> torch.Tensor:
    """``(B, max_len)`` bool, True at the first ``lengths[b]`` (real) positions of row b.

    It is a key padding mask: pass it as ``key_padding_mask=`` to the attention functions
    (or as ``mask[:, None, :]``, which broadcasts over the queries; a ``(B, L)`` tensor passed
    as ``mask`` itself would be read as ``(Lq, Lk)``). ``torch.nn.MultiheadAttention``'s
    ``key_padding_mask`` means the opposite (True = padding): give it ``~mask``.
    """
    _count("max_len", max_len, minimum=1)
    lengths = torch.as_tensor(lengths)
    if lengths.dim() != 1 or lengths.is_floating_point() or lengths.dtype == torch.bool:
        raise TypeError(f"lengths must be a 1-D sequence of ints, got {lengths.dtype} "
                        f"of shape {tuple(lengths.shape)}")
    if ((lengths < 0) | (lengths > max_len)).any():
        raise ValueError(f"lengths must lie in 0..max_len={max_len}, got {lengths.tolist()}")
    return torch.arange(max_len)[None, :] < lengths[:, None]


def sliding_window_mask(n: int, window: int, causal: bool = False) -> torch.Tensor:
    """Local attention: ``|i - j| <= window``, or ``0 <= i - j <= window`` when causal.

    Non-causal, it has exactly ``n(2w+1) - w(w+1)`` True entries for ``w < n``.
    """
    _count("n", n, minimum=1)
    _count("window", window)
    d = _offsets(n, n)
    return (d >= 0) & (d <= window) if causal else d.abs() <= window


def global_mask(n: int, global_tokens: Sequence[int]) -> torch.Tensor:
    """The rows and columns of the listed positions are True (they see and are seen by all)."""
    _count("n", n, minimum=1)
    idx = _positions("global_tokens", global_tokens, n)
    mask = torch.zeros(n, n, dtype=torch.bool)
    mask[idx, :] = True
    mask[:, idx] = True
    return mask


def strided_mask(n: int, stride: int) -> torch.Tensor:
    """Sparse Transformer's strided pattern (causal).

    ``j <= i`` and (``i - j < stride`` or ``(i - j) % stride == 0``): the previous
    ``stride`` tokens plus every ``stride``-th token before them.
    """
    _count("n", n, minimum=1)
    _count("stride", stride, minimum=1)
    d = _offsets(n, n)
    return (d >= 0) & ((d < stride) | (d % stride == 0))


def fixed_mask(n: int, block: int, n_summary: int = 1) -> torch.Tensor:
    """Sparse Transformer's fixed pattern (causal).

    ``j <= i`` and (j is in i's block, or j is one of the last ``n_summary``
    positions of its block: the "summary" cells every later token reads).
    """
    _count("n", n, minimum=1)
    _count("block", block, minimum=1)
    _count("n_summary", n_summary, minimum=1)
    if n_summary > block:
        raise ValueError(f"n_summary={n_summary} must be <= block={block}")
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    same_block = (i // block) == (j // block)
    summary = (j % block) >= block - n_summary
    return (j <= i) & (same_block | summary)


def dilated_mask(n: int, window: int, dilation: int) -> torch.Tensor:
    """Dilated window (Longformer): ``|i - j| <= window * dilation`` and ``(i - j) % dilation == 0``."""
    _count("n", n, minimum=1)
    _count("window", window)
    _count("dilation", dilation, minimum=1)
    d = _offsets(n, n)
    return (d.abs() <= window * dilation) & (d % dilation == 0)


def block_mask(n: int, block: int) -> torch.Tensor:
    """Block-diagonal (block-sparse) pattern: i and j attend iff they share a block of size ``block``."""
    _count("n", n, minimum=1)
    _count("block", block, minimum=1)
    b = torch.arange(n) // block
    return b[:, None] == b[None, :]


def random_mask(n: int, n_random: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Every query row gets ``n_random`` distinct keys chosen uniformly at random."""
    _count("n", n, minimum=1)
    _count("n_random", n_random)
    if n_random > n:
        raise ValueError(f"n_random={n_random} must be <= n={n}")
    picks = torch.rand(n, n, generator=_generator(generator)).argsort(dim=-1)[:, :n_random]
    mask = torch.zeros(n, n, dtype=torch.bool)
    mask.scatter_(1, picks, True)
    return mask


def bigbird_mask(
    n: int,
    window: int,
    global_tokens: Sequence[int],
    n_random: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """BigBird (Zaheer et al. 2020): sliding window | global tokens | random keys.

    Every non-global query ``i`` gets ``n_random`` distinct random keys drawn uniformly among
    the keys it does **not** already see through the window ``|i - j| <= window`` or the
    global columns (as BigBird's implementation draws its random blocks outside the window
    and global blocks, so no random key is wasted); all of them if fewer than ``n_random``
    remain. Global rows already see every key. So a non-global row holds exactly its window,
    the global columns and ``n_random`` more keys, the count ``utils.cost.entries("bigbird",
    ...)`` gives. (The union ``sliding_window_mask | global_mask | random_mask`` is a
    different pattern: some of its random keys fall inside the window.)

    Args:
        n: sequence length; window: half-width ``w >= 0``; global_tokens: positions in
            ``0..n-1``; n_random: random keys per query, ``0..n``.
        generator: the ``torch.Generator`` to draw from (default: torch's global one).

    Returns:
        ``(n, n)`` bool, True = may attend.
    """
    _count("n_random", n_random)
    if n_random > n:
        raise ValueError(f"n_random={n_random} must be <= n={n}")
    seen = sliding_window_mask(n, window) | global_mask(n, global_tokens)
    keys = torch.rand(n, n, generator=_generator(generator))
    keys[seen] = 2.0  # sorts after every unseen key (torch.rand is < 1)
    order = keys.argsort(dim=-1, stable=True)[:, :n_random]
    new = keys.gather(1, order) < 1.0  # fewer than n_random unseen keys: take them all
    mask = seen.clone()
    mask[torch.arange(n)[:, None].expand_as(order)[new], order[new]] = True
    return mask


def density(mask: torch.Tensor) -> float:
    """Fraction of allowed entries, ``mask.sum() / mask.numel()``."""
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise TypeError(f"mask must be a bool torch.Tensor, got {got}")
    return mask.sum().item() / max(mask.numel(), 1)
