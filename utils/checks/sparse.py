"""Checks for chapter 5's exercises: a sliding-window mask, a BigBird mask, and blockwise
sliding-window attention."""

from __future__ import annotations

import functools

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .. import masks
from ..attention import scaled_dot_product_attention
from ..masks import sliding_window_mask
from ..sparse import sliding_window_attention
from ._core import (
    FAIL,
    Case,
    CheckFailed,
    CheckResult,
    call_student,
    custom_check,
    expect_generator,
    expect_tensor,
    guarded,
    register,
    run_check,
)
from ._core import randn as _randn

__all__ = ["REACH_QUESTIONS", "check_bigbird_mask", "check_blockwise_attention",
           "check_reach_prediction", "check_sliding_window_mask",
           "window_pairs"]


def window_pairs(n: int, window: int) -> int:
    """Pairs (i, j) of ``n`` tokens with ``|i - j| <= window``: ``n(2w+1) - w(w+1)`` for ``w < n``."""
    w = min(window, n - 1)
    return n * (2 * w + 1) - w * (w + 1)


# --------------------------------------------------------------------------- exercise 1


def _band(rule):
    def fn(n, window):
        d = torch.arange(n)[:, None] - torch.arange(n)[None, :]
        return rule(d, window)

    return fn


def _count(mask) -> str:
    if isinstance(mask, torch.Tensor) and mask.dim() == 2:
        return f"{int(mask.bool().sum())}"
    return "?"


def _sliding_window_mask(n, window):
    i = torch.arange(n)
    return (i[:, None] - i[None, :]).abs() <= window


#: library masks that answer exercises 1 and 2 in one call: the exercise is to write them
_MASKS = (masks.sliding_window_mask, masks.dilated_mask, masks.bigbird_mask, masks.block_mask,
          masks.causal_mask)


@register(_sliding_window_mask)
def check_sliding_window_mask(fn) -> CheckResult:
    """``fn(n, window) -> (n, n) bool``: True where ``|i - j| <= window``.

    Compares the mask with the reference and, when it differs, its number of allowed pairs
    with ``n(2w+1) - w(w+1)``.
    """
    name = "sliding-window mask"
    sizes = [(8, 2), (10, 3), (6, 0), (5, 7), (12, 1)]
    bugs = {
        "off_by_one_narrow": (_band(lambda d, w: d.abs() < w),
                              "off by one: |i − j| < w leaves out the two keys at distance "
                              "exactly w; the window is |i − j| ≤ w (2w + 1 keys in the middle)."),
        "off_by_one_wide": (_band(lambda d, w: d.abs() <= w + 1),
                            "off by one: your window reaches w + 1 tokens to each side; "
                            "use |i − j| ≤ w."),
        "causal_only": (_band(lambda d, w: (d >= 0) & (d <= w)),
                        "only the past half of the window: 0 ≤ i − j ≤ w is the causal "
                        "window; the local window looks both ways, |i − j| ≤ w."),
        "future_only": (_band(lambda d, w: (d <= 0) & (d >= -w)),
                        "only the future half of the window: use |i − j| ≤ w, both sides."),
        "no_diagonal": (_band(lambda d, w: (d.abs() <= w) & (d != 0)),
                        "the diagonal is missing: a token must see itself (|i − j| = 0 ≤ w)."),
    }
    result = run_check(name, fn, _sliding_window_mask, [Case(s) for s in sizes], bugs,
                       verbose=False, forbid=_MASKS)
    if result.status == FAIL and result.diagnosis in ("values", *bugs):
        # the pair count makes the mistake concrete, on the first case that fails
        with guarded():
            for n, w in sizes:
                try:
                    got = call_student(fn, n, w)
                except CheckFailed:
                    break
                if not (isinstance(got, torch.Tensor) and got.shape == (n, n)
                        and torch.equal(got.bool(), sliding_window_mask(n, w))):
                    result.message += (f"\n   n = {n}, w = {w}: your mask allows {_count(got)} "
                                       "pairs; |i − j| ≤ w allows n(2w+1) − w(w+1) = "
                                       f"{window_pairs(n, w)}.")
                    break
    print(result.message)
    return result


# --------------------------------------------------------------------------- exercise 2


