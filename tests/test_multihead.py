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


# --------------------------------------------------------------------------- key padding mask


@pytest.mark.parametrize("batch_first", [True, False])
def test_key_padding_mask_matches_torch_when_batch_equals_query_length(batch_first):
    """B = Lq = 5: the case where a (B, Lk) mask passed as ``mask`` is silently read as
    (Lq, Lk). torch's key_padding_mask means True = padding; ours True = real token."""
    ref, mine = _pair(batch_first, seed=5)
    n_b = n_q = 5
    q, kv = _rand(n_b, n_q, D, seed=11), _rand(n_b, LK, D, seed=12)
    keep = padding_mask([7, 2, 5, 1, 3], LK)
    out, w = mine(q, kv, kv, key_padding_mask=keep)
    ref_out, ref_w = _run_torch(ref, batch_first, q, kv, kv, key_padding_mask=~keep)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-10)
    torch.testing.assert_close(w, ref_w, rtol=0, atol=1e-10)
    # with an attention mask as well: both apply
    causal = causal_mask(n_q, LK)
    out, w = mine(q, kv, kv, mask=causal, key_padding_mask=keep)
    ref_out, ref_w = _run_torch(ref, batch_first, q, kv, kv, attn_mask=~causal,
                                key_padding_mask=~keep)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-10)
    torch.testing.assert_close(w, ref_w, rtol=0, atol=1e-10)


def test_key_padding_mask_unbatched_and_errors():
    _, mine = _pair(True, seed=6)
    q, kv = _rand(LQ, D, seed=13), _rand(LK, D, seed=14)
    keep = padding_mask([4], LK)[0]
    out, w = mine(q, kv, kv, key_padding_mask=keep)
    expected = mine(q[None], kv[None], kv[None], key_padding_mask=keep[None])
    torch.testing.assert_close(out, expected[0][0], rtol=0, atol=0)
    assert (w[:, :, 4:] == 0).all()
    qb, kvb = _rand(B, LQ, D, seed=15), _rand(B, LK, D, seed=16)
    with pytest.raises(ValueError, match=r"key_padding_mask must have shape \(B, Lk\) = \(2, 7\) "
                                         r"for query \(2, 5, 12\) and key \(2, 7, 12\), got \(7, 2\)"):
        mine(qb, kvb, kvb, key_padding_mask=padding_mask([3, 4], LK).T)
    with pytest.raises(TypeError, match=r"key_padding_mask must have dtype torch\.bool"):
        mine(qb, kvb, kvb, key_padding_mask=padding_mask([3, 4], LK).float())


# --------------------------------------------------------------------------- dropout


def test_from_torch_copies_dropout_and_matches_torch_in_train_and_eval_mode():
    torch.manual_seed(7)
    ref = nn.MultiheadAttention(D, H, dropout=0.3, batch_first=True, dtype=F64)
    mine = MultiHeadAttention.from_torch(ref)
    assert mine.dropout == 0.3 and mine.training
    q, kv = _rand(B, LQ, D, seed=17), _rand(B, LK, D, seed=18)
    # train mode: the same random numbers drop the same weights
    torch.manual_seed(8)
    ref_out, ref_w = _run_torch(ref, True, q, kv, kv)
    torch.manual_seed(8)
    out, w = mine(q, kv, kv)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-10)
    torch.testing.assert_close(w, ref_w, rtol=0, atol=1e-10)
    assert (w == 0).any()
    # eval mode: no dropout, on both sides
    ref.eval()
    mine.eval()
    out, w = mine(q, kv, kv)
    ref_out, ref_w = _run_torch(ref, True, q, kv, kv)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-10)
    torch.testing.assert_close(w.sum(-1), torch.ones(B, H, LQ, dtype=F64))
    assert not MultiHeadAttention.from_torch(ref).training


