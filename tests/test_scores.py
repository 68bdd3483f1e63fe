"""utils.scores: every score function against an explicit float64 reference."""

import math

import pytest
import torch

from utils import scores

F64 = torch.float64


def _rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=F64)


def _loop(q, k, f):
    """Reference: score[b, i, j] = f(q[b, i], k[b, j]) with explicit loops."""
    out = torch.empty(q.shape[0], q.shape[1], k.shape[1], dtype=F64)
    for b in range(q.shape[0]):
        for i in range(q.shape[1]):
            for j in range(k.shape[1]):
                out[b, i, j] = f(q[b, i], k[b, j])
    return out


def test_score_functions_keys():
    assert set(scores.SCORE_FUNCTIONS) == {
        "dot", "scaled_dot", "general", "additive", "concat", "cosine",
    }
    assert scores.SCORE_FUNCTIONS["additive"] is scores.additive


def test_dot_and_scaled_dot():
    q, k = _rand(2, 4, 8, seed=1), _rand(2, 5, 8, seed=2)
    ref = _loop(q, k, lambda a, b: (a * b).sum())
    torch.testing.assert_close(scores.dot(q, k), ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(scores.scaled_dot(q, k), ref / math.sqrt(8), rtol=0, atol=1e-12)


def test_general_is_q_w_kT():
    q, k, w = _rand(2, 3, 4, seed=1), _rand(2, 6, 5, seed=2), _rand(4, 5, seed=3)
    ref = _loop(q, k, lambda a, b: a @ w @ b)
    torch.testing.assert_close(scores.general(q, k, w), ref, rtol=0, atol=1e-12)
    # With the identity it is the plain dot product.
    q2 = _rand(3, 5, seed=4)
    torch.testing.assert_close(scores.general(q2, k[0], torch.eye(5, dtype=F64)),
                               scores.dot(q2, k[0]))


def test_additive_matches_bahdanau():
    q, k = _rand(2, 3, 4, seed=1), _rand(2, 6, 5, seed=2)
    w_q, w_k, v = _rand(4, 7, seed=3), _rand(5, 7, seed=4), _rand(7, seed=5)
    ref = _loop(q, k, lambda a, b: v @ torch.tanh(a @ w_q + b @ w_k))
    torch.testing.assert_close(scores.additive(q, k, w_q, w_k, v), ref, rtol=0, atol=1e-12)


def test_additive_chunking_gives_the_same(monkeypatch):
    q, k = _rand(2, 9, 4, seed=1), _rand(2, 11, 4, seed=2)
    w_q, w_k, v = _rand(4, 3, seed=3), _rand(4, 3, seed=4), _rand(3, seed=5)
    full = scores.additive(q, k, w_q, w_k, v)
    monkeypatch.setattr(scores, "_ADDITIVE_CHUNK_ELEMENTS", 50)  # several key chunks
    torch.testing.assert_close(scores.additive(q, k, w_q, w_k, v), full, rtol=0, atol=1e-14)
    ref = torch.einsum("h,bijh->bij", v, torch.tanh((q @ w_q)[:, :, None] + (k @ w_k)[:, None]))
    torch.testing.assert_close(full, ref, rtol=0, atol=1e-12)


def test_concat_is_additive_with_split_weight():
    q, k = _rand(2, 3, 4, seed=1), _rand(2, 6, 5, seed=2)
    w, v = _rand(9, 7, seed=3), _rand(7, seed=4)
    ref = _loop(q, k, lambda a, b: v @ torch.tanh(torch.cat([a, b]) @ w))
    out = scores.concat(q, k, w, v)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(out, scores.additive(q, k, w[:4], w[4:], v), rtol=0, atol=1e-14)


@pytest.mark.parametrize("temperature", [1.0, 0.1])
def test_cosine(temperature):
    q, k = _rand(2, 4, 6, seed=1), _rand(2, 5, 6, seed=2)
    ref = _loop(q, k, lambda a, b: (a @ b) / (a.norm() * b.norm()))
    out = scores.cosine(q, k, temperature=temperature)
    torch.testing.assert_close(out, ref / temperature, rtol=0, atol=1e-12)
    assert out.abs().max() <= 1 / temperature
    # Parallel vectors reach the bound exactly (after the clamp), antiparallel the other one.
    x = _rand(1, 6, seed=3)
    both = scores.cosine(x, torch.cat([3 * x, -2 * x]), temperature=temperature)
    torch.testing.assert_close(both, torch.tensor([[1.0, -1.0]], dtype=F64) / temperature)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cosine_zero_vectors_are_safe(dtype):
    q = torch.zeros(3, 4, dtype=dtype)
    q[1] = 1.0
    k = torch.zeros(2, 4, dtype=dtype)
    k[0] = -2.0
    out = scores.cosine(q, k, temperature=0.5)
    assert torch.isfinite(out).all()
    expected = torch.tensor([[0.0, 0.0], [-2.0, 0.0], [0.0, 0.0]], dtype=dtype)
    torch.testing.assert_close(out, expected)


def test_batch_dims_broadcast():
    q, k = _rand(3, 1, 4, 8, seed=1), _rand(5, 6, 8, seed=2)
    out = scores.dot(q, k)
    assert out.shape == (3, 5, 4, 6)
    torch.testing.assert_close(out[2, 4], q[2, 0] @ k[4].T)
    w_q, w_k, v = _rand(8, 3, seed=3), _rand(8, 3, seed=4), _rand(3, seed=5)
    assert scores.additive(q, k, w_q, w_k, v).shape == (3, 5, 4, 6)


@pytest.mark.parametrize("name", ["dot", "scaled_dot", "cosine"])
def test_different_d_raises_with_shapes(name):
    with pytest.raises(ValueError, match=r"q \(2, 4\).*k \(3, 5\)"):
        scores.SCORE_FUNCTIONS[name](_rand(2, 4), _rand(3, 5))


def test_weight_shape_errors_name_the_weight():
    q, k = _rand(2, 4), _rand(3, 5)
    with pytest.raises(ValueError, match=r"w must have shape \(d_q, d_k\) = \(4, 5\), got \(5, 4\)"):
        scores.general(q, k, _rand(5, 4))
    v = _rand(7)
    with pytest.raises(ValueError, match=r"w_k .*\(5, 7\), got \(4, 7\)"):
        scores.additive(q, k, _rand(4, 7), _rand(4, 7), v)
    with pytest.raises(ValueError, match=r"w_q .*\(4, 7\), got \(4, 6\)"):
        scores.additive(q, k, _rand(4, 6), _rand(5, 7), v)
    with pytest.raises(ValueError, match=r"v must be a vector"):
        scores.additive(q, k, _rand(4, 7), _rand(5, 7), _rand(7, 1))
    with pytest.raises(ValueError, match=r"w must have shape \(d_q \+ d_k, h\) = \(9, 7\)"):
        scores.concat(q, k, _rand(8, 7), v)


def test_bad_inputs_raise():
    q = _rand(2, 4)
    with pytest.raises(ValueError, match="temperature"):
        scores.cosine(q, q, temperature=0.0)
    with pytest.raises(ValueError, match="temperature"):
        scores.cosine(q, q, temperature=-1.0)
    with pytest.raises(TypeError, match=r"q must be a torch\.Tensor"):
        scores.dot([[1.0]], q)
    with pytest.raises(ValueError, match="at least 2 dimension"):
        scores.dot(torch.ones(4, dtype=F64), q)
    bad = q.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="k contains NaN"):
        scores.dot(q, bad)
    with pytest.raises(ValueError, match="do not broadcast"):
        scores.dot(_rand(2, 3, 4), _rand(3, 3, 4))


