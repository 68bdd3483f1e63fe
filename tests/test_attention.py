"""Tests for `utils.attention`: parity with PyTorch (float64), properties, bad input."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from utils import _validate
from utils.attention import cross_attention, scaled_dot_product_attention, self_attention, softmax
from utils.masks import causal_mask

F64 = torch.float64
TOL = {"rtol": 1e-10, "atol": 1e-10}
# Deterministic, modest property runs: the suite stays fast and reproducible.
PROPERTY = settings(max_examples=50, deadline=None, derandomize=True)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The tensors here are tiny: one intra-op thread is faster than two busy ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _randn(gen: torch.Generator, *shape: int, dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=F64).to(dtype)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _reference_weights(q, k, mask=None, scale=None):
    """softmax(q kᵀ · scale) written out with torch ops; fully masked rows -> 0."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ k.transpose(-2, -1) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1).nan_to_num(0.0)


def _torch_sdpa(q, k, v, mask=None, scale=None):
    """torch's SDPA on explicitly broadcast (expanded) inputs."""
    batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    if mask is not None:
        batch = torch.broadcast_shapes(batch, mask.shape[:-2])
        mask = mask.expand(*batch, q.shape[-2], k.shape[-2])
    q = q.expand(*batch, *q.shape[-2:])
    k = k.expand(*batch, *k.shape[-2:])
    v = v.expand(*batch, *v.shape[-2:])
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


# --------------------------------------------------------------------------- parity

# (q shape, k shape, v shape, mask shape or None, scale)
PARITY_CASES = [
    ((4, 8), (4, 8), (4, 3), None, None),
    ((5, 8), (7, 8), (7, 6), None, None),  # Lq != Lk
    ((2, 5, 8), (2, 7, 8), (2, 7, 6), (2, 5, 7), None),
    ((2, 3, 5, 8), (2, 3, 7, 8), (2, 3, 7, 4), (2, 3, 5, 7), 0.3),  # custom scale
    ((2, 3, 5, 8), (3, 7, 8), (3, 7, 4), (5, 7), None),  # batch/head broadcasting
    ((2, 3, 5, 8), (1, 3, 7, 8), (2, 1, 7, 4), (2, 1, 1, 7), 2.5),  # key-padding style mask
    ((3, 6, 4), (6, 4), (6, 5), (1, 6, 6), None),
    ((1, 1, 9), (1, 2, 9), (1, 2, 1), (1, 2), 1.0),
]


@pytest.mark.parametrize(("q_shape", "k_shape", "v_shape", "mask_shape", "scale"), PARITY_CASES)
def test_sdpa_matches_torch(q_shape, k_shape, v_shape, mask_shape, scale):
    gen = _gen(0)
    q, k, v = _randn(gen, *q_shape), _randn(gen, *k_shape), _randn(gen, *v_shape)
    mask = None
    if mask_shape is not None:
        mask = torch.rand(*mask_shape, generator=gen) < 0.6
        mask[..., 0, :] = False  # one fully masked query row in every mask
    out, weights = scaled_dot_product_attention(q, k, v, mask=mask, scale=scale)
    expected = _torch_sdpa(q, k, v, mask=mask, scale=scale)
    assert out.dtype == F64 and out.shape == expected.shape
    torch.testing.assert_close(out, expected, **TOL)
    torch.testing.assert_close(weights, _reference_weights(q, k, mask, scale).expand_as(weights),
                               **TOL)
    assert weights.shape == (*expected.shape[:-1], k_shape[-2])


@st.composite
def attention_inputs(draw, *, with_mask: bool = True):
    """Random q, k, v (float64) with random batch dims, lengths and an optional bool mask."""
    batch = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    lq, lk = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    d_k, d_v = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    gen = _gen(draw(st.integers(0, 2**32 - 1)))
    q, k = _randn(gen, *batch, lq, d_k), _randn(gen, *batch, lk, d_k)
    v = _randn(gen, *batch, lk, d_v)
    mask = None
    if with_mask and draw(st.booleans()):
        mask_batch = draw(st.sampled_from([batch, (), batch[-1:]]))
        mask_lq = draw(st.sampled_from([lq, 1]))
        p_keep = draw(st.sampled_from([0.0, 0.3, 0.7, 1.0]))
        mask = torch.rand(*mask_batch, mask_lq, lk, generator=gen) < p_keep
    scale = draw(st.one_of(st.none(), st.floats(0.01, 10.0)))
    return q, k, v, mask, scale


