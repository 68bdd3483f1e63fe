"""What an attention pattern costs: counted exactly, and measured.

Counted (no ``N x N`` matrix is built, so N can be large):

* :func:`entries` -- how many (query, key) pairs a pattern lets attention compute, exactly;
* :func:`flops` and :func:`score_bytes` -- the matrix-multiply work and the memory of the
  scores for that many entries;
* :func:`reach` and :func:`layers_to_reach_all` -- the receptive field of stacked layers that
  share one mask, by boolean matrix powers.

Measured:

* :func:`peak_memory` -- the peak of the bytes held by the tensors PyTorch operations create
  while a function runs (a count of tensor allocations, so it is the same on every machine);
* :func:`one_thread` -- a context manager that runs its block on one CPU thread, for steady
  timings on a shared machine.

The patterns and their parameters are those of :mod:`utils.masks`; ``entries(name, n, **p)``
equals ``mask.sum()`` of the corresponding mask (tests check it), except for ``"bigbird"``,
which counts BigBird's own rule: each non-global query gets ``n_random`` extra keys among
those it does not already see.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = [
    "PATTERNS",
    "entries",
    "flops",
    "keys_per_query",
    "layers_to_reach_all",
    "one_thread",
    "peak_memory",
    "reach",
    "score_bytes",
]

#: every pattern :func:`entries` knows, with its parameters
PATTERNS = {
    "dense": (),
    "causal": (),
    "local": ("window",),
    "causal_local": ("window",),
    "global": ("n_global",),
    "strided": ("stride",),
    "fixed": ("block", "n_summary"),
    "dilated": ("window", "dilation"),
    "random": ("n_random",),
    "bigbird": ("window", "n_global", "n_random"),
    "block": ("block",),
}


def _int(name: str, value, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _window_rows(n: int, window: int) -> torch.Tensor:
    """Keys with ``|i - j| <= window`` in each row i: ``(n,)`` long."""
    i = torch.arange(n)
    return torch.clamp(i + window, max=n - 1) - torch.clamp(i - window, min=0) + 1


def keys_per_query(pattern: str, n: int, **params) -> torch.Tensor:
    """How many keys each query of an ``n``-token sequence sees: ``(n,)`` long.

    ``pattern`` is one of :data:`PATTERNS`; ``params`` are its parameters (e.g.
    ``window=3``). Global tokens are the first ``n_global`` positions.
    """
    _int("n", n, minimum=1)
    if pattern not in PATTERNS:
        raise ValueError(f"unknown pattern {pattern!r}; choose one of {sorted(PATTERNS)}")
    expected = set(PATTERNS[pattern])
    optional = {"n_summary"} if pattern == "fixed" else set()
    if not expected - optional <= set(params) <= expected:
        raise TypeError(f"pattern {pattern!r} takes parameters {sorted(expected)}, "
                        f"got {sorted(params)}")
    for name, value in params.items():
        _int(name, value, minimum=1 if name in ("stride", "block", "dilation", "n_summary") else 0)
    i = torch.arange(n)
    if pattern == "dense":
        return torch.full((n,), n)
    if pattern == "causal":
        return i + 1
    if pattern == "local":
        return _window_rows(n, params["window"])
    if pattern == "causal_local":
        return torch.clamp(i, max=params["window"]) + 1
    if pattern == "global":
        g = min(params["n_global"], n)
        return torch.where(i < g, n, g)
    if pattern == "strided":
        s = params["stride"]
        return torch.clamp(i, max=s - 1) + 1 + i // s
    if pattern == "fixed":
        block, c = params["block"], params.get("n_summary", 1)
        if c > block:
            raise ValueError(f"n_summary={c} must be <= block={block}")
        # own block up to i, plus the c summary positions of every earlier block
        return i % block + 1 + (i // block) * c
    if pattern == "dilated":
        w, dil = params["window"], params["dilation"]
        return torch.clamp(i // dil, max=w) + torch.clamp((n - 1 - i) // dil, max=w) + 1
    if pattern == "random":
        r = params["n_random"]
        if r > n:
            raise ValueError(f"n_random={r} must be <= n={n}")
        return torch.full((n,), r)
    if pattern == "block":
        b = params["block"]
        start = (i // b) * b
        return torch.clamp(start + b, max=n) - start
    # bigbird: window | first g tokens (rows and columns) | r new keys per non-global row
    w, g, r = params["window"], min(params["n_global"], n), params["n_random"]
    is_global = (i < g).long()
    before = torch.cat([torch.zeros(1, dtype=torch.long), is_global.cumsum(0)])  # before[j] = #global < j
    lo, hi = torch.clamp(i - w, min=0), torch.clamp(i + w, max=n - 1)
    global_in_window = before[hi + 1] - before[lo]
    seen = _window_rows(n, w) - global_in_window + g  # window plus every global column
    if (r > n - seen[g:]).any():
        raise ValueError(f"n_random={r} is more than the keys some query does not already see "
                         f"(as few as {int((n - seen[g:]).min())})")
    return torch.where(i < g, n, seen + r)


def entries(pattern: str, n: int, **params) -> int:
    """Exact number of (query, key) pairs ``pattern`` allows for ``n`` tokens (no mask built)."""
    return int(keys_per_query(pattern, n, **params).sum())


def flops(n_entries: int, d_k: int, d_v: int | None = None) -> int:
    """Floating-point operations of the two matrix products for ``n_entries`` scores:
    ``2·d_k`` per score for ``Q Kᵀ`` and ``2·d_v`` per weight for ``A V`` (softmax not counted)."""
    _int("n_entries", n_entries)
    _int("d_k", d_k, minimum=1)
    d_v = d_k if d_v is None else _int("d_v", d_v, minimum=1)
    return 2 * n_entries * (d_k + d_v)


def score_bytes(n_entries: int, dtype: torch.dtype = torch.float32) -> int:
    """Bytes to hold ``n_entries`` scores (one matrix; the weights need as much again)."""
    _int("n_entries", n_entries)
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype, got {type(dtype).__name__} {dtype!r}")
    return n_entries * torch.empty((), dtype=dtype).element_size()


# --------------------------------------------------------------------------- receptive field


def _check_square(mask: torch.Tensor) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise TypeError(f"mask must be a bool torch.Tensor, got {got}")
    if mask.dim() != 2 or mask.shape[0] != mask.shape[1]:
        raise ValueError(f"mask must be square (N, N), got shape {tuple(mask.shape)}")
    # a token always keeps its own information (the residual connection)
    return mask | torch.eye(mask.shape[0], dtype=torch.bool)


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the ``with`` block on a single CPU thread, then restore the thread count.

    Small matrix products are faster this way than waking a thread pool, and timings on a
    machine busy with other work scatter much less (threads of a parallel kernel wait for
    each other when the cores are shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _compose(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Boolean matrix product: ``(a @ b)[i, j]`` is True iff some k has a[i, k] and b[k, j]
    (as float32 counts, exact for N < 2**24)."""
    return (a.float() @ b.float()) > 0


