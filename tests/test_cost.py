"""`utils.cost`: exact counts equal the masks' own counts; receptive fields match brute force;
measured memory sees N x N where there is one."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from utils import cost, masks
from utils.attention import scaled_dot_product_attention
from utils.checks.sparse import reference_bigbird_mask


@pytest.mark.parametrize("n", [1, 2, 5, 16, 37])
def test_entries_equal_the_mask_counts(n):
    total = lambda m: int(m.sum())  # noqa: E731
    assert cost.entries("dense", n) == n * n
    assert cost.entries("causal", n) == total(masks.causal_mask(n))
    for w in range(0, 9):
        assert cost.entries("local", n, window=w) == total(masks.sliding_window_mask(n, w))
        assert cost.entries("causal_local", n, window=w) == total(
            masks.sliding_window_mask(n, w, causal=True))
        for dil in (1, 2, 3):
            assert cost.entries("dilated", n, window=w, dilation=dil) == total(
                masks.dilated_mask(n, w, dil))
    for s in range(1, 9):
        assert cost.entries("strided", n, stride=s) == total(masks.strided_mask(n, s))
        assert cost.entries("block", n, block=s) == total(masks.block_mask(n, s))
        for c in range(1, s + 1):
            assert cost.entries("fixed", n, block=s, n_summary=c) == total(
                masks.fixed_mask(n, s, c))
    for g in range(0, 4):
        assert cost.entries("global", n, n_global=g) == total(
            masks.global_mask(n, range(min(g, n))))
    for r in range(0, min(n, 4) + 1):
        gen = torch.Generator().manual_seed(r)
        assert cost.entries("random", n, n_random=r) == total(masks.random_mask(n, r, gen))


@pytest.mark.parametrize("n, w, g, r", [(16, 1, 1, 2), (40, 3, 2, 4), (64, 2, 5, 3), (9, 0, 0, 1)])
def test_bigbird_entries_count_bigbirds_rule(n, w, g, r):
    mask = reference_bigbird_mask(n, w, range(g), r, generator=torch.Generator().manual_seed(0))
    assert cost.entries("bigbird", n, window=w, n_global=g, n_random=r) == int(mask.sum())


def test_keys_per_query_is_linear_time_for_long_sequences():
    n = 1 << 20  # an N x N mask would hold 10^12 entries
    assert cost.entries("local", n, window=64) == n * 129 - 64 * 65
    assert cost.entries("block", n, block=64) == n * 64


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="unknown pattern"):
        cost.entries("diagonal", 8)
    with pytest.raises(TypeError, match="parameters"):
        cost.entries("local", 8)
    with pytest.raises(TypeError, match="parameters"):
        cost.entries("local", 8, window=2, stride=3)
    with pytest.raises(ValueError, match="stride"):
        cost.entries("strided", 8, stride=0)
    with pytest.raises(TypeError, match="window"):
        cost.entries("local", 8, window=2.0)
    with pytest.raises(ValueError, match="n_random"):
        cost.entries("bigbird", 8, window=2, n_global=1, n_random=6)
    with pytest.raises(ValueError, match="n_summary"):
        cost.entries("fixed", 8, block=2, n_summary=3)


def test_flops_and_bytes():
    assert cost.flops(10, 64) == 2 * 10 * 128
    assert cost.flops(10, 64, 32) == 2 * 10 * 96
    assert cost.score_bytes(10) == 40
    assert cost.score_bytes(10, torch.float64) == 80


# --------------------------------------------------------------------------- receptive field


def brute_reach(mask, layers):
    m = mask | torch.eye(len(mask), dtype=torch.bool)
    r = torch.eye(len(mask), dtype=torch.bool)
    for _ in range(layers):
        r = torch.stack([(r[i][:, None] & m).any(0) for i in range(len(m))])  # r @ m
    return r


def test_reach_is_the_boolean_matrix_power():
    gen = torch.Generator().manual_seed(0)
    mask = masks.random_mask(12, 2, gen)
    for layers in range(0, 6):
        assert torch.equal(cost.reach(mask, layers), brute_reach(mask, layers))


@pytest.mark.parametrize("n, w", [(10, 2), (64, 4), (33, 5), (8, 7), (5, 0)])
def test_local_window_needs_ceil_n_minus_1_over_w_layers(n, w):
    got = cost.layers_to_reach_all(masks.sliding_window_mask(n, w))
    if w == 0:
        assert got is None
    else:
        assert got == -(-(n - 1) // w)


def test_one_global_token_gives_two_hops():
    for n, w in [(64, 1), (100, 3)]:
        mask = masks.sliding_window_mask(n, w) | masks.global_mask(n, [n // 2])
        assert cost.layers_to_reach_all(mask) == 2


def test_dense_is_one_layer_and_disconnected_is_none():
    assert cost.layers_to_reach_all(torch.ones(4, 4, dtype=torch.bool)) == 1
    assert cost.layers_to_reach_all(masks.block_mask(12, 4)) is None


def test_layers_to_reach_all_matches_brute_force():
    gen = torch.Generator().manual_seed(1)
    for n in (6, 11, 20):
        mask = masks.random_mask(n, 1, gen) | masks.sliding_window_mask(n, 1, causal=True)
        got = cost.layers_to_reach_all(mask)
        layers = next((k for k in range(1, n + 1) if brute_reach(mask, k).all()), None)
        assert got == layers
    seen = set()
    for seed in range(30):  # some random masks connect everything, some never do
        mask = masks.random_mask(9, 2, torch.Generator().manual_seed(seed))
        layers = next((k for k in range(1, 10) if brute_reach(mask, k).all()), None)
        assert cost.layers_to_reach_all(mask) == layers
        seen.add(layers is None)
    assert seen == {True, False}


def test_receptive_field_bad_input():
    with pytest.raises(TypeError):
        cost.reach(torch.ones(3, 3), 1)
    with pytest.raises(ValueError, match="square"):
        cost.layers_to_reach_all(torch.ones(3, 4, dtype=torch.bool))


# --------------------------------------------------------------------------- measured memory


def test_peak_memory_sees_the_n_by_n_scores():
    n, d = 256, 8
    q, k, v = torch.randn(3, n, d).unbind(0)
    out, peak = cost.peak_memory(lambda: scaled_dot_product_attention(q, k, v))
    assert out[0].shape == (n, d)
    assert peak >= n * n * 4  # the N × N weights, float32 (normalised in place of the scores)


def test_peak_memory_ignores_views_and_inputs_and_is_reproducible():
    x = torch.randn(1000)
    _, peak = cost.peak_memory(lambda: x.view(10, 100).t()[0])
    assert peak == 0
    _, a = cost.peak_memory(lambda: (x * 2) + 1)
    _, b = cost.peak_memory(lambda: (x * 2) + 1)
    assert a == b == 2 * 4000  # x*2 is alive while +1 allocates its result


def test_peak_memory_counts_frees():
    def steps():
        for _ in range(5):
            y = torch.empty(1000)  # each freed before the next
            del y

    assert cost.peak_memory(steps)[1] == 4000


def test_fused_attention_is_linear_in_memory():
    q = torch.randn(1, 1, 1024, 16)
    _, peak = cost.peak_memory(lambda: F.scaled_dot_product_attention(q, q, q))
    assert peak < 1024 * 1024 * 4 / 8  # far below an N x N float matrix


def test_one_thread_restores_the_thread_count():
    before = torch.get_num_threads()
    with cost.one_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), cost.one_thread():
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before


def test_counts_and_measures_reject_bad_arguments():
    """flops('a', 3) returned a string and flops(-4, 3) a negative count."""
    with pytest.raises(TypeError, match=r"n_entries must be an int, got str 'a'"):
        cost.flops("a", 3)
    with pytest.raises(ValueError, match=r"n_entries must be >= 0, got -4"):
        cost.flops(-4, 3)
    with pytest.raises(ValueError, match=r"d_v must be >= 1, got 0"):
        cost.flops(10, 3, 0)
    with pytest.raises(TypeError, match=r"dtype must be a torch\.dtype, got str 'float32'"):
        cost.score_bytes(10, "float32")
    with pytest.raises(TypeError, match=r"fn must be a function of no arguments, got Tensor"):
        cost.peak_memory(torch.ones(3))
    with pytest.raises(TypeError, match=r"mask must be a bool torch\.Tensor, got torch\.int64"):
        cost.reach(torch.ones(3, 3, dtype=torch.long), 2)