# --------------------------------------------------------------------------- real inputs


def _score_args(name, seed):
    """q (2, 6, 16), k (2, 7, 16) and the function's parameters, float64."""
    q, k = _rand(2, 6, 16, seed=seed), _rand(2, 7, 16, seed=seed + 1)
    params = {
        "general": (_rand(16, 16, seed=seed + 2) * 0.3,),
        "additive": (_rand(16, 8, seed=seed + 3) * 0.3, _rand(16, 8, seed=seed + 4) * 0.3,
                     _rand(8, seed=seed + 5)),
        "concat": (_rand(32, 8, seed=seed + 6) * 0.3, _rand(8, seed=seed + 7)),
        "cosine": (0.5,),
    }[name]
    return (q, k, *params)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", ["general", "additive", "concat", "cosine"])
def test_half_precision_scores_are_rounded_once(name, dtype):
    """Computed in float32 and rounded once to the inputs' dtype: as close to the float64
    scores of the same inputs as rounding them (before: 1.4-4x, intermediates in half)."""
    fn = scores.SCORE_FUNCTIONS[name]
    for seed in range(5):
        args = [a.to(dtype) if isinstance(a, torch.Tensor) else a for a in _score_args(name, seed)]
        out = fn(*args)
        assert out.dtype == dtype
        ref = fn(*(a.double() if isinstance(a, torch.Tensor) else a for a in args))
        rounding = (ref.to(dtype).double() - ref).abs().max().item()
        assert (out.double() - ref).abs().max().item() <= 1.2 * rounding


def test_half_precision_scaled_dot_scales_before_it_overflows():
    """q = k = 40 * ones (d = 64): q·k = 102 400 overflows float16, q·k / 8 = 12 800 does not."""
    q = torch.full((3, 64), 40.0, dtype=torch.float16)
    assert torch.equal(scores.scaled_dot(q, q), torch.full((3, 3), 12800.0, dtype=torch.float16))
    with pytest.raises(ValueError, match=r"the dot scores of q and k overflow torch\.float16 "
                                         r"\(largest \|score\| 1\.02e\+05"):
        scores.dot(q, q)


@pytest.mark.parametrize("size", [1e25, 1e-25, 1e-44])
def test_cosine_of_huge_and_tiny_vectors(size):
    """The norm of 1e25 * x overflows float32 (cosine 0 everywhere), that of 1e-25 * x
    underflows (cosine clamped to ±1): the cosine does not depend on the scale."""
    q, k = _rand(2, 5, 8, seed=20), _rand(2, 6, 8, seed=21)
    expected = scores.cosine(q, k).float()
    got = scores.cosine((q * size).float(), (k * size).float())
    tol = 1e-6 if size > 1e-40 else 0.3  # 1e-44 is subnormal: about 2 significant bits
    torch.testing.assert_close(got, expected, rtol=0, atol=tol)
    assert torch.equal(scores.cosine(torch.zeros(1, 8), k.float()), torch.zeros(2, 1, 6))


def test_inf_inputs_are_named():
    q = _rand(2, 4)
    bad = q.clone()
    bad[1, 2] = float("inf")
    with pytest.raises(ValueError, match=r"k contains \+inf \(shape \(2, 4\)\)"):
        scores.dot(q, bad)
    with pytest.raises(ValueError, match=r"q contains -inf"):
        scores.cosine(-bad, q)
    with pytest.raises(ValueError, match=r"w contains \+inf"):
        scores.general(q, q, bad.T @ bad)