def test_dropout_statistics():
    """Train mode: each weight is zeroed with probability p and the rest scaled by 1/(1-p),
    so the weights are unchanged on average; eval mode and p = 0 change nothing."""
    torch.manual_seed(9)
    mine = MultiHeadAttention(D, H, dtype=F64, dropout=0.25)
    q, kv = _rand(64, LQ, D, seed=19), _rand(64, LK, D, seed=20)
    _, dropped = mine(q, kv, kv)
    mine.eval()
    _, clean = mine(q, kv, kv)
    zero = dropped == 0
    assert abs(zero.double().mean().item() - 0.25) < 0.02  # 13 440 weights: sd 0.004
    torch.testing.assert_close(dropped[~zero], clean[~zero] / 0.75)
    assert abs((dropped.mean(0) / clean.mean(0)).mean().item() - 1) < 0.02
    with pytest.raises(ValueError, match=r"dropout must be a probability in \[0, 1\], got 1\.5"):
        MultiHeadAttention(D, H, dropout=1.5)


# --------------------------------------------------------------------------- real inputs


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_error_is_torchs(dtype):
    """A float16/bfloat16 module against float64 on the same rounded weights and inputs:
    within 1.5x the error of torch's own module in that dtype."""
    for seed in range(4):
        torch.manual_seed(seed)
        ref64 = nn.MultiheadAttention(64, 4, batch_first=True, dtype=F64).eval()
        with torch.no_grad():
            ref64.in_proj_weight.mul_(3)  # scores of a few units, as in a trained model
            for p in ref64.parameters():
                p.copy_(p.to(dtype))  # exactly representable in dtype
        ref = nn.MultiheadAttention(64, 4, batch_first=True, dtype=dtype).eval()
        ref.load_state_dict({name: p.to(dtype) for name, p in ref64.state_dict().items()})
        mine = MultiHeadAttention.from_torch(ref)
        q, kv = _rand(2, 30, 64, seed=seed).to(dtype), _rand(2, 40, 64, seed=seed + 10).to(dtype)
        expected = ref64(q.double(), kv.double(), kv.double(), need_weights=False)[0]
        out, w = mine(q, kv, kv)
        assert out.dtype == w.dtype == dtype
        theirs = ref(q, kv, kv, need_weights=False)[0]
        err = (out.double() - expected).abs().max().item()
        err_torch = (theirs.double() - expected).abs().max().item()
        assert err <= 1.5 * err_torch + 1e-3 * torch.finfo(dtype).eps, (seed, err, err_torch)


def test_errors_name_the_arguments_as_passed():
    """Not the internal (B, H, L, D/H) tensors: with one head, query (2, 1, 640) used to be
    reported as q (2, 1, 1, 640)."""
    m = MultiHeadAttention(640, 1)
    x = torch.zeros(2, 1, 640)
    with pytest.raises(ValueError, match=r"leading \(batch\) dimensions of query \(2, 1, 640\), "
                                         r"key \(3, 1, 640\) and value \(3, 1, 640\)"):
        m(x, torch.zeros(3, 1, 640), torch.zeros(3, 1, 640))
    with pytest.raises(TypeError, match=r"query has dtype torch\.float64 but the module's "
                                        r"parameters are torch\.float32"):
        m(x.double(), x, x)
    bad = x.clone()
    bad[0, 0, 5] = float("inf")
    with pytest.raises(ValueError, match=r"value contains \+inf \(shape \(2, 1, 640\)\)"):
        m(x, x, bad)
    half = MultiHeadAttention(8, 2, dtype=torch.float16)
    big = torch.full((1, 3, 8), 6e4, dtype=torch.float16)
    with torch.no_grad():
        half.w_k.weight.fill_(1.0)  # key @ w_k.T = 4.8e5 > 65 504
    with pytest.raises(ValueError, match=r"w_k\(key\) contains \+inf \(shape \(1, 3, 8\)\); key "
                                         r"is too large for w_k in torch\.float16"):
        half(big / 1e4, big, big / 1e4)
    with pytest.raises(ValueError, match=r"mask of shape \(3, 1, 1, 1\) is not broadcastable "
                                         r"to \(B, H, Lq, Lk\) = \(2, 1, 1, 1\)"):
        m(x, x, x, mask=torch.ones(3, 1, 1, 1, dtype=torch.bool))
