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


# --------------------------------------------------------------------------- half precision

HALF = [torch.float16, torch.bfloat16]
# (q shape, k shape, v shape, causal mask?)
HALF_CASES = [
    ((1, 7, 5, 8), (1, 7, 5, 8), (1, 7, 5, 8), False),
    ((2, 4, 64, 64), (2, 4, 64, 64), (2, 4, 64, 64), False),
    ((2, 4, 64, 64), (2, 4, 64, 64), (2, 4, 64, 64), True),
    ((3, 33, 16), (3, 40, 16), (3, 40, 24), False),
    ((1, 1, 128, 128), (1, 1, 128, 128), (1, 1, 128, 128), True),
]


def _half_inputs(seed, q_shape, k_shape, v_shape, dtype, spread=3.0):
    """q, k, v in ``dtype``: standard normal times ``spread`` for q and k, so the scores
    spread over several units as in a trained model (softmax then has work to do)."""
    gen = _gen(seed)
    q, k = _randn(gen, *q_shape) * spread, _randn(gen, *k_shape) * spread
    return q.to(dtype), k.to(dtype), _randn(gen, *v_shape).to(dtype)


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize(("q_shape", "k_shape", "v_shape", "causal"), HALF_CASES)
def test_half_precision_error_is_torchs(dtype, q_shape, k_shape, v_shape, causal):
    """float16/bfloat16 against a float64 reference on the same (rounded) inputs: our error
    is within 1.5x torch SDPA's own (before: 8-17x, scores and weights rounded to half)."""
    for seed in range(5):
        q, k, v = _half_inputs(seed, q_shape, k_shape, v_shape, dtype)
        mask = causal_mask(q_shape[-2], k_shape[-2]) if causal else None
        out, weights = scaled_dot_product_attention(q, k, v, mask=mask)
        assert out.dtype == dtype and weights.dtype == dtype
        ref = _torch_sdpa(q.double(), k.double(), v.double(), mask=mask)
        theirs = _torch_sdpa(q, k, v, mask=mask)
        err = (out.double() - ref).abs().max().item()
        err_torch = (theirs.double() - ref).abs().max().item()
        assert err <= 1.5 * err_torch + 1e-3 * torch.finfo(dtype).eps, (seed, err, err_torch)
        info = torch.finfo(dtype)  # weights: rounded once from float32
        ref_w = _reference_weights(q.double(), k.double(), mask).expand_as(weights)
        torch.testing.assert_close(weights.double(), ref_w, rtol=info.eps,
                                   atol=info.tiny * info.eps)


@pytest.mark.parametrize(("dtype", "size"), [(torch.float16, 100.0), (torch.bfloat16, 1e19)],
                         ids=str)
def test_half_precision_large_inputs_give_no_error_and_no_nan(dtype, size):
    """q = k = 100 * ones (d = 64): scores 80 000 overflow float16 (max 65 504) but not the
    float32 they are computed in. bfloat16 has float32's range: 1e19 * ones gives scores of
    8e38, beyond float32 too. Every key ties, so the weights are 1/L."""
    n, d = 8, 64
    q = torch.full((2, n, d), size, dtype=dtype)
    v = _randn(_gen(11), 2, n, d).to(dtype)
    for mask in (None, causal_mask(n)):
        out, weights = scaled_dot_product_attention(q, q, v, mask=mask)
        keep = torch.ones(n, n, dtype=torch.bool) if mask is None else mask
        expected_w = (keep / keep.sum(-1, keepdim=True)).to(F64).expand(2, n, n)
        torch.testing.assert_close(weights.double(), expected_w,
                                   rtol=torch.finfo(dtype).eps / 2, atol=0)
        torch.testing.assert_close(out.double(), expected_w @ v.double(),
                                   rtol=torch.finfo(dtype).eps, atol=0)


@pytest.mark.parametrize(("dtype", "size"), [
    (torch.bfloat16, 1e30), (torch.float32, 1e25), (F64, 1e160),
])
def test_products_beyond_the_dtype_give_the_limit_not_nan(dtype, size):
    """Finite inputs whose scores overflow even the work dtype (float32 or float64): the
    softmax is then a hard maximum, computed without NaN or an error, gradients included."""
    gen = _gen(12)
    q, k = (_randn(gen, 2, 5, 16) * size).to(dtype), (_randn(gen, 2, 7, 16) * size).to(dtype)
    v = _randn(gen, 2, 7, 3).to(dtype)
    mask = torch.rand(2, 5, 7, generator=gen) < 0.6
    mask[:, 0] = False  # a fully masked query still gets zeros
    mask[:, 1:, 0] = True
    t = (q.double() / size) @ (k.double() / size).mT  # the scores' order, in range
    best = t.masked_fill(~mask, -math.inf).argmax(-1)
    q.requires_grad_(True)
    out, weights = scaled_dot_product_attention(q, k, v, mask=mask)
    assert torch.isfinite(out).all() and torch.isfinite(weights).all()
    one_hot = F.one_hot(best, 7).to(dtype).masked_fill(~mask.any(-1, keepdim=True), 0)
    assert torch.equal(weights.detach(), one_hot)
    out.sum().backward()
    assert not torch.isnan(q.grad).any()


