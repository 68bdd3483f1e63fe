"""Tests for `utils.kv_cache`: generation through a cache equals full causal attention."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right

from utils.attention import self_attention
from utils.kv_cache import KVCache, incremental_self_attention
from utils.masks import causal_mask


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 20])
def test_incremental_equals_full_causal_attention(chunk):
    x = randn(2, 7, 5)
    w_q, w_k, w_v = randn(5, 4, seed=1), randn(5, 4, seed=2), randn(5, 3, seed=3)
    full = F.scaled_dot_product_attention(x @ w_q, x @ w_k, x @ w_v, is_causal=True)
    got = incremental_self_attention(x, w_q, w_k, w_v, chunk=chunk)
    assert got.shape == (2, 7, 3)
    torch.testing.assert_close(got, full, rtol=0, atol=1e-12)
    ours = self_attention(x, w_q, w_k, w_v, mask=causal_mask(7))[0]
    torch.testing.assert_close(got, ours, rtol=0, atol=1e-12)


def test_token_by_token_weights_are_the_rows_of_the_causal_matrix():
    x = randn(6, 4, seed=4)
    w = randn(4, 4, seed=5)
    _, full = self_attention(x, w, w.T, w, mask=causal_mask(6))
    cache = KVCache()
    for t in range(6):
        cache.append(x[t:t + 1] @ w.T, x[t:t + 1] @ w)
        assert len(cache) == t + 1
        _, weights = cache.attend(x[t:t + 1] @ w)
        assert weights.shape == (1, t + 1)
        torch.testing.assert_close(weights[0], full[t, :t + 1], rtol=0, atol=1e-12)
        assert torch.all(full[t, t + 1:] == 0)


def test_a_chunk_uses_the_bottom_right_mask_like_torch_causal_lower_right():
    q, k, v = randn(1, 3, 4, seed=6), randn(1, 8, 4, seed=7), randn(1, 8, 2, seed=8)
    cache = KVCache()
    cache.append(k, v)
    out, weights = cache.attend(q)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(3, 8))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    assert torch.equal(weights[0] > 0, causal_mask(3, 8))
    # torch's is_causal=True is top-left aligned: different for n_q < n_k
    top_left = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert (out - top_left).abs().max() > 0.1


def test_reset_and_repr():
    cache = KVCache()
    assert len(cache) == 0 and "empty" in repr(cache)
    cache.append(randn(2, 3), randn(2, 5))
    assert "(2, 3)" in repr(cache)
    cache.reset()
    assert len(cache) == 0


def test_errors_name_the_problem():
    cache = KVCache()
    with pytest.raises(ValueError, match="empty"):
        cache.attend(randn(1, 3))
    cache.append(randn(2, 3), randn(2, 5))
    with pytest.raises(ValueError, match="only 2 positions"):
        cache.attend(randn(3, 3))
    with pytest.raises(ValueError, match="does not fit"):
        cache.append(randn(1, 4), randn(1, 5))
    with pytest.raises(ValueError, match="must agree"):
        cache.append(randn(1, 3), randn(2, 5))
    with pytest.raises(TypeError, match="chunk"):
        incremental_self_attention(randn(3, 2), randn(2, 2), randn(2, 2), randn(2, 2), chunk=1.5)
    with pytest.raises(ValueError, match="w_q"):
        incremental_self_attention(randn(3, 2), randn(3, 2), randn(2, 2), randn(2, 2))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_matches_self_attention_and_torch(dtype):
    """Computed (and cached) in float32 like self_attention: the same result, and no further
    from float64 than torch SDPA on half projections (before: up to 5x further, scores and
    weights rounded to half)."""
    for seed in range(4):
        x = (randn(2, 24, 16, seed=seed) * 3).to(dtype)
        w_q, w_k, w_v = ((randn(16, 16, seed=seed + s) * 0.5).to(dtype) for s in (10, 20, 30))
        got = incremental_self_attention(x, w_q, w_k, w_v, chunk=5)
        assert got.dtype == dtype
        full = self_attention(x, w_q, w_k, w_v, mask=causal_mask(24))[0]
        torch.testing.assert_close(got, full, rtol=torch.finfo(dtype).eps, atol=0)
        q, k, v = (x.double() @ w.double() for w in (w_q, w_k, w_v))
        ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        theirs = F.scaled_dot_product_attention(x @ w_q, x @ w_k, x @ w_v, is_causal=True)
        err = (got.double() - ref).abs().max().item()
        err_torch = (theirs.double() - ref).abs().max().item()
        assert err <= err_torch, (seed, err, err_torch)


def test_half_precision_large_inputs_give_no_error():
    """x = 30 * ones plus 0..5 in column 0, w = ones (d = 8): q = 240 + t and k = 210 (w_k
    ignores column 0), scores over 140 000 > float16's 65 504. Every earlier key ties:
    token t's output is the mean of the first t + 1 values."""
    x = torch.full((1, 6, 8), 30.0, dtype=torch.float16)
    x[..., 0] += torch.arange(6, dtype=torch.float16)
    w = torch.ones(8, 8, dtype=torch.float16)
    w_v = torch.eye(8, dtype=torch.float16)
    w_k = w.clone()
    w_k[0] = 0  # the keys ignore the varying column: all keys equal
    got = incremental_self_attention(x, w, w_k, w_v)
    expected = x.double().cumsum(1) / torch.arange(1, 7, dtype=torch.float64)[:, None]
    torch.testing.assert_close(got.double(), expected, rtol=1e-3, atol=0)


def test_cache_errors_name_the_cache_and_the_arguments():
    cache = KVCache()
    cache.append(randn(2, 3), randn(2, 5))
    with pytest.raises(ValueError, match=r"q has d_k=4 \(shape \(1, 4\)\) but the cached keys "
                                         r"have d_k=3 \(k \(2, 3\)\)"):
        cache.attend(randn(1, 4))
    with pytest.raises(ValueError, match=r"leading \(batch\) dimensions of q \(2, 1, 3\) and of "
                                         r"the cache's k \(3, 2, 3\)"):
        batched = KVCache()
        batched.append(randn(3, 2, 3), randn(3, 2, 5))
        batched.attend(randn(2, 1, 3))
    bad = randn(1, 5)
    bad[0, 2] = float("inf")
    with pytest.raises(ValueError, match=r"v contains \+inf \(shape \(1, 5\)\)"):
        cache.append(randn(1, 3), bad)
