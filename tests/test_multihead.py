"""utils.multihead: head layout, and parity with torch.nn.MultiheadAttention in float64."""

import pytest
import torch
from torch import nn

from utils.masks import causal_mask, padding_mask
from utils.multihead import MultiHeadAttention, merge_heads, split_heads

F64 = torch.float64
B, LQ, LK, D, H = 2, 5, 7, 12, 3


def _rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=F64)


def test_split_heads_layout():
    x = torch.arange(2 * 3 * 8, dtype=F64).reshape(2, 3, 8)
    s = split_heads(x, 4)
    assert s.shape == (2, 4, 3, 2)
    for h in range(4):
        # Head h holds columns h*Dh:(h+1)*Dh of every token (a view without the
        # transpose would mix tokens into heads).
        torch.testing.assert_close(s[:, h], x[:, :, 2 * h : 2 * h + 2], rtol=0, atol=0)


def test_split_merge_round_trip_any_leading_dims():
    x = _rand(2, 3, 5, 12)
    s = split_heads(x, 3)
    assert s.shape == (2, 3, 3, 5, 4)
    torch.testing.assert_close(merge_heads(s), x, rtol=0, atol=0)
    y = _rand(5, 6)  # no batch dimension
    assert split_heads(y, 2).shape == (2, 5, 3)
    torch.testing.assert_close(merge_heads(split_heads(y, 2)), y, rtol=0, atol=0)


def test_split_heads_bad_n_heads():
    with pytest.raises(ValueError, match=r"n_heads=5 must divide the model dimension d_model=12"):
        split_heads(_rand(2, 3, 12), 5)
    with pytest.raises(ValueError, match="n_heads"):
        split_heads(_rand(2, 3, 12), 0)


def test_bad_n_heads_raises():
    with pytest.raises(ValueError, match=r"n_heads=5 must divide d_model=12"):
        MultiHeadAttention(12, 5)


@pytest.mark.parametrize("bias", [True, False])
def test_parameter_count_is_one_big_heads(bias):
    d = 16
    expected = 4 * d * d + (4 * d if bias else 0)
    for h in (1, 2, 4, 16):
        m = MultiHeadAttention(d, h, bias=bias)
        assert sum(p.numel() for p in m.parameters()) == expected
        assert m.n_parameters == expected
    assert expected == sum(
        p.numel() for p in nn.MultiheadAttention(d, 4, bias=bias).parameters()
    )


def _pair(batch_first, bias=True, seed=0):
    torch.manual_seed(seed)
    ref = nn.MultiheadAttention(D, H, bias=bias, batch_first=batch_first, dtype=F64).eval()
    if bias:  # torch initialises the biases to 0: make them matter
        with torch.no_grad():
            ref.in_proj_bias.normal_()
            ref.out_proj.bias.normal_()
    mine = MultiHeadAttention.from_torch(ref)
    return ref, mine


def _run_torch(ref, batch_first, q, k, v, **kwargs):
    if not batch_first:
        q, k, v = (x.transpose(0, 1) for x in (q, k, v))
    out, w = ref(q, k, v, need_weights=True, average_attn_weights=False, **kwargs)
    return (out if batch_first else out.transpose(0, 1)), w


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_from_torch_parity_no_mask(batch_first, bias):
    ref, mine = _pair(batch_first, bias)
    assert mine.w_q.weight.dtype == F64
    q, k, v = _rand(B, LQ, D, seed=1), _rand(B, LK, D, seed=2), _rand(B, LK, D, seed=3)
    out, w = mine(q, k, v)
    assert out.shape == (B, LQ, D) and w.shape == (B, H, LQ, LK)
    ref_out, ref_w = _run_torch(ref, batch_first, q, k, v)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-10)
    torch.testing.assert_close(w, ref_w, rtol=0, atol=1e-10)


@pytest.mark.parametrize("batch_first", [True, False])
def test_from_torch_parity_attn_mask(batch_first):
    ref, mine = _pair(batch_first, seed=1)
    x = _rand(B, LQ, D, seed=4)
    mask = causal_mask(LQ)  # True = may attend; torch's attn_mask: True = blocked
    out, w = mine(x, x, x, mask=mask)
    ref_out, ref_w = _run_torch(ref, batch_first, x, x, x, attn_mask=~mask)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-10)
    torch.testing.assert_close(w, ref_w, rtol=0, atol=1e-10)
    assert (w[..., ~mask] == 0).all()


@pytest.mark.parametrize("batch_first", [True, False])
def test_from_torch_parity_key_padding_mask(batch_first):
    ref, mine = _pair(batch_first, seed=2)
    q, kv = _rand(B, LQ, D, seed=5), _rand(B, LK, D, seed=6)
    keep = padding_mask([LK, 3], LK)  # (B, LK), True at real tokens
    out, w = mine(q, kv, kv, mask=keep[:, None, None, :])
    ref_out, ref_w = _run_torch(ref, batch_first, q, kv, kv, key_padding_mask=~keep)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-10)
    torch.testing.assert_close(w, ref_w, rtol=0, atol=1e-10)
    assert (w[1, :, :, 3:] == 0).all()


def test_per_head_mask_shapes():
    _, mine = _pair(True, seed=3)
    q, kv = _rand(B, LQ, D, seed=7), _rand(B, LK, D, seed=8)
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(B, H, LQ, LK, generator=g) < 0.7
    mask[..., 0] = True  # no fully masked row
    _, w = mine(q, kv, kv, mask=mask)
    assert (w[~mask] == 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(B, H, LQ, dtype=F64))
    # A (B, 1, Lq, Lk) mask is the same for every head.
    _, w1 = mine(q, kv, kv, mask=mask[:, :1])
    _, w2 = mine(q, kv, kv, mask=mask[:, :1].expand(B, H, LQ, LK))
    torch.testing.assert_close(w1, w2, rtol=0, atol=0)


def test_heads_are_independent_slices():
    """Head h's weights use only the h-th slice of the projected queries and keys."""
    _, mine = _pair(True, seed=4)
    q, kv = _rand(B, LQ, D, seed=9), _rand(B, LK, D, seed=10)
    _, w = mine(q, kv, kv)
    dh = D // H
    pq, pk = mine.w_q(q), mine.w_k(kv)
    for h in range(H):
        s = pq[..., h * dh : (h + 1) * dh] @ pk[..., h * dh : (h + 1) * dh].transpose(-1, -2)
        torch.testing.assert_close(w[:, h], torch.softmax(s / dh**0.5, -1), rtol=0, atol=1e-12)


def test_forward_bad_inputs():
    m = MultiHeadAttention(D, H, dtype=F64)
    x = _rand(B, LQ, D)
    with pytest.raises(ValueError, match=r"key must have last dimension d_model=12"):
        m(x, _rand(B, LK, D + 1), _rand(B, LK, D))
    with pytest.raises(ValueError, match="key and value must have the same length"):
        m(x, _rand(B, LK, D), _rand(B, LK + 1, D))
    with pytest.raises(TypeError, match="bool"):
        m(x, x, x, mask=torch.ones(LQ, LQ))
    with pytest.raises(TypeError, match="MultiheadAttention"):
        MultiHeadAttention.from_torch(m)