def test_mixed_dtypes_are_promoted():
    gen = _gen(14)
    q, k, v = _randn(gen, 3, 4).float(), _randn(gen, 5, 4), _randn(gen, 5, 2).half()
    out, weights = scaled_dot_product_attention(q, k, v)
    assert out.dtype == weights.dtype == F64
    torch.testing.assert_close(out, _torch_sdpa(q.double(), k, v.double()), **TOL)


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_self_and_cross_attention_in_half_precision(dtype):
    """Projections too are computed in float32: x = 20 * ones with w = ones gives q = k = 320
    per entry and scores 320² * 8 / sqrt(8) > 65 504: no error, exact ties."""
    x = torch.full((2, 5, 8), 20.0, dtype=dtype)
    w = torch.ones(8, 8, dtype=dtype)
    for out, weights in (self_attention(x, w, w, w), cross_attention(x, x[:, :3], w, w, w)):
        assert out.dtype == weights.dtype == dtype
        assert torch.isfinite(out).all()
        uniform = torch.full_like(weights, 1 / weights.shape[-1], dtype=F64)
        torch.testing.assert_close(weights.double(), uniform, rtol=torch.finfo(dtype).eps / 2,
                                   atol=0)
    gen = _gen(15)
    x, w_q, w_k, w_v = _randn(gen, 2, 9, 8), _randn(gen, 8, 4), _randn(gen, 8, 4), _randn(gen, 8, 6)
    out, _ = self_attention(x.to(dtype), w_q.to(dtype), w_k.to(dtype), w_v.to(dtype))
    ref = self_attention(*(t.to(dtype).double() for t in (x, w_q, w_k, w_v)))[0]
    torch.testing.assert_close(out.double(), ref, rtol=4 * torch.finfo(dtype).eps, atol=1e-3)


# --------------------------------------------------------------------------- key padding mask

LENGTHS = [5, 2, 4, 1, 3]


def _keep(lengths, n):
    return torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]


def test_key_padding_mask_where_batch_equals_query_length():
    """B = Lq = 5: a (B, Lk) key padding mask passed as ``mask`` is silently read as
    (Lq, Lk), one row per query; ``key_padding_mask`` says which it is."""
    gen = _gen(16)
    q, k, v = _randn(gen, 5, 5, 4), _randn(gen, 5, 6, 4), _randn(gen, 5, 6, 3)
    keep = _keep(LENGTHS, 6)  # (B, Lk), True = real token
    out, weights = scaled_dot_product_attention(q, k, v, key_padding_mask=keep)
    expected = _torch_sdpa(q, k, v, mask=keep[:, None, :])
    torch.testing.assert_close(out, expected, **TOL)
    for b, n in enumerate(LENGTHS):
        assert (weights[b, :, n:] == 0).all()
        torch.testing.assert_close(weights[b].sum(-1), torch.ones(5, dtype=F64), **TOL)
    wrong, _ = scaled_dot_product_attention(q, k, v, mask=keep)  # (Lq, Lk): another answer
    assert not torch.allclose(wrong, out)


def test_key_padding_mask_broadcasts_over_heads_and_combines_with_mask():
    gen = _gen(17)
    q, k, v = _randn(gen, 5, 2, 4, 3), _randn(gen, 5, 2, 6, 3), _randn(gen, 5, 2, 6, 2)
    keep = _keep(LENGTHS, 6)
    causal = causal_mask(4, 6)
    out, weights = scaled_dot_product_attention(q, k, v, causal, key_padding_mask=keep)
    both = causal & keep[:, None, None, :]  # (B, H, Lq, Lk)
    out_ref, weights_ref = scaled_dot_product_attention(q, k, v, mask=both)
    assert torch.equal(out, out_ref) and torch.equal(weights, weights_ref)
    assert (weights[3, :, :, 1:] == 0).all()  # one real token: all weight on it
    # unbatched inputs take a (Lk,) key padding mask
    out1, _ = scaled_dot_product_attention(q[1, 0], k[1, 0], v[1, 0], key_padding_mask=keep[1])
    torch.testing.assert_close(out1, out_ref[1, 0], **TOL)


def test_self_and_cross_attention_take_a_key_padding_mask():
    gen = _gen(18)
    x_dec, x_enc = _randn(gen, 5, 4, 6), _randn(gen, 5, 6, 7)
    w_q, w_k, w_v = _randn(gen, 6, 3), _randn(gen, 7, 3), _randn(gen, 7, 2)
    keep = _keep(LENGTHS, 6)
    out, weights = cross_attention(x_dec, x_enc, w_q, w_k, w_v, key_padding_mask=keep)
    expected = cross_attention(x_dec, x_enc, w_q, w_k, w_v, mask=keep[:, None, :])
    assert torch.equal(out, expected[0]) and torch.equal(weights, expected[1])
    x, w = _randn(gen, 5, 6, 6), _randn(gen, 6, 6)
    out, weights = self_attention(x, w, w, w, causal_mask(6), key_padding_mask=keep)
    expected = self_attention(x, w, w, w, mask=causal_mask(6) & keep[:, None, :])
    assert torch.equal(out, expected[0]) and torch.equal(weights, expected[1])