def _bigbird_mask(n: int, window: int, global_tokens, n_random: int,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """BigBird's rule: window ``|i - j| <= window``, global rows and columns, and for every
    non-global query ``n_random`` distinct keys among those it does not already see.
    (The registered solution; :func:`reference_bigbird_mask` is the public name, which the
    check does not accept as an answer.)"""
    mask = sliding_window_mask(n, window)
    g = torch.as_tensor(list(global_tokens), dtype=torch.long)
    mask[g, :] = True
    mask[:, g] = True
    for i in range(n):
        if i in set(g.tolist()):
            continue
        unseen = (~mask[i]).nonzero().flatten()
        pick = unseen[torch.randperm(len(unseen), generator=generator)[:n_random]]
        mask[i, pick] = True
    return mask


def reference_bigbird_mask(n: int, window: int, global_tokens, n_random: int,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """BigBird's rule, as :func:`utils.masks.bigbird_mask` (drawn by a per-query
    ``torch.randperm``): window ``|i - j| <= window``, global rows and columns, and for every
    non-global query ``n_random`` distinct keys among those it does not already see."""
    return _bigbird_mask(n, window, global_tokens, n_random, generator=generator)


_BIGBIRD_CASES = [  # (n, window, global tokens, random keys per query)
    (16, 1, [0], 2),
    (64, 2, [0, 1], 3),
    (40, 3, [0, 39], 4),
    (12, 1, [0], 8),  # tight: an interior query has exactly 8 keys left to choose from
]

_BIGBIRD_HINTS = {
    "missing_window": "the sliding window is incomplete: every query must see the keys with "
                      "|i − j| ≤ window (including itself).",
    "missing_global_columns": "the global tokens' columns are not all True: every query must be "
                              "able to read the global tokens (mask[:, g] = True).",
    "missing_global_rows": "the global tokens' rows are not all True: a global token reads the "
                           "whole sequence (mask[g, :] = True).",
    "random_not_distinct": "some queries got fewer than n_random new keys: the random keys must "
                           "be distinct and new — sample without replacement (torch.randperm, "
                           "not torch.randint) among the keys the query does not already see.",
    "too_many_random": "some queries got more than n_random extra keys: pick exactly n_random "
                       "per query, only for the non-global queries.",
    "not_random": "every run gives the same random keys for every query: draw them per query, "
                  "from `generator`.",
    "ignores_generator": "two calls with identically seeded generators gave different masks: "
                         "draw the random keys from `generator` (e.g. `torch.randperm(m, "
                         "generator=generator)`), not from the global random state.",
    "not_uniform": "your random keys are not spread uniformly over the keys a query does not "
                   "see yet: draw them uniformly without replacement (e.g. a random permutation "
                   "of the unseen keys, the first n_random).",
}


def _bigbird_problem(got, n, window, global_tokens, n_random) -> tuple[str, str] | None:
    """The first BigBird rule the (n, n) bool mask ``got`` breaks, or None."""
    g = torch.tensor(global_tokens)
    band = sliding_window_mask(n, window)
    if not got[band].all():
        return "missing_window", _BIGBIRD_HINTS["missing_window"]
    if not got[:, g].all():
        return "missing_global_columns", _BIGBIRD_HINTS["missing_global_columns"]
    if not got[g, :].all():
        return "missing_global_rows", _BIGBIRD_HINTS["missing_global_rows"]
    seen = band.clone()
    seen[:, g] = True
    rows = torch.ones(n, dtype=torch.bool)
    rows[g] = False
    extra = (got & ~seen)[rows].sum(dim=-1)
    if (extra < n_random).any():
        return "random_not_distinct", _BIGBIRD_HINTS["random_not_distinct"]
    if (extra > n_random).any():
        return "too_many_random", _BIGBIRD_HINTS["too_many_random"]
    return None


#: draws of the uniformity test, and the standard errors a frequency may be off
_UNIFORM_SEEDS, _UNIFORM_Z = 100, 5.0


def _uniformity(fn, n, window, global_tokens, n_random) -> None:
    """The random keys of query i must be uniform among the keys it does not see yet: each with
    probability ``n_random / #unseen``, as the reference draws them. Checked on 100 seeds."""
    seen = sliding_window_mask(n, window)
    seen[:, global_tokens] = True
    counts = torch.zeros(n, n, dtype=torch.float64)
    for seed in range(_UNIFORM_SEEDS):
        got = call_student(fn, n, window, list(global_tokens), n_random,
                           generator=torch.Generator().manual_seed(1000 + seed))
        counts += (got & ~seen).to(torch.float64)
    rows = torch.ones(n, dtype=torch.bool)
    rows[global_tokens] = False
    unseen = ~seen & rows[:, None]
    p = (n_random / unseen.sum(-1, keepdim=True).clamp_min(n_random)).to(torch.float64)
    p = p.expand(n, n)  # a global query's row (nothing unseen) is masked out below
    freq = counts / _UNIFORM_SEEDS
    se = (p * (1 - p) / _UNIFORM_SEEDS).sqrt().clamp_min(1e-12)
    z = torch.where(unseen, (freq - p).abs() / se, 0.0)
    if z.max() > _UNIFORM_Z:
        i, j = (int(x) for x in (z == z.max()).nonzero()[0])
        raise CheckFailed("not_uniform", f"{_BIGBIRD_HINTS['not_uniform']} (query {i} read key "
                          f"{j} in {freq[i, j]:.0%} of {_UNIFORM_SEEDS} masks; expected "
                          f"{p[i, j]:.0%}: n = {n}, window = {window}, global = "
                          f"{list(global_tokens)}, n_random = {n_random})")


@register(_bigbird_mask)
def check_bigbird_mask(fn) -> CheckResult:
    """``fn(n, window, global_tokens, n_random, generator) -> (n, n) bool``: BigBird's pattern.

    The random part differs from run to run, so the check tests the rules themselves: the
    window, the global rows and columns, exactly ``n_random`` new keys per non-global query,
    draws that come from ``generator`` (the same seed gives the same mask whatever the global
    random state, another seed another mask), and random keys spread uniformly over the keys
    a query does not see yet (their frequencies over 100 seeds, against the reference's
    probabilities).
    """
    name = "BigBird mask"

    def body() -> str:
        for seed, (n, w, g, r) in enumerate(_BIGBIRD_CASES):
            case = f"n = {n}, window = {w}, global = {g}, n_random = {r}"
            got = call_student(fn, n, w, list(g), r, generator=torch.Generator().manual_seed(seed))
            try:
                expect_tensor(got, "your mask", shape=(n, n), dtype=torch.bool)
            except CheckFailed as failed:
                raise CheckFailed(failed.diagnosis, f"{failed.message.rstrip('.')} ({case})") \
                    from None
            problem = _bigbird_problem(got, n, w, g, r)
            if problem is not None:
                raise CheckFailed(problem[0], f"{problem[1]} ({case})")
        n, w, g, r = _BIGBIRD_CASES[1]
        expect_generator(lambda gen: call_student(fn, n, w, list(g), r, generator=gen), seed=1,
                        ignores=_BIGBIRD_HINTS["ignores_generator"],
                        not_random=_BIGBIRD_HINTS["not_random"])
        _uniformity(fn, *_BIGBIRD_CASES[0])
        return f"correct on {len(_BIGBIRD_CASES)} test case(s)."

    return custom_check(name, body, forbid=(masks.bigbird_mask, reference_bigbird_mask))


# --------------------------------------------------------------------------- exercise 3


def _dense_masked(mask_of):
    """Dense attention with the mask ``mask_of(n, window, block)``: the reference and the bugs."""

    def fn(q, k, v, window, block):
        n = q.shape[-2]
        return scaled_dot_product_attention(q, k, v, mask=mask_of(n, window, block))[0]

    return fn


def _blocks(n, block):
    b = torch.arange(n) // block
    return b[:, None] - b[None, :]  # query block minus key block


def _unscaled(q, k, v, window, block):
    n = q.shape[-2]
    return scaled_dot_product_attention(q, k, v, mask=sliding_window_mask(n, window),
                                        scale=1.0)[0]


def _blockwise_reference(q, k, v, window, block):
    n = q.shape[-2]
    return scaled_dot_product_attention(q, k, v, mask=sliding_window_mask(n, window))[0]


_PRODUCTS = {torch.ops.aten.mm.default, torch.ops.aten.bmm.default, torch.ops.aten.addmm.default,
             torch.ops.aten.baddbmm.default, torch.ops.aten.matmul.default}
_DENSE = "computes or stores as much as dense attention"


class _Work(TorchDispatchMode):
    """Records what a call computes: the largest tensor any operation creates (elements) and the
    entries of every matrix product's output, summed."""

    def __init__(self):
        super().__init__()
        self.largest, self.products = 0, 0

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # as utils.cost's memory counter: torch would otherwise import torch._dynamo on the
        # first call (seconds); nothing here is compiled.
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
                if func in _PRODUCTS:
                    self.products += t.numel()
        return out


def _measured(fn):
    """``fn`` that fails, on a sequence of at least 8 blocks, when it computes or stores as much
    as dense attention: a tensor of n²/2 entries or more (the n × n scores or a dense mask), or
    matrix products whose outputs add up to n²/2 or more (blockwise: about 3·block·n scores)."""

    @functools.wraps(fn)
    def wrapped(q, k, v, window, block):
        n = q.shape[-2]
        if n < 8 * block:
            return fn(q, k, v, window, block)
        seqs = q[..., 0, 0].numel()
        with _Work() as work:
            out = fn(q, k, v, window, block)
        limit = seqs * n * n // 2
        if work.largest >= limit or work.products >= limit:
            raise RuntimeError(
                f"{_DENSE}: at n = {n}, block = {block}, one tensor of {work.largest:,} entries "
                f"and matrix products of {work.products:,} entries in all; a dense n × n matrix "
                f"has {n * n:,}, blockwise scores about 3·block·n = {3 * block * n:,}")
        return out

    return wrapped


def _blockwise_solution(q, k, v, window, block):
    """A correct answer, block by block (the registered solution)."""
    n = q.shape[-2]
    out = torch.empty(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
    for start in range(0, n, block):
        lo, hi = max(start - block, 0), min(start + 2 * block, n)  # blocks i-1, i, i+1
        rows, cols = torch.arange(start, start + block), torch.arange(lo, hi)
        scores = q[..., start:start + block, :] @ k[..., lo:hi, :].transpose(-2, -1)
        scores = scores / q.shape[-1] ** 0.5
        band = (rows[:, None] - cols[None, :]).abs() <= window
        weights = torch.softmax(scores.masked_fill(~band, float("-inf")), dim=-1)
        out[..., start:start + block, :] = weights @ v[..., lo:hi, :]
    return out


@register(_blockwise_solution)
def check_blockwise_attention(fn) -> CheckResult:
    """``fn(q, k, v, window, block) -> (..., n, d_v)``: sliding-window attention computed block by
    block (``block >= window``, ``n`` a multiple of ``block``); must equal dense attention with
    ``sliding_window_mask(n, window)``."""
    cases = [
        Case((_randn(12, 4), _randn(12, 4, seed=1), _randn(12, 3, seed=2), 2, 4)),
        Case((_randn(2, 16, 4, seed=3), _randn(2, 16, 4, seed=4), _randn(2, 16, 5, seed=5), 3, 4)),
        Case((_randn(15, 2, seed=6), _randn(15, 2, seed=7), _randn(15, 2, seed=8), 5, 5)),
        # 8 blocks: measured, so dense masked attention (the n x n scores) fails
        Case((_randn(64, 4, seed=9), _randn(64, 4, seed=10), _randn(64, 4, seed=11), 4, 8)),
    ]
    window = lambda n, w, b: sliding_window_mask(n, w)  # noqa: E731
    bugs = {
        "missing_previous_block": (
            _dense_masked(lambda n, w, b: window(n, w, b) & (_blocks(n, b) <= 0)),
            "the previous block is missing: a query near the start of its block needs keys "
            "up to `window` positions back, in block i − 1 (gather blocks i − 1, i and i + 1)."),
        "missing_next_block": (
            _dense_masked(lambda n, w, b: window(n, w, b) & (_blocks(n, b) >= 0)),
            "the next block is missing: a query near the end of its block needs keys up to "
            "`window` positions ahead, in block i + 1 (gather blocks i − 1, i and i + 1)."),
        "own_block_only": (
            _dense_masked(lambda n, w, b: window(n, w, b) & (_blocks(n, b) == 0)),
            "each block only attends to itself: neighbouring blocks i − 1 and i + 1 are "
            "missing, so tokens near block edges lose part of their window."),
        "no_mask_inside_blocks": (
            _dense_masked(lambda n, w, b: _blocks(n, b).abs() <= 1),
            "no band mask inside the gathered blocks: the 3 blocks hold keys farther than "
            "`window`; mask the scores where |i − j| > window (positions, not indices in the "
            "block) before the softmax."),
        "missing_scale": (_unscaled, "the scores are not scaled: divide Q Kᵀ by √d_k."),
    }
    raised = {"dense_scores": (_DENSE, "compute the scores block by block: each block of queries "
                                       "against its own and its neighbour blocks' keys only, "
                                       "never the n × n scores or an n × n mask.")}
    return run_check("blockwise sliding-window attention", _measured(fn),
                     _blockwise_reference, cases, bugs, atol=1e-8, raised_hints=raised,
                     forbid=(sliding_window_attention, masks.sliding_window_mask))



# --------------------------------------------------------------------------- exercise 4: predict

#: the questions of the receptive-field prediction (N = 64, inputs seen by the middle token)
REACH_QUESTIONS = {
    "local": "after 4 layers of the window w = 3: the farthest input (distance) token 32 has seen",
    "dilated": "after 4 layers of the dilated window (w = 3, gap 2): the farthest input token 32 "
               "has seen",
    "odd": "after those 4 dilated layers: has token 32 seen any input at an odd distance? "
           "(True / False)",
    "global_layers": "window w = 3 plus one global token (position 0): layers until every token "
                     "has seen every input",
}


def _reach_outcome() -> dict:
    """What runs: the answers computed with boolean matrix powers (utils.cost.reach)."""
    from .. import cost

    n, mid = 64, 32
    offsets = (torch.arange(n) - mid).abs()
    local = cost.reach(masks.sliding_window_mask(n, 3), 4)[mid]
    dilated = cost.reach(masks.dilated_mask(n, 3, 2), 4)[mid]
    with_global = masks.sliding_window_mask(n, 3) | masks.global_mask(n, [0])
    return {"local": int(offsets[local].max()), "dilated": int(offsets[dilated].max()),
            "odd": bool((offsets[dilated] % 2 == 1).any()),
            "global_layers": cost.layers_to_reach_all(with_global)}


def _predicted_reach() -> dict:
    """The right prediction (a test checks it against :func:`_reach_outcome`)."""
    return {"local": 12, "dilated": 24, "odd": False, "global_layers": 2}


_REACH_WHY = {
    "local": "each layer widens the view by w on each side: L·w",
    "dilated": "each dilated layer reaches w·gap further: L·w·gap",
    "odd": "every dilated step is a multiple of the gap, so a sum of them is even: odd distances "
           "are never reached, however many layers",
    "global_layers": "one layer for the global token to read everyone, one for everyone to read it",
}


@register(_predicted_reach)
def check_reach_prediction(fn) -> CheckResult:
    """``fn() -> {"local": int, "dilated": int, "odd": bool, "global_layers": int}``: the
    student's prediction of :data:`REACH_QUESTIONS`, compared with what runs (boolean matrix
    powers). A prediction: the check fails a function that computes the reach."""
    from .. import cost

    forbid = (cost.reach, cost.layers_to_reach_all, masks.sliding_window_mask,
              masks.dilated_mask, masks.global_mask)

    def body() -> str:
        got = call_student(fn)
        if got is None:
            raise CheckFailed("no_return", "your function returned None: did you forget "
                              "`return`?")
        if not isinstance(got, dict):
            raise CheckFailed("wrong_type", "return a dict such as {\"local\": 10, \"dilated\": 20, "
                              f"\"odd\": True, \"global_layers\": 3}}, not {type(got).__name__}.")
        missing = [key for key in REACH_QUESTIONS if key not in got]
        if missing:
            raise CheckFailed("wrong_output", f"predict every answer: missing {missing} (keys "
                              f"{list(REACH_QUESTIONS)}).")
        for key, value in got.items():
            if key not in REACH_QUESTIONS:
                continue
            want_bool = key == "odd"
            if want_bool != isinstance(value, bool) or not isinstance(value, int):
                kind = "True or False" if want_bool else "a whole number (an int)"
                raise CheckFailed("wrong_type", f"“{key}” must be {kind}, got "
                                  f"{type(value).__name__} {value!r}.")
        outcome = _reach_outcome()
        wrong = [f"“{key}”: you predicted {got[key]!r}, it is {outcome[key]!r} ({_REACH_WHY[key]})"
                 for key in REACH_QUESTIONS if got[key] != outcome[key]]
        if wrong:
            raise CheckFailed("wrong_prediction", "; ".join(wrong) + ".")
        return ("all four predictions hold: " + ", ".join(f"{k} = {outcome[k]!r}"
                                                          for k in REACH_QUESTIONS) + ".")

    return custom_check("receptive-field prediction", body, forbid=forbid)
