"""Tests for `utils.masks`: every pattern equals its definition, checked by brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.attention.bias import causal_lower_right

from utils import cost
from utils.masks import (
    bigbird_mask,
    block_mask,
    causal_mask,
    density,
    dilated_mask,
    fixed_mask,
    global_mask,
    padding_mask,
    random_mask,
    sliding_window_mask,
    strided_mask,
)

PROPERTY = settings(max_examples=50, deadline=None, derandomize=True)
SIZES = range(1, 9)


def brute(n_q: int, n_k: int, allowed) -> torch.Tensor:
    """The mask written out pair by pair: ``allowed(i, j)`` for every query i and key j."""
    return torch.tensor([[bool(allowed(i, j)) for j in range(n_k)] for i in range(n_q)],
                        dtype=torch.bool).reshape(n_q, n_k)


def assert_mask_equal(mask: torch.Tensor, expected: torch.Tensor, **params) -> None:
    assert mask.dtype == torch.bool, params
    assert mask.shape == expected.shape, params
    where = (mask != expected).nonzero().tolist()
    assert torch.equal(mask, expected), f"{params}: differs at {where}"


# --------------------------------------------------------------------------- causal


def test_causal_mask_equals_torch_causal_lower_right():
    for n_k in SIZES:
        for n_q in range(1, n_k + 1):
            expected = causal_lower_right(n_q, n_k)._materialize().to(torch.bool)
            assert_mask_equal(causal_mask(n_q, n_k), expected, n_q=n_q, n_k=n_k)


def test_causal_mask_square_is_lower_triangle():
    for n in SIZES:
        expected = torch.ones(n, n).tril().bool()
        assert_mask_equal(causal_mask(n), expected, n=n)
        assert_mask_equal(causal_mask(n, n), expected, n=n)


@pytest.mark.parametrize(("n_q", "n_k"), [(3, 1), (5, 2), (6, 4), (4, 6), (2, 7)])
def test_causal_mask_equals_definition(n_q, n_k):
    assert_mask_equal(causal_mask(n_q, n_k), brute(n_q, n_k, lambda i, j: j <= i + (n_k - n_q)))


# --------------------------------------------------------------------------- local patterns


def test_sliding_window_mask_equals_definition():
    for n, w in itertools.product(SIZES, range(0, 10)):
        _check_sliding_window(n, w)


def _check_sliding_window(n: int, w: int) -> None:
    mask = sliding_window_mask(n, w)
    assert_mask_equal(mask, brute(n, n, lambda i, j: abs(i - j) <= w), n=n, window=w)
    expected_pairs = n * (2 * w + 1) - w * (w + 1) if w < n else n * n
    assert int(mask.sum()) == expected_pairs, (n, w)
    causal = sliding_window_mask(n, w, causal=True)
    assert_mask_equal(causal, brute(n, n, lambda i, j: 0 <= i - j <= w), n=n, window=w)
    assert_mask_equal(causal, mask & causal_mask(n), n=n, window=w)


def test_strided_mask_equals_definition():
    for n, s in itertools.product(SIZES, range(1, 10)):
        expected = brute(n, n, lambda i, j, s=s: j <= i and (i - j < s or (i - j) % s == 0))
        assert_mask_equal(strided_mask(n, s), expected, n=n, stride=s)


def test_fixed_mask_equals_definition():
    for n, block in itertools.product(SIZES, range(1, 5)):
        for c in range(1, block + 1):

            def allowed(i, j, b=block, c=c):
                return j <= i and (i // b == j // b or j % b >= b - c)

            assert_mask_equal(fixed_mask(n, block, c), brute(n, n, allowed),
                              n=n, block=block, n_summary=c)


def test_fixed_mask_default_summary_is_last_cell_of_each_block():
    assert_mask_equal(fixed_mask(6, 3), fixed_mask(6, 3, n_summary=1))
    assert fixed_mask(6, 3)[5].tolist() == [False, False, True, True, True, True]


def test_dilated_mask_equals_definition():
    for n, w, d in itertools.product(SIZES, range(0, 4), range(1, 4)):
        expected = brute(n, n, lambda i, j, w=w, d=d: abs(i - j) <= w * d and (i - j) % d == 0)
        assert_mask_equal(dilated_mask(n, w, d), expected, n=n, window=w, dilation=d)
        if d == 1:
            assert_mask_equal(dilated_mask(n, w, 1), sliding_window_mask(n, w), n=n, window=w)


def test_block_mask_equals_definition():
    for n, b in itertools.product(SIZES, range(1, 10)):
        expected = brute(n, n, lambda i, j, b=b: i // b == j // b)
        assert_mask_equal(block_mask(n, b), expected, n=n, block=b)


@pytest.mark.parametrize(
    ("n", "tokens"), [(1, [0]), (5, []), (5, [0]), (6, [0, 5]), (7, [2, 2, 4]), (8, (1, 3, 6))]
)
def test_global_mask_equals_definition(n, tokens):
    expected = brute(n, n, lambda i, j: i in tokens or j in tokens)
    assert_mask_equal(global_mask(n, tokens), expected)


# --------------------------------------------------------------------------- random / bigbird


@PROPERTY
@given(n=st.integers(1, 12), data=st.data())
def test_random_mask_rows_have_exactly_n_random_distinct_keys(n, data):
    n_random = data.draw(st.integers(0, n))
    seed = data.draw(st.integers(0, 2**32 - 1))
    mask = random_mask(n, n_random, generator=torch.Generator().manual_seed(seed))
    assert mask.dtype == torch.bool and mask.shape == (n, n)
    assert (mask.sum(-1) == n_random).all()
    again = random_mask(n, n_random, generator=torch.Generator().manual_seed(seed))
    assert_mask_equal(again, mask)


def test_random_mask_differs_across_seeds():
    masks = [random_mask(16, 4, generator=torch.Generator().manual_seed(s)) for s in range(4)]
    for a, b in itertools.combinations(masks, 2):
        assert not torch.equal(a, b)


def test_random_mask_keys_are_roughly_uniform():
    # 400 rows x 5 picks out of 10 keys: each key is picked ~200 times (sd 10).
    mask = random_mask(10, 5, generator=torch.Generator().manual_seed(0))
    counts = torch.stack(
        [random_mask(10, 5, generator=torch.Generator().manual_seed(s)).sum(0) for s in range(40)]
    ).sum(0)
    assert mask.sum() == 50
    assert ((counts - 200).abs() <= 50).all(), counts.tolist()


def test_random_mask_uses_the_global_rng_without_generator():
    torch.manual_seed(123)
    a = random_mask(9, 3)
    torch.manual_seed(123)
    assert_mask_equal(random_mask(9, 3), a)


@pytest.mark.parametrize(
    ("n", "window", "tokens", "n_random"),
    [(1, 0, [0], 1), (8, 1, [0], 2), (12, 2, [0, 11], 3), (40, 3, [0, 39], 4), (12, 1, [0], 8)],
)
def test_bigbird_mask_adds_n_random_keys_outside_window_and_global(n, window, tokens, n_random):
    """BigBird's rule (as its implementation): the random keys are new, so every non-global
    row holds its window, the global columns and exactly n_random more; cost.entries counts it."""
    mask = bigbird_mask(n, window, tokens, n_random, generator=torch.Generator().manual_seed(5))
    seen = sliding_window_mask(n, window) | global_mask(n, tokens)
    assert (mask >= seen).all()
    extra = (mask & ~seen).sum(-1)
    unseen = (~seen).sum(-1)
    assert torch.equal(extra, torch.minimum(unseen, torch.tensor(n_random)))
    again = bigbird_mask(n, window, tokens, n_random, generator=torch.Generator().manual_seed(5))
    assert_mask_equal(again, mask)


@pytest.mark.parametrize(("n", "window", "n_global", "n_random"),
                         [(16, 1, 1, 2), (64, 2, 2, 3), (40, 3, 2, 4), (12, 1, 1, 8)])
def test_bigbird_mask_count_is_cost_entries(n, window, n_global, n_random):
    mask = bigbird_mask(n, window, range(n_global), n_random,
                        generator=torch.Generator().manual_seed(0))
    assert int(mask.sum()) == cost.entries("bigbird", n, window=window, n_global=n_global,
                                           n_random=n_random)


def test_bigbird_random_keys_are_uniform_over_unseen_keys():
    # query 10 of n = 24, w = 2, global [0]: 24 - 5 - 1 = 18 unseen keys, 3 drawn per mask;
    # over 600 masks each unseen key is drawn ~100 times (sd ~9.4), never a seen key twice.
    seen = sliding_window_mask(24, 2) | global_mask(24, [0])
    counts = torch.zeros(24)
    for s in range(600):
        row = bigbird_mask(24, 2, [0], 3, generator=torch.Generator().manual_seed(s))[10]
        counts += (row & ~seen[10]).float()
    assert counts[seen[10]].sum() == 0
    assert ((counts[~seen[10]] - 100).abs() <= 40).all(), counts.tolist()


def test_bigbird_mask_differs_across_seeds_and_uses_the_global_rng():
    a, b = (bigbird_mask(32, 2, [0], 3, generator=torch.Generator().manual_seed(s)) for s in (0, 1))
    assert not torch.equal(a, b)
    torch.manual_seed(7)
    c = bigbird_mask(16, 1, [0], 2)
    torch.manual_seed(7)
    assert_mask_equal(bigbird_mask(16, 1, [0], 2), c)


# --------------------------------------------------------------------------- padding, density


@pytest.mark.parametrize(
    ("lengths", "max_len"),
    [([3], 3), ([0, 1, 4], 4), ((2, 5, 5, 1), 6), (torch.tensor([1, 3]), 3)],
)
def test_padding_mask_equals_definition(lengths, max_len):
    mask = padding_mask(lengths, max_len)
    as_list = torch.as_tensor(lengths).tolist()
    assert_mask_equal(mask, brute(len(as_list), max_len, lambda b, t: t < as_list[b]))
    assert mask.sum(-1).tolist() == as_list


@pytest.mark.parametrize(
    "mask",
    [causal_mask(5), sliding_window_mask(7, 1), torch.zeros(3, 4, dtype=torch.bool),
     torch.ones(2, 3, 4, dtype=torch.bool), strided_mask(9, 3)],
)
def test_density_is_fraction_of_allowed_pairs(mask):
    allowed = sum(bool(x) for x in mask.flatten().tolist())
    assert density(mask) == pytest.approx(allowed / mask.numel())


def test_density_of_causal_mask():
    for n in SIZES:
        assert density(causal_mask(n)) == pytest.approx((n + 1) / (2 * n))


# --------------------------------------------------------------------------- bad input

BAD_INPUTS = [
    ("negative window", lambda: sliding_window_mask(5, -1), ValueError, r"window must be >= 0"),
    ("float window", lambda: sliding_window_mask(5, 1.5), TypeError, r"window must be an int"),
    ("empty n", lambda: sliding_window_mask(0, 1), ValueError, r"n must be >= 1"),
    ("bool n", lambda: block_mask(True, 1), TypeError, r"n must be an int"),
    ("causal n_q 0", lambda: causal_mask(0), ValueError, r"n_q must be >= 1"),
    ("causal n_k 0", lambda: causal_mask(2, 0), ValueError, r"n_k must be >= 1"),
    ("causal float", lambda: causal_mask(2.0), TypeError, r"n_q must be an int"),
    ("padding too long", lambda: padding_mask([2, 5], 4), ValueError, r"lengths .*max_len=4"),
    ("padding negative", lambda: padding_mask([-1, 2], 4), ValueError, r"lengths"),
    ("padding float", lambda: padding_mask([1.5, 2.0], 4), TypeError, r"lengths"),
    ("padding 2-D", lambda: padding_mask([[1, 2]], 4), TypeError, r"lengths"),
    ("padding max_len", lambda: padding_mask([0], 0), ValueError, r"max_len must be >= 1"),
    ("n_random > n", lambda: random_mask(3, 4), ValueError, r"n_random=4 must be <= n=3"),
    ("negative n_random", lambda: random_mask(3, -1), ValueError, r"n_random must be >= 0"),
    ("bigbird n_random", lambda: bigbird_mask(3, 1, [0], 5), ValueError, r"n_random=5"),
    ("bigbird window", lambda: bigbird_mask(3, -2, [0], 1), ValueError, r"window"),
    ("global out of range", lambda: global_mask(4, [4]), ValueError, r"global_tokens .*\[4\]"),
    ("global negative", lambda: global_mask(4, [-1]), ValueError, r"global_tokens"),
    ("stride 0", lambda: strided_mask(4, 0), ValueError, r"stride must be >= 1"),
    ("block 0", lambda: block_mask(4, 0), ValueError, r"block must be >= 1"),
    ("fixed summary", lambda: fixed_mask(4, 2, 3), ValueError, r"n_summary=3 must be <= block=2"),
    ("dilation 0", lambda: dilated_mask(4, 1, 0), ValueError, r"dilation must be >= 1"),
    ("dilated window", lambda: dilated_mask(4, -1, 1), ValueError, r"window must be >= 0"),
    ("density float", lambda: density(torch.ones(2, 2)), TypeError, r"mask must be a bool"),
    ("density list", lambda: density([[True]]), TypeError, r"mask must be a bool"),
]


@pytest.mark.parametrize(("call", "error", "match"), [c[1:] for c in BAD_INPUTS],
                         ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_raises_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_global_tokens_must_be_int_positions():
    """A float position was truncated (1.5 -> 1) and a bool taken as 0 or 1, silently."""
    with pytest.raises(TypeError, match=r"global_tokens must hold ints \(positions\), got float "
                                        r"1\.5 in \[0, 1\.5\]"):
        global_mask(4, [0, 1.5])
    with pytest.raises(TypeError, match=r"global_tokens must hold ints .*got bool True"):
        bigbird_mask(4, 1, [True], 0)
    with pytest.raises(TypeError, match=r"global_tokens must be a sequence of ints, got int"):
        global_mask(4, 2)
    expected = global_mask(5, [0, 3])
    for tokens in (np.array([0, 3]), torch.tensor([0, 3]), range(0, 4, 3), (t for t in (0, 3))):
        assert torch.equal(global_mask(5, tokens), expected)


def test_generator_and_density_errors_name_what_was_passed():
    with pytest.raises(TypeError, match=r"generator must be a torch\.Generator or None, got int"):
        random_mask(4, 2, generator=0)
    with pytest.raises(TypeError, match=r"generator must be a torch\.Generator or None, got int"):
        bigbird_mask(4, 1, [0], 1, generator=0)
    with pytest.raises(TypeError, match=r"mask must be a bool torch\.Tensor, got torch\.float32"):
        density(torch.ones(3, 3))