@PROPERTY
@given(attention_inputs())
def test_sdpa_matches_torch_random(inputs):
    q, k, v, mask, scale = inputs
    out, weights = scaled_dot_product_attention(q, k, v, mask=mask, scale=scale)
    torch.testing.assert_close(out, _torch_sdpa(q, k, v, mask=mask, scale=scale), **TOL)
    torch.testing.assert_close(weights, _reference_weights(q, k, mask, scale).expand_as(weights),
                               **TOL)


@pytest.mark.parametrize(("n_q", "n_k"), [(1, 1), (4, 4), (1, 6), (3, 7), (5, 6)])
def test_causal_mask_matches_torch_causal_lower_right_in_sdpa(n_q, n_k):
    from torch.nn.attention.bias import causal_lower_right

    gen = _gen(1)
    q, k, v = _randn(gen, 2, 3, n_q, 4), _randn(gen, 2, 3, n_k, 4), _randn(gen, 2, 3, n_k, 5)
    out, _ = scaled_dot_product_attention(q, k, v, mask=causal_mask(n_q, n_k))
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(n_q, n_k))
    torch.testing.assert_close(out, expected, **TOL)


def test_self_attention_equals_sdpa_on_projections():
    gen = _gen(2)
    x = _randn(gen, 2, 5, 6)
    w_q, w_k, w_v = _randn(gen, 6, 4), _randn(gen, 6, 4), _randn(gen, 6, 3)
    for mask in (None, causal_mask(5), torch.rand(2, 5, 5, generator=gen) < 0.5):
        out, weights = self_attention(x, w_q, w_k, w_v, mask=mask)
        q, k, v = x @ w_q, x @ w_k, x @ w_v
        torch.testing.assert_close(out, _torch_sdpa(q, k, v, mask=mask), **TOL)
        torch.testing.assert_close(weights, _reference_weights(q, k, mask).expand_as(weights),
                                   **TOL)
        assert out.shape == (2, 5, 3) and weights.shape == (2, 5, 5)


def test_cross_attention_equals_sdpa_on_projections():
    gen = _gen(3)
    x_dec, x_enc = _randn(gen, 2, 4, 6), _randn(gen, 2, 7, 5)
    w_q, w_k, w_v = _randn(gen, 6, 3), _randn(gen, 5, 3), _randn(gen, 5, 2)
    key_padding = torch.tensor([[True] * 7, [True] * 3 + [False] * 4])[:, None, :]  # (B, 1, M)
    for mask in (None, key_padding):
        out, weights = cross_attention(x_dec, x_enc, w_q, w_k, w_v, mask=mask)
        q, k, v = x_dec @ w_q, x_enc @ w_k, x_enc @ w_v
        torch.testing.assert_close(out, _torch_sdpa(q, k, v, mask=mask), **TOL)
        torch.testing.assert_close(weights, _reference_weights(q, k, mask).expand_as(weights),
                                   **TOL)
        assert out.shape == (2, 4, 2) and weights.shape == (2, 4, 7)
    assert (weights[1, :, 3:] == 0).all()


def test_sdpa_gradients_match_torch_and_stay_finite_for_fully_masked_rows():
    gen = _gen(4)
    mask = torch.rand(2, 4, 5, generator=gen) < 0.5
    mask[:, 1] = False  # dead rows must not send NaN gradients back
    leaves = [_randn(gen, 2, 4, 3), _randn(gen, 2, 5, 3), _randn(gen, 2, 5, 2)]
    ours = [t.clone().requires_grad_() for t in leaves]
    theirs = [t.clone().requires_grad_() for t in leaves]
    upstream = _randn(gen, 2, 4, 2)
    (scaled_dot_product_attention(*ours, mask=mask)[0] * upstream).sum().backward()
    (F.scaled_dot_product_attention(*theirs, attn_mask=mask) * upstream).sum().backward()
    for a, b in zip(ours, theirs, strict=True):
        assert torch.isfinite(a.grad).all()
        torch.testing.assert_close(a.grad, b.grad, **TOL)
    assert (ours[0].grad[:, 1] == 0).all()


# --------------------------------------------------------------------------- softmax


@pytest.mark.parametrize("dim", [-1, -2, 0, 1, 2])
def test_softmax_without_mask_equals_torch(dim):
    scores = _randn(_gen(5), 3, 4, 5) * 5
    result = softmax(scores, dim=dim)
    torch.testing.assert_close(result, torch.softmax(scores, dim=dim), **TOL)
    torch.testing.assert_close(result.sum(dim), torch.ones(()).to(F64).expand_as(result.sum(dim)),
                               **TOL)