KEEP = _keep([4, 2], 4)

KEY_PADDING_ERRORS = [
    ("transposed", lambda: scaled_dot_product_attention(
        *_qkv_batched(), key_padding_mask=KEEP.T),
     ValueError, r"key_padding_mask must have shape \(B, Lk\) = \(2, 4\) for q \(2, 3, 5\) "
                 r"and k \(2, 4, 5\), got \(4, 2\)"),
    ("3-D", lambda: scaled_dot_product_attention(*_qkv_batched(), key_padding_mask=KEEP[:, None]),
     ValueError, r"key_padding_mask must have shape \(B, Lk\).*got \(2, 1, 4\)"),
    ("float", lambda: scaled_dot_product_attention(*_qkv_batched(),
                                                   key_padding_mask=KEEP.double()),
     TypeError, r"key_padding_mask must have dtype torch\.bool.*MultiheadAttention"),
    ("list", lambda: scaled_dot_product_attention(*_qkv_batched(),
                                                  key_padding_mask=KEEP.tolist()),
     TypeError, r"key_padding_mask must be a bool torch\.Tensor"),
    ("unbatched", lambda: scaled_dot_product_attention(Q, K, V, key_padding_mask=KEEP),
     ValueError, r"key_padding_mask must have shape \(Lk,\) for unbatched inputs = \(4,\)"),
    ("self", lambda: self_attention(X[None].expand(2, 4, 6), W, W, W,
                                    key_padding_mask=KEEP[:, :3]),
     ValueError, r"key_padding_mask .*\(2, 4\) for x \(2, 4, 6\), got \(2, 3\)"),
    ("cross", lambda: cross_attention(X[None], X[None, :3], W, W, W, key_padding_mask=KEEP),
     ValueError, r"key_padding_mask .*\(1, 3\) for x_dec \(1, 4, 6\) and x_enc \(1, 3, 6\)"),
]


def _qkv_batched():
    return Q.expand(2, 3, 5), K.expand(2, 4, 5), V.expand(2, 4, 2)


@pytest.mark.parametrize(("call", "error", "match"), [c[1:] for c in KEY_PADDING_ERRORS],
                         ids=[c[0] for c in KEY_PADDING_ERRORS])
def test_key_padding_mask_errors_name_it(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --------------------------------------------------------------------------- inf in the inputs


def _with(t: torch.Tensor, value: float, index=(-1, -1)) -> torch.Tensor:
    t = t.clone()
    t[index] = value
    return t


INF_INPUTS = [
    ("+inf k", lambda: scaled_dot_product_attention(Q, _with(K, math.inf), V),
     r"k contains \+inf \(shape \(4, 5\)\)"),
    ("-inf q", lambda: scaled_dot_product_attention(_with(Q, -math.inf), K, V),
     r"q contains -inf \(shape \(3, 5\)\)"),
    ("inf v", lambda: scaled_dot_product_attention(Q, K, _with(V, math.inf)),
     r"v contains \+inf \(shape \(4, 2\)\)"),
    ("both infs", lambda: scaled_dot_product_attention(
        Q, _with(_with(K, math.inf), -math.inf, (0, 0)), V),
     r"k contains \+inf and -inf"),
    ("self x", lambda: self_attention(_with(X, math.inf), W, W, W), r"x contains \+inf"),
    ("cross x_enc", lambda: cross_attention(X, _with(X, -math.inf), W, W, W),
     r"x_enc contains -inf"),
    ("self w_v", lambda: self_attention(X, W, W, _with(W, math.inf)), r"w_v contains \+inf"),
    ("projection", lambda: self_attention(X.float() * 1e30, W.float() * 1e30, W.float(),
                                          W.float()),
     r"x @ w_q contains .*inf.*too large for torch\.float32"),
    ("inf scale", lambda: scaled_dot_product_attention(Q, K, V, scale=math.inf),
     r"scale must be finite"),
    # not an inf, but also named as passed: was "q (2, 4, 3), k (3, 4, 3)", the projections
    ("cross batch", lambda: cross_attention(X.expand(2, 4, 6), X.expand(3, 4, 6), W, W, W),
     r"leading \(batch\) dimensions of x_dec \(2, 4, 6\) and x_enc \(3, 4, 6\)"),
]


@pytest.mark.parametrize(("call", "match"), [c[1:] for c in INF_INPUTS],
                         ids=[c[0] for c in INF_INPUTS])
def test_inf_in_an_input_is_named(call, match):
    """Never "scores contains NaN" (an internal tensor) or a silent inf/NaN column."""
    with pytest.raises(ValueError, match=match):
        call()
