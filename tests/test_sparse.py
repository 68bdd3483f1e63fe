"""utils.sparse: blockwise sliding-window attention equals the dense masked version."""

import ctypes
import sys
import time
from pathlib import Path

import pytest
import torch

from utils.attention import scaled_dot_product_attention
from utils.masks import sliding_window_mask
from utils.sparse import sliding_window_attention

F64 = torch.float64


def _qkv(*batch, n, d=8, dtype=F64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(*batch, n, d, generator=g, dtype=dtype) for _ in range(3))


def _dense(q, k, v, window, causal):
    mask = sliding_window_mask(q.shape[-2], window, causal=causal)
    return scaled_dot_product_attention(q, k, v, mask=mask)[0]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    ("n", "window"),
    [(1, 0), (1, 3), (7, 0), (7, 1), (7, 6), (7, 7), (7, 50), (64, 31), (64, 32), (65, 32),
     (100, 0), (100, 5), (100, 33), (130, 40), (200, 64)],
)
def test_equals_dense_masked(n, window, causal):
    q, k, v = _qkv(2, 3, n=n, seed=n + window)
    out = sliding_window_attention(q, k, v, window, causal=causal)
    assert out.shape == v.shape
    torch.testing.assert_close(out, _dense(q, k, v, window, causal), rtol=0, atol=1e-10)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    ("n", "window", "block"),
    [(50, 3, 3), (50, 3, 7), (97, 10, 1), (97, 10, 4), (97, 10, 16), (97, 10, 97), (97, 10, 200)],
)
def test_any_block_size(n, window, block, causal):
    """L not a multiple of the block; block smaller than, equal to, larger than the window,
    and larger than L."""
    q, k, v = _qkv(n=n, seed=1)
    out = sliding_window_attention(q, k, v, window, causal=causal, block_size=block)
    torch.testing.assert_close(out, _dense(q, k, v, window, causal), rtol=0, atol=1e-10)


@pytest.mark.parametrize("budget", [300, 5000, 40000])
@pytest.mark.parametrize("window", [7, 40, 60])
def test_tiling_gives_the_same(monkeypatch, budget, window):
    """Small score budgets: inner tiles of one sequence done in place plus edge tiles (none
    inner when the window is wide), or tiles of whole sequences."""
    import utils.sparse

    monkeypatch.setattr(utils.sparse, "_CHUNK_ELEMENTS", budget)
    q, k, v = _qkv(2, 3, n=101, seed=9)
    for causal in (False, True):
        out = sliding_window_attention(q, k, v, window, causal=causal, block_size=5)
        torch.testing.assert_close(out, _dense(q, k, v, window, causal), rtol=0, atol=1e-10)


def test_window_zero_is_identity_on_values():
    q, k, v = _qkv(2, n=40, seed=2)
    torch.testing.assert_close(sliding_window_attention(q, k, v, 0), v, rtol=0, atol=1e-12)


def test_wide_window_is_full_attention():
    q, k, v = _qkv(3, n=45, seed=3)
    full = scaled_dot_product_attention(q, k, v)[0]
    for window in (44, 45, 1000):
        torch.testing.assert_close(sliding_window_attention(q, k, v, window), full,
                                   rtol=0, atol=1e-10)


def test_broadcast_batch_dims_and_d_v():
    g = torch.Generator().manual_seed(4)
    q = torch.randn(2, 1, 70, 8, generator=g, dtype=F64)
    k = torch.randn(1, 3, 70, 8, generator=g, dtype=F64)
    v = torch.randn(70, 5, generator=g, dtype=F64)
    out = sliding_window_attention(q, k, v, 9)
    assert out.shape == (2, 3, 70, 5)
    torch.testing.assert_close(out, _dense(q, k, v, 9, False), rtol=0, atol=1e-10)


def test_float32_within_1e5():
    q, k, v = _qkv(1, 4, n=300, d=64, dtype=torch.float32, seed=5)
    for causal in (False, True):
        out = sliding_window_attention(q, k, v, 64, causal=causal)
        torch.testing.assert_close(out, _dense(q, k, v, 64, causal), rtol=0, atol=1e-5)