def test_softmax_is_stable_for_huge_scores():
    scores = torch.tensor([[1000.0, 999.0, -1000.0], [1e300, 1e300, -1e300]], dtype=F64)
    result = softmax(scores)
    e = math.exp(-1.0)
    expected = torch.tensor([[1 / (1 + e), e / (1 + e), 0.0], [0.5, 0.5, 0.0]], dtype=F64)
    torch.testing.assert_close(result, expected, **TOL)


def test_softmax_treats_neg_inf_as_masked():
    ninf = float("-inf")
    scores = torch.tensor([[0.0, ninf, 0.0], [ninf, ninf, ninf], [ninf, 2.0, ninf]], dtype=F64)
    expected = torch.tensor([[0.5, 0.0, 0.5], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=F64)
    assert torch.equal(softmax(scores), expected)


def test_softmax_gradient_is_finite_for_all_neg_inf_rows():
    ninf = float("-inf")
    scores = torch.tensor([[0.0, 1.0, ninf], [ninf, ninf, ninf]], dtype=F64, requires_grad=True)
    upstream = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=F64)
    (softmax(scores) * upstream).sum().backward()
    reference = torch.tensor([[0.0, 1.0]], dtype=F64, requires_grad=True)
    (torch.softmax(reference, -1) * upstream[:1, :2]).sum().backward()
    assert torch.isfinite(scores.grad).all()
    torch.testing.assert_close(scores.grad[0, :2], reference.grad[0], **TOL)
    assert (scores.grad[0, 2] == 0) and (scores.grad[1] == 0).all()


def test_softmax_mask_along_other_dim():
    gen = _gen(6)
    scores = _randn(gen, 4, 3)
    mask = torch.rand(4, 3, generator=gen) < 0.5
    mask[:, 2] = False  # a fully masked column along dim 0
    mask[0, 0] = True
    result = softmax(scores, dim=0, mask=mask)
    expected = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=0).nan_to_num(0.0)
    torch.testing.assert_close(result, expected, **TOL)
    assert (result[~mask] == 0).all()
    torch.testing.assert_close(result.sum(0), mask.any(0).to(F64), **TOL)


# --------------------------------------------------------------------------- properties


def _check_weights(weights: torch.Tensor, mask: torch.Tensor | None, tol: float) -> None:
    assert torch.isfinite(weights).all()
    assert (weights >= 0).all()
    sums = weights.sum(-1)
    if mask is None:
        torch.testing.assert_close(sums, torch.ones_like(sums), rtol=0, atol=tol)
        return
    full = mask.expand_as(weights)
    assert (weights[~full] == 0).all()
    alive = full.any(-1)
    assert (sums[~alive] == 0).all()
    torch.testing.assert_close(sums[alive], torch.ones_like(sums[alive]), rtol=0, atol=tol)


@PROPERTY
@given(attention_inputs())
def test_sdpa_weights_are_a_distribution_over_allowed_keys(inputs):
    q, k, v, mask, scale = inputs
    out, weights = scaled_dot_product_attention(q, k, v, mask=mask, scale=scale)
    _check_weights(weights, mask, 1e-12)
    assert torch.isfinite(out).all()
    if mask is not None:
        dead = ~mask.expand_as(weights).any(-1)
        assert (out[dead] == 0).all()