def reach(mask: torch.Tensor, layers: int) -> torch.Tensor:
    """Which inputs reach which outputs through ``layers`` stacked layers sharing ``mask``.

    ``mask`` is ``(N, N)`` bool, True where query i reads key j; the result's ``[i, j]`` is
    True when token j's input can influence token i's output, i.e. the boolean power
    ``(mask | I) ** layers`` (a token always keeps its own information). ``layers = 0`` gives I.
    """
    m = _check_square(mask)
    _int("layers", layers)
    result = torch.eye(m.shape[0], dtype=torch.bool)
    power = m
    with one_thread():
        while layers:  # exponentiation by squaring
            if layers & 1:
                result = _compose(result, power)
            layers >>= 1
            if layers:
                power = _compose(power, power)
    return result


def layers_to_reach_all(mask: torch.Tensor) -> int | None:
    """The fewest stacked layers after which every token's output depends on every input,
    or None if that never happens (e.g. a block-diagonal mask). Uses O(log L) matrix products.
    """
    m = _check_square(mask)
    if m.all():
        return 1
    with one_thread():
        return _layers_to_reach_all(m)


def _layers_to_reach_all(m: torch.Tensor) -> int | None:
    n = m.shape[0]
    powers = [m]  # m^(2^k)
    while not powers[-1].all():
        squared = _compose(powers[-1], powers[-1])
        if torch.equal(squared, powers[-1]):
            return None  # reach stopped growing short of everything
        powers.append(squared)
    # the largest L with m^L not full, built bit by bit from the highest power down
    result, layers = torch.eye(n, dtype=torch.bool), 0
    for k in range(len(powers) - 1, -1, -1):
        candidate = _compose(result, powers[k])
        if not candidate.all():
            result, layers = candidate, layers + (1 << k)
    return layers + 1


# --------------------------------------------------------------------------- measured memory


class _TensorBytes(TorchDispatchMode):
    """Counts the bytes of every new storage an operation returns, until it is freed."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._sizes: dict[int, int] = {}

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # torch would wrap __torch_dispatch__ to keep torch.compile out of it, importing
        # torch._dynamo on the first call (about a second); nothing here is compiled.
        return False

    def _free(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        returns = func._schema.returns
        for i, t in enumerate(tree_flatten(out)[0]):
            if not isinstance(t, torch.Tensor):
                continue
            # views, in-place and out= results alias an existing tensor: no new memory
            if i < len(returns) and returns[i].alias_info is not None:
                continue
            storage = t.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
            if size == 0 or key in self._sizes:
                continue
            self._sizes[key] = size
            self.live += size
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._free, key)
        return out


def peak_memory(fn: Callable[[], object]) -> tuple[object, int]:
    """Run ``fn()``; return ``(its result, peak bytes)``.

    The peak is the largest total size, at any moment during the call, of the tensors that
    PyTorch operations created in it and had not yet freed (tensors that existed before the
    call are not counted; views add nothing). It is an exact count of tensor allocations,
    the same on every machine. Not seen: scratch memory a single fused kernel allocates
    internally and frees before returning (small for PyTorch's CPU attention kernels).
    """
    if not callable(fn):
        raise TypeError(f"fn must be a function of no arguments, got {type(fn).__name__}")
    mode = _TensorBytes()
    with mode:
        result = fn()
    return result, mode.peak