def test_causal_output_ignores_the_future():
    q, k, v = _qkv(n=90, seed=6)
    out = sliding_window_attention(q, k, v, 8, causal=True)
    k2, v2 = k.clone(), v.clone()
    k2[50:] += 3.0
    v2[50:] -= 2.0
    out2 = sliding_window_attention(q, k2, v2, 8, causal=True)
    torch.testing.assert_close(out2[:50], out[:50], rtol=0, atol=0)
    assert not torch.allclose(out2[50:], out[50:])


def test_large_scores_stay_finite():
    q, k, v = _qkv(n=100, dtype=torch.float32, seed=7)
    out = sliding_window_attention(q * 1e3, k * 1e3, v, 4)
    assert torch.isfinite(out).all()


def _status_bytes(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")
def test_long_sequence_uses_no_l_by_l_memory():
    """L = 32768: dense float32 scores alone would take 4 GiB; the blockwise version needs
    a few MiB beyond its inputs and output, and is fast."""
    n, d = 32768, 16
    q, k, v = _qkv(1, n=n, d=d, dtype=torch.float32, seed=8)
    sliding_window_attention(q[..., :512, :], k[..., :512, :], v[..., :512, :], 64)  # warm up
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap memory back to the OS
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM)
    except OSError:
        pytest.skip("cannot reset the peak RSS here")
    base = _status_bytes("VmRSS")
    start = time.perf_counter()
    out = sliding_window_attention(q, k, v, 64)
    elapsed = time.perf_counter() - start
    peak = _status_bytes("VmHWM") - base
    assert out.shape == (1, n, d) and torch.isfinite(out).all()
    assert peak < 256 * 2**20, f"peak {peak / 2**20:.0f} MiB"  # dense: 4096 MiB
    assert elapsed < 5.0
    # Spot check a few rows against the exact definition.
    for i in (0, 1000, n - 1):
        lo, hi = max(0, i - 64), min(n, i + 65)
        s = (q[0, i] @ k[0, lo:hi].T) / d**0.5
        torch.testing.assert_close(out[0, i], torch.softmax(s, -1) @ v[0, lo:hi],
                                   rtol=0, atol=1e-5)


def test_bad_inputs_raise():
    q, k, v = _qkv(n=10)
    with pytest.raises(ValueError, match="window must be >= 0, got -1"):
        sliding_window_attention(q, k, v, -1)
    with pytest.raises(TypeError, match="window must be an int"):
        sliding_window_attention(q, k, v, 2.5)
    with pytest.raises(ValueError, match=r"same length L.*q \(10, 8\), k \(9, 8\)"):
        sliding_window_attention(q, k[:9], v[:9], 2)
    with pytest.raises(ValueError, match=r"q and k must have the same last dimension"):
        sliding_window_attention(q, k[..., :4], v, 2)
    with pytest.raises(ValueError, match="block_size must be > 0, got 0"):
        sliding_window_attention(q, k, v, 3, block_size=0)
    with pytest.raises(TypeError, match="causal must be a bool"):
        sliding_window_attention(q, k, v, 3, causal="yes")
    bad = q.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="q contains NaN"):
        sliding_window_attention(bad, k, v, 3)
    with pytest.raises(ValueError, match="empty"):
        sliding_window_attention(q[:0], k[:0], v[:0], 3)


# --------------------------------------------------------------------------- real inputs

HALF = [torch.float16, torch.bfloat16]


def _torch_band(q, k, v, window, causal):
    import torch.nn.functional as F

    mask = sliding_window_mask(q.shape[-2], window, causal=causal)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize(("batch", "n", "d", "window"), [((1, 4), 300, 64, 64), ((3,), 97, 16, 10),
                                                          ((), 40, 8, 3)])
@pytest.mark.parametrize("causal", [False, True])
def test_half_precision_error_is_torchs(dtype, batch, n, d, window, causal):
    """float16/bfloat16 against a float64 reference on the same inputs: within 1.5x the
    error of torch SDPA with the band mask (before: about 10x, computed in half)."""
    for seed in range(4):
        q, k, v = _qkv(*batch, n=n, d=d, seed=seed)
        q, k, v = (q * 3).to(dtype), (k * 3).to(dtype), v.to(dtype)
        out = sliding_window_attention(q, k, v, window, causal=causal)
        assert out.dtype == dtype
        ref = _torch_band(q.double(), k.double(), v.double(), window, causal)
        err = (out.double() - ref).abs().max().item()
        err_torch = (_torch_band(q, k, v, window, causal).double() - ref).abs().max().item()
        assert err <= 1.5 * err_torch + 1e-3 * torch.finfo(dtype).eps, (seed, err, err_torch)


