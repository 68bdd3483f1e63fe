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