@PROPERTY
@given(
    dtype=st.sampled_from([torch.float32, torch.float16]),
    rows=st.integers(1, 5),
    cols=st.integers(1, 8),
    p_keep=st.sampled_from([0.0, 0.3, 0.7, 1.0]),
    use_mask=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_softmax_extreme_scores_in_low_precision(dtype, rows, cols, p_keep, use_mask, seed):
    gen = _gen(seed)
    signs = torch.randint(-1, 2, (rows, cols), generator=gen)  # -1, 0 or +1
    scores = (signs * 1e4).to(dtype) + torch.rand(rows, cols, generator=gen).to(dtype)
    mask = (torch.rand(rows, cols, generator=gen) < p_keep) if use_mask else None
    weights = softmax(scores, mask=mask)
    assert weights.dtype == dtype
    _check_weights(weights, mask, 1e-2 if dtype == torch.float16 else 1e-5)


@PROPERTY
@given(
    batch=st.integers(1, 3),
    n=st.integers(1, 7),
    d=st.integers(1, 5),
    use_mask=st.booleans(),
    data=st.data(),
)
def test_self_attention_is_permutation_equivariant(batch, n, d, use_mask, data):
    gen = _gen(data.draw(st.integers(0, 2**32 - 1)))
    x = _randn(gen, batch, n, d)
    w_q, w_k, w_v = _randn(gen, d, 3), _randn(gen, d, 3), _randn(gen, d, 2)
    mask = (torch.rand(batch, n, n, generator=gen) < 0.6) if use_mask else None
    perm = torch.tensor(data.draw(st.permutations(range(n))), dtype=torch.long)
    out, weights = self_attention(x, w_q, w_k, w_v, mask=mask)
    perm_mask = None if mask is None else mask[:, perm][:, :, perm]
    out_p, weights_p = self_attention(x[:, perm], w_q, w_k, w_v, mask=perm_mask)
    torch.testing.assert_close(out_p, out[:, perm], **TOL)
    torch.testing.assert_close(weights_p, weights[:, perm][:, :, perm], **TOL)


@PROPERTY
@given(n=st.integers(2, 8), d=st.integers(1, 5), data=st.data())
def test_causal_mask_makes_earlier_outputs_ignore_later_inputs(n, d, data):
    gen = _gen(data.draw(st.integers(0, 2**32 - 1)))
    j = data.draw(st.integers(1, n - 1))
    x = _randn(gen, 2, n, d)
    w_q, w_k, w_v = _randn(gen, d, 4), _randn(gen, d, 4), _randn(gen, d, 3)
    changed = x.clone()
    changed[:, j:] = _randn(gen, 2, n - j, d) * 10
    out, weights = self_attention(x, w_q, w_k, w_v, mask=causal_mask(n))
    out_c, weights_c = self_attention(changed, w_q, w_k, w_v, mask=causal_mask(n))
    assert torch.equal(out[:, :j], out_c[:, :j])
    assert torch.equal(weights[:, :j], weights_c[:, :j])
    assert (weights[:, :j, j:] == 0).all()
    assert not torch.equal(out[:, j:], out_c[:, j:])  # the later outputs do see the change


# --------------------------------------------------------------------------- bad input


def _qkv(lq=3, lk=4, d_k=5, d_v=2):
    gen = _gen(7)
    return _randn(gen, lq, d_k), _randn(gen, lk, d_k), _randn(gen, lk, d_v)


def _with_nan(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t[0, 0] = float("nan")
    return t


Q, K, V = _qkv()
X = _randn(_gen(8), 4, 6)
W = _randn(_gen(9), 6, 3)

BAD_INPUTS = [
    ("d_k mismatch", lambda: scaled_dot_product_attention(Q, _qkv(d_k=4)[1], V),
     ValueError, r"q and k .*d_k"),
    ("k/v lengths", lambda: scaled_dot_product_attention(Q, K, _qkv(lk=5)[2]),
     ValueError, r"k and v .*length"),
    ("float mask", lambda: scaled_dot_product_attention(Q, K, V, mask=torch.ones(3, 4)),
     TypeError, r"mask .*torch\.bool"),
    ("int mask", lambda: scaled_dot_product_attention(Q, K, V, mask=torch.ones(3, 4).long()),
     TypeError, r"mask .*torch\.bool"),
    ("list mask", lambda: scaled_dot_product_attention(Q, K, V, mask=[[True] * 4] * 3),
     TypeError, r"mask"),
    ("mask shape", lambda: scaled_dot_product_attention(Q, K, V, mask=torch.ones(3, 5).bool()),
     ValueError, r"mask of shape \(3, 5\)"),
    ("empty q", lambda: scaled_dot_product_attention(_qkv(lq=0)[0], K, V),
     ValueError, r"q is empty"),
    ("empty k", lambda: scaled_dot_product_attention(*_qkv(lk=0)),
     ValueError, r"k is empty"),
    ("nan q", lambda: scaled_dot_product_attention(_with_nan(Q), K, V),
     ValueError, r"q contains NaN"),
    ("nan v", lambda: scaled_dot_product_attention(Q, K, _with_nan(V)),
     ValueError, r"v contains NaN"),
    ("list q", lambda: scaled_dot_product_attention(Q.tolist(), K, V),
     TypeError, r"q must be a torch\.Tensor"),
    ("int k", lambda: scaled_dot_product_attention(Q, K.long(), V),
     TypeError, r"k must be a floating-point"),
    ("1-D q", lambda: scaled_dot_product_attention(Q[0], K, V),
     ValueError, r"q must have at least 2"),
    ("batch dims", lambda: scaled_dot_product_attention(Q.expand(2, 3, 5), K.expand(3, 4, 5), V),
     ValueError, r"leading \(batch\) dimensions"),
    ("negative scale", lambda: scaled_dot_product_attention(Q, K, V, scale=-1.0),
     ValueError, r"scale"),
    ("nan scale", lambda: scaled_dot_product_attention(Q, K, V, scale=float("nan")),
     ValueError, r"scale"),
    ("+inf scores", lambda: softmax(torch.tensor([0.0, float("inf")])),
     ValueError, r"scores contains \+inf"),
    ("+inf from q", lambda: scaled_dot_product_attention(Q.abs() * 1e308, K.abs() * 1e308, V),
     ValueError, r"\+inf"),
    ("nan scores", lambda: softmax(torch.tensor([0.0, float("nan")])),
     ValueError, r"scores contains NaN"),
    ("empty scores", lambda: softmax(torch.zeros(2, 0)),
     ValueError, r"scores is empty"),
    ("softmax dim", lambda: softmax(torch.zeros(2, 3), dim=2),
     ValueError, r"dim=2"),
    ("softmax float dim", lambda: softmax(torch.zeros(2, 3), dim=1.0),
     TypeError, r"dim must be an int"),
    ("softmax mask dtype", lambda: softmax(torch.zeros(2, 3), mask=torch.zeros(2, 3)),
     TypeError, r"mask .*torch\.bool"),
    ("softmax mask enlarges", lambda: softmax(torch.zeros(2, 3), mask=torch.ones(4, 2, 3).bool()),
     ValueError, r"mask of shape \(4, 2, 3\)"),
    ("self w_k shape", lambda: self_attention(X, W, _randn(_gen(0), 5, 3), W),
     ValueError, r"w_k has shape \(5, 3\)"),
    ("self w_v 3-D", lambda: self_attention(X, W, W, W[None]),
     ValueError, r"w_v must be a 2-D"),
    ("self w_q list", lambda: self_attention(X, W.tolist(), W, W),
     TypeError, r"w_q must be a torch\.Tensor"),
    ("self x 1-D", lambda: self_attention(X[0], W, W, W),
     ValueError, r"x must have at least 2"),
    ("self nan x", lambda: self_attention(_with_nan(X), W, W, W),
     ValueError, r"x contains NaN"),
    ("self mask", lambda: self_attention(X, W, W, W, mask=torch.ones(4, 4)),
     TypeError, r"mask .*torch\.bool"),
    ("cross w_q shape", lambda: cross_attention(X, X[:, :5], W[:5], W[:5], W[:5]),
     ValueError, r"w_q has shape \(5, 3\).*x_dec"),
    ("cross w_k shape", lambda: cross_attention(X, X[:, :5], W, W, W[:5]),
     ValueError, r"w_k has shape \(6, 3\).*x_enc"),
    ("cross w_v shape", lambda: cross_attention(X, X[:, :5], W, W[:5], W),
     ValueError, r"w_v has shape \(6, 3\).*x_enc"),
    ("cross empty enc", lambda: cross_attention(X, X[:0], W, W, W),
     ValueError, r"x_enc is empty"),
    ("cross mask shape", lambda: cross_attention(X, X, W, W, W, mask=torch.ones(4, 5).bool()),
     ValueError, r"mask of shape \(4, 5\)"),
]


@pytest.mark.parametrize(("call", "error", "match"), [c[1:] for c in BAD_INPUTS],
                         ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_raises_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("shapes", [
    [(), ()], [(3,), ()], [(2, 1), (1, 4)], [(5, 1, 3), (4, 1), (3,)], [(0,), (1,)],
    [(2, 3), (3, 3)], [(2,), (3,)], [(1, 2, 3), (4, 2, 1)], [(2, 0), (1,)],
])
def test_broadcast_shapes_is_torchs(shapes):
    try:
        expected = torch.broadcast_shapes(*shapes)
    except RuntimeError:
        with pytest.raises(RuntimeError, match="do not broadcast"):
            _validate.broadcast_shapes(*shapes)
    else:
        assert _validate.broadcast_shapes(*shapes) == expected


def test_first_attention_call_does_not_import_sympy():
    # torch.broadcast_shapes imports sympy (~0.6 s) on first use: a notebook's first call waited
    code = ("import sys, torch; from utils.attention import self_attention; x = torch.randn(4, 3); "
            "self_attention(x, torch.eye(3), torch.eye(3), torch.eye(3)); print('sympy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "False"