@pytest.mark.parametrize(("dtype", "size"), [(torch.float16, 100.0), (torch.bfloat16, 1e19)],
                         ids=str)
@pytest.mark.parametrize("causal", [False, True])
def test_half_precision_large_inputs_give_no_nan(dtype, size, causal):
    """q = k = 100 * ones (d = 64) in float16 gave NaN (scores 80 000 overflow float16):
    every key in the window ties, so the output is the mean of the values it sees."""
    n, window = 50, 4
    q = torch.full((2, n, 64), size, dtype=dtype)
    v = _qkv(2, n=n, d=64, seed=10)[2].to(dtype)
    out = sliding_window_attention(q, q, v, window, causal=causal)
    mask = sliding_window_mask(n, window, causal=causal).double()
    expected = (mask / mask.sum(-1, keepdim=True)) @ v.double()
    torch.testing.assert_close(out.double(), expected, rtol=0,
                               atol=2 * torch.finfo(dtype).eps * v.abs().max().item())


@pytest.mark.parametrize(("dtype", "size"), [(torch.bfloat16, 1e30), (torch.float32, 1e25),
                                             (F64, 1e160)], ids=str)
def test_products_beyond_the_dtype_give_the_limit_not_nan(dtype, size):
    """Finite inputs whose scores overflow even float32 (float64): the softmax becomes a
    hard maximum over the window, as dense attention computes it, never NaN."""
    q, k, v = _qkv(2, n=120, d=16, seed=11)
    q, k, v = (q * size).to(dtype), (k * size).to(dtype), v.to(dtype)
    for causal in (False, True):
        out = sliding_window_attention(q, k, v, 7, causal=causal, block_size=5)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, _dense(q, k, v, 7, causal), rtol=0, atol=0)


def test_inf_in_an_input_is_named():
    inputs = dict(zip("qkv", _qkv(n=10), strict=True))
    for name in "qkv":
        bad = dict(inputs, **{name: inputs[name].clone()})
        bad[name][4, 2] = float("inf")
        with pytest.raises(ValueError, match=rf"{name} contains \+inf \(shape \(10, 8\)\)"):
            sliding_window_attention(bad["q"], bad["k"], bad["v"], 3)


@pytest.mark.parametrize("budget", [1 << 20, 2000])
@pytest.mark.parametrize("causal", [False, True])
def test_key_padding_mask_equals_dense(monkeypatch, budget, causal):
    """Padding at the end (lengths) and anywhere (random), inner tiles and edge tiles; a
    query whose window holds only padding gets zero, as in dense attention."""
    import utils.sparse

    monkeypatch.setattr(utils.sparse, "_CHUNK_ELEMENTS", budget)
    g = torch.Generator().manual_seed(12)
    for n, window, block in [(40, 3, None), (101, 7, 5), (130, 40, None)]:
        q, k, v = _qkv(3, n=n, seed=n)
        lengths = torch.tensor([n, 1, n // 2])
        for keep in (torch.arange(n)[None] < lengths[:, None], torch.rand(3, n, generator=g) < 0.3):
            out = sliding_window_attention(q, k, v, window, causal=causal, block_size=block,
                                           key_padding_mask=keep)
            mask = sliding_window_mask(n, window, causal=causal)
            expected = scaled_dot_product_attention(q, k, v, mask=mask, key_padding_mask=keep)[0]
            torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)
    # sequence 1 keeps one token: the last queries' windows (40 wide) hold only padding
    keep = torch.arange(n)[None] < lengths[:, None]
    out = sliding_window_attention(q, k, v, window, causal=causal, key_padding_mask=keep)
    assert (out[1, 41:] == 0).all() and (out[1, :41] != 0).all()
    with pytest.raises(ValueError, match=r"key_padding_mask must have shape \(B, Lk\) = \(3, 130\) "
                                         r"for q \(3, 130, 8\) and k \(3, 130, 8\)"):
        sliding_window_attention(q, k, v, 4, key_padding_mask=keep[:, :-1])
