"""Tests for `utils.hard`: soft/hard/top-k attention, Gumbel-softmax and gradient estimators."""

import math

import pytest
import torch
import torch.nn.functional as F

from utils import hard

D = torch.float64
N = 20_000  # samples for every distributional check
THETA = torch.tensor([0.5, -0.3, 1.2, 0.0], dtype=D)
R = torch.tensor([1.0, 2.0, -1.0, 0.5], dtype=D)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def square(y: torch.Tensor) -> torch.Tensor:
    """A nonlinear reward on (relaxed) one-hot rows: f(y) = (y·r)²."""
    return (y @ R) ** 2


def mean_and_se(est: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return est.mean(0), est.std(0) / est.shape[0] ** 0.5


def assert_frequencies(counts: torch.Tensor, probs: torch.Tensor, n: int) -> None:
    """Empirical frequencies within 4.5 standard errors of the probabilities."""
    se = (probs * (1 - probs) / n).sqrt()
    assert ((counts / n - probs).abs() <= 4.5 * se).all(), (counts / n, probs)


def jacobian(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """dy/dx for 1-D y and x from one forward pass (so a random sample stays fixed)."""
    rows = [torch.autograd.grad(y[j], x, retain_graph=True)[0] for j in range(y.shape[0])]
    return torch.stack(rows)


def softmax_jacobian(y: torch.Tensor, tau: float) -> torch.Tensor:
    return (torch.diag(y) - torch.outer(y, y)) / tau


# ----------------------------------------------------------------------------- attention


def test_soft_attention_matches_torch_sdpa():
    g = gen(1)
    q, k, v = (torch.randn(2, 3, n, 4, generator=g, dtype=D) for n in (5, 6, 6))
    scores = q @ k.mT
    context, weights = hard.soft_attention(scores, v.unsqueeze(-3))
    expected = F.scaled_dot_product_attention(q, k, v, scale=1.0)
    torch.testing.assert_close(context, expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(weights, torch.softmax(scores, -1), rtol=0, atol=1e-12)


def test_soft_attention_broadcasts_batch_dims():
    g = gen(2)
    scores, values = torch.randn(3, 1, 5, generator=g, dtype=D), torch.randn(4, 5, 2, dtype=D)
    context, weights = hard.soft_attention(scores, values)
    assert context.shape == (3, 4, 2) and weights.shape == (3, 4, 5)
    torch.testing.assert_close(context[2, 1], torch.softmax(scores[2, 0], -1) @ values[1])


def test_hard_attention_argmax():
    g = gen(3)
    scores, values = torch.randn(6, 5, generator=g, dtype=D), torch.randn(6, 5, 3, generator=g)
    context, index = hard.hard_attention(scores, values, mode="argmax")
    assert index.dtype == torch.long and torch.equal(index, scores.argmax(-1))
    assert torch.equal(context, values[torch.arange(6), index])


def test_hard_attention_samples_follow_softmax():
    scores = torch.tensor([1.0, 0.0, -1.0, 2.0, 0.5], dtype=D)
    values = torch.arange(10.0, dtype=D).reshape(5, 2)
    context, index = hard.hard_attention(scores.expand(N, 5), values, generator=gen(4))
    assert index.shape == (N,) and torch.equal(context, values[index])
    assert_frequencies(torch.bincount(index, minlength=5).to(D), torch.softmax(scores, -1), N)


def test_hard_attention_broadcasts_batch_dims_and_blocks_gradient():
    g = gen(5)
    scores = torch.randn(3, 1, 5, generator=g, dtype=D, requires_grad=True)
    values = torch.randn(4, 5, 2, generator=g, dtype=D)
    context, index = hard.hard_attention(scores, values, generator=g)
    assert index.shape == (3, 4) and context.shape == (3, 4, 2)
    for a in range(3):
        for b in range(4):
            assert torch.equal(context[a, b], values[b, index[a, b]])
    assert not context.requires_grad  # no gradient reaches the scores through a sample


def test_topk_extremes_are_soft_and_argmax_hard():
    g = gen(6)
    scores, values = torch.randn(2, 7, generator=g, dtype=D), torch.randn(2, 7, 3, generator=g)
    values = values.to(D)
    soft_c, soft_w = hard.soft_attention(scores, values)
    top_c, top_w = hard.topk_attention(scores, values, k=7)
    torch.testing.assert_close(top_c, soft_c, rtol=0, atol=1e-14)
    torch.testing.assert_close(top_w, soft_w, rtol=0, atol=1e-14)
    one_c, _ = hard.topk_attention(scores, values, k=1)
    hard_c, _ = hard.hard_attention(scores, values, mode="argmax")
    torch.testing.assert_close(one_c, hard_c, rtol=0, atol=1e-14)


@pytest.mark.parametrize("k", range(1, 8))
def test_topk_weights_renormalised_over_the_top_k(k):
    scores = torch.randn(3, 7, generator=gen(7), dtype=D)  # continuous: no ties
    _, weights = hard.topk_attention(scores, torch.randn(3, 7, 2, dtype=D), k)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, dtype=D))
    assert ((weights == 0).sum(-1) == 7 - k).all()
    top = scores.topk(k, -1).indices
    assert torch.equal(weights.gather(-1, top) > 0, torch.ones(3, k, dtype=torch.bool))
    torch.testing.assert_close(weights.gather(-1, top), torch.softmax(scores.gather(-1, top), -1))


def test_topk_is_differentiable_on_kept_scores():
    g = gen(8)
    scores = torch.randn(7, generator=g, dtype=D, requires_grad=True)
    values, u = torch.randn(7, 3, generator=g, dtype=D), torch.randn(3, generator=g, dtype=D)
    context, _ = hard.topk_attention(scores, values, k=3)
    (context @ u).backward()
    kept = scores.detach().topk(3).indices
    sub = scores.detach()[kept].requires_grad_(True)
    (torch.softmax(sub, -1) @ values[kept] @ u).backward()
    dropped = torch.ones(7, dtype=torch.bool)
    dropped[kept] = False
    assert (scores.grad[dropped] == 0).all() and (scores.grad[kept] != 0).all()
    torch.testing.assert_close(scores.grad[kept], sub.grad)


# ----------------------------------------------------------------------------- Gumbel-softmax


def test_gumbel_hard_samples_follow_categorical_like_torch():
    logits = torch.tensor([0.3, -1.0, 1.5, 0.0, 0.8], dtype=D)
    probs = torch.softmax(logits, -1)
    ours = hard.gumbel_softmax(logits.expand(N, 5), tau=0.5, hard=True, generator=gen(9))
    torch.manual_seed(9)
    theirs = F.gumbel_softmax(logits.expand(N, 5), tau=0.5, hard=True)
    assert_frequencies(ours.sum(0), probs, N)
    assert_frequencies(theirs.detach().round().sum(0), probs, N)


@pytest.mark.parametrize("tau", [0.3, 1.0, 3.0])
def test_gumbel_soft_samples_distributed_like_torch(tau):
    logits = torch.tensor([0.3, -1.0, 1.5, 0.0], dtype=D)
    ours = hard.gumbel_softmax(logits.expand(N, 4), tau=tau, generator=gen(10))
    torch.manual_seed(10)
    theirs = F.gumbel_softmax(logits.expand(N, 4), tau=tau)
    assert (ours >= 0).all()
    torch.testing.assert_close(ours.sum(-1), torch.ones(N, dtype=D))
    (m1, se1), (m2, se2) = mean_and_se(ours), mean_and_se(theirs)
    assert ((m1 - m2).abs() <= 4.5 * (se1**2 + se2**2).sqrt()).all()


@pytest.mark.parametrize("tau", [0.5, 2.0])
def test_gumbel_soft_gradient_is_the_softmax_jacobian_like_torch(tau):
    logits = torch.tensor([0.3, -1.0, 1.5, 0.0], dtype=D, requires_grad=True)
    ours = hard.gumbel_softmax(logits, tau=tau, generator=gen(11))
    torch.manual_seed(11)
    theirs = F.gumbel_softmax(logits, tau=tau)
    for y in (ours, theirs):  # dy/dlogits = (diag(y) - y yᵀ) / τ for both
        torch.testing.assert_close(jacobian(y, logits), softmax_jacobian(y.detach(), tau))


def test_gumbel_hard_is_exact_onehot_with_the_soft_gradient():
    logits = torch.tensor([0.3, -1.0, 1.5, 0.0], dtype=D, requires_grad=True)
    for seed in range(5):
        y_soft = hard.gumbel_softmax(logits, tau=0.7, generator=gen(seed))
        y_hard = hard.gumbel_softmax(logits, tau=0.7, hard=True, generator=gen(seed))
        assert torch.equal(y_hard.detach(), F.one_hot(y_soft.argmax(), 4).to(D))
        torch.testing.assert_close(jacobian(y_hard, logits), jacobian(y_soft, logits))
        torch.manual_seed(seed)  # torch's hard=True carries its soft sample's gradient too
        t_soft = F.gumbel_softmax(logits, tau=0.7)
        torch.manual_seed(seed)
        t_hard = F.gumbel_softmax(logits, tau=0.7, hard=True)
        torch.testing.assert_close(jacobian(t_hard, logits), jacobian(t_soft, logits))


def test_gumbel_along_another_dim():
    logits = torch.randn(5, 3, generator=gen(12), dtype=D)
    y = hard.gumbel_softmax(logits, tau=0.5, hard=True, dim=0, generator=gen(13))
    assert torch.equal(y.sum(0), torch.ones(3, dtype=D)) and ((y == 0) | (y == 1)).all()


def test_same_seed_same_samples():
    logits = torch.randn(3, 6, generator=gen(14), dtype=D)
    values = torch.randn(6, 2, generator=gen(15), dtype=D)
    for hard_ in (False, True):
        a = hard.gumbel_softmax(logits, hard=hard_, generator=gen(1))
        b = hard.gumbel_softmax(logits, hard=hard_, generator=gen(1))
        assert torch.equal(a, b)
    assert not torch.equal(hard.gumbel_softmax(logits, generator=gen(2)), a.detach())
    idx = [hard.hard_attention(logits, values, generator=gen(1))[1] for _ in range(2)]
    assert torch.equal(*idx)
    estimators = [
        lambda g: hard.reinforce_gradient(THETA, R, 50, baseline="mean", generator=g),
        lambda g: hard.gumbel_softmax_gradient(THETA, square, 0.5, 50, generator=g),
        lambda g: hard.straight_through_gradient(THETA, square, 50, generator=g),
    ]
    for est in estimators:
        assert torch.equal(est(gen(3)), est(gen(3)))


def test_gumbel_noise_is_never_inf(monkeypatch):
    """Even a uniform draw of exactly 0 or 1 gives finite noise and a finite sample."""
    extreme = torch.tensor([[0.0, 1.0, 0.0, 1.0]], dtype=D)
    monkeypatch.setattr(hard, "_uniform", lambda shape, generator: extreme.expand(shape))
    for dtype in (torch.float16, torch.float32, D):
        logits = torch.zeros(2, 4, dtype=dtype, requires_grad=True)
        for hard_ in (False, True):
            y = hard.gumbel_softmax(logits, tau=0.01, hard=hard_)
            y.sum().backward()
            assert torch.isfinite(y).all() and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_no_nan_at_tiny_tau_and_huge_scores(dtype):
    logits = torch.tensor([[1e4, -1e4, 0.0, 5e3]], dtype=dtype).repeat(50, 1)
    logits.requires_grad_(True)
    for hard_ in (False, True):
        y = hard.gumbel_softmax(logits, tau=0.01, hard=hard_, generator=gen(16))
        (y * torch.arange(4.0, dtype=dtype)).sum().backward()
        assert torch.isfinite(y).all() and torch.isfinite(logits.grad).all()
        assert torch.equal(y.argmax(-1), torch.zeros(50, dtype=torch.long))
    values = torch.randn(4, 3, generator=gen(17)).to(dtype)
    for fn in (
        lambda s: hard.soft_attention(s, values),
        lambda s: hard.topk_attention(s, values, 2),
        lambda s: hard.hard_attention(s, values, generator=gen(18)),
    ):
        s = logits.detach().clone().requires_grad_(True)
        context, w = fn(s)
        assert torch.isfinite(context).all() and torch.isfinite(w).all()
        if context.requires_grad:
            context.sum().backward()
            assert torch.isfinite(s.grad).all()
    theta = torch.tensor([1e4, -1e4, 0.0], dtype=torch.float32)
    r = torch.tensor([1.0, 2.0, 3.0])
    assert torch.isfinite(hard.gumbel_softmax_gradient(theta, r, 0.01, 100, gen(19))).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, D], ids=str)
@pytest.mark.parametrize("tau", [1e-38, 1e-300, 5e-324])
def test_gumbel_softmax_at_a_vanishing_tau_is_the_one_hot_of_the_argmax(dtype, tau):
    """(logits + g) / τ overflowed to inf for τ = 1e-38 in float32 (NaN sample); now the
    maximum is subtracted first: the sample is the one-hot of argmax(logits + g), exactly
    what hard=True returns, for every dtype and any positive τ."""
    logits = (torch.randn(40, 6, generator=gen(30), dtype=D) * 3).to(dtype).requires_grad_(True)
    y = hard.gumbel_softmax(logits, tau=tau, generator=gen(31))
    y_hard = hard.gumbel_softmax(logits, tau=tau, hard=True, generator=gen(31))
    assert y.dtype == dtype and torch.isfinite(y).all()
    one_hot = F.one_hot(y.argmax(-1), 6).to(dtype)
    assert torch.equal(y, one_hot) and torch.equal(y_hard, one_hot)
    # the same positions as float64 at a small but ordinary τ (the same noise)
    reference = hard.gumbel_softmax(logits.detach().double(), tau=1e-3, generator=gen(31))
    assert torch.equal(y.argmax(-1), reference.argmax(-1))
    y.sum().backward()
    assert not torch.isnan(logits.grad).any()


@pytest.mark.parametrize("tau", [1e-38, 1e-300])
def test_gumbel_softmax_gradient_at_a_vanishing_tau(tau):
    theta = torch.tensor([0.5, -0.3, 1.2, 0.0])  # float32
    est = hard.gumbel_softmax_gradient(theta, R.float(), tau, 200, gen(32))
    assert torch.isfinite(est).all()


def test_soft_and_topk_attention_in_half_precision_round_once():
    """Weights and context computed in float32 and rounded once to the inputs' dtype: the
    error is that of rounding the float64 result (before: up to 3x, softmax and the weighted
    sum in half precision)."""
    for dtype in (torch.float16, torch.bfloat16):
        for seed in range(5):
            s = (torch.randn(8, 200, generator=gen(seed), dtype=D) * 3).to(dtype)
            v = torch.randn(8, 200, 16, generator=gen(seed + 10), dtype=D).to(dtype)
            for fn in (lambda s, v: hard.soft_attention(s, v),
                       lambda s, v: hard.topk_attention(s, v, 50)):
                context, weights = fn(s, v)
                assert context.dtype == weights.dtype == dtype
                ref_c, ref_w = fn(s.double(), v.double())
                rounding = (ref_c.to(dtype).double() - ref_c).abs().max().item()
                err = (context.double() - ref_c).abs().max().item()
                assert err <= 1.5 * rounding, (dtype, seed, err, rounding)
                info = torch.finfo(dtype)
                torch.testing.assert_close(weights.double(), ref_w, rtol=info.eps,
                                           atol=info.tiny * info.eps)


# ----------------------------------------------------------------------------- estimators


@pytest.mark.parametrize("f", [R, square], ids=["linear", "nonlinear"])
def test_exact_gradient_matches_autograd(f):
    rewards = R if f is R else R**2  # f(e_i)
    theta = THETA.clone().requires_grad_(True)
    (torch.softmax(theta, -1) @ rewards).backward()
    torch.testing.assert_close(hard.exact_gradient(THETA, f), theta.grad, rtol=0, atol=1e-14)


@pytest.mark.parametrize("f", [R, square], ids=["linear", "nonlinear"])
@pytest.mark.parametrize("baseline", [None, 0.7, "mean"])
def test_reinforce_is_unbiased(f, baseline):
    est = hard.reinforce_gradient(THETA, f, N, baseline=baseline, generator=gen(20))
    assert est.shape == (N, 4)
    mean, se = mean_and_se(est)
    assert ((mean - hard.exact_gradient(THETA, f)).abs() <= 4 * se).all()


def test_baseline_cuts_variance_when_rewards_carry_an_offset():
    offset = R + 100
    exact = hard.exact_gradient(THETA, offset)
    var = {}
    for baseline in (None, 100.0, "mean"):
        est = hard.reinforce_gradient(THETA, offset, N, baseline=baseline, generator=gen(21))
        mean, se = mean_and_se(est)
        assert ((mean - exact).abs() <= 4 * se).all()
        var[baseline] = est.var(0).sum()
    assert var[None] > 1000 * var["mean"] and var[None] > 1000 * var[100.0]


@pytest.mark.parametrize("f", [R, square], ids=["linear", "nonlinear"])
def test_gumbel_softmax_bias_shrinks_as_tau_falls(f):
    exact = hard.exact_gradient(THETA, f)
    bias, se = [], []
    for tau in (5.0, 1.0, 0.1):
        mean, s = mean_and_se(hard.gumbel_softmax_gradient(THETA, f, tau, N, generator=gen(22)))
        bias.append((mean - exact).norm())
        se.append(s.norm())
    assert bias[0] > 20 * se[0]  # clearly biased at high temperature
    assert bias[0] - bias[1] > 4 * (se[0] + se[1])
    assert bias[1] - bias[2] > 4 * (se[1] + se[2])


def test_gumbel_softmax_gradient_matches_autograd_per_sample():
    tau, n = 0.7, 5
    est = hard.gumbel_softmax_gradient(THETA, square, tau, n, generator=gen(23))
    g = gen(23)  # same noise: a soft sample from the same generator state, one at a time
    theta = THETA.expand(n, 4).clone().requires_grad_(True)
    y = hard.gumbel_softmax(theta, tau=tau, generator=g)
    square(y).sum().backward()  # rows are independent, so this gives every row's gradient
    torch.testing.assert_close(est, theta.grad)


def test_straight_through_is_exact_for_a_linear_reward():
    exact = hard.exact_gradient(THETA, R)
    for f in (R, lambda y: y @ R):
        est = hard.straight_through_gradient(THETA, f, 200, generator=gen(24))
        torch.testing.assert_close(est, exact.expand(200, 4), rtol=0, atol=1e-14)


def test_straight_through_is_biased_for_a_nonlinear_reward():
    mean, se = mean_and_se(hard.straight_through_gradient(THETA, square, N, generator=gen(25)))
    assert ((mean - hard.exact_gradient(THETA, square)).abs() / se).max() > 10


def test_straight_through_matches_its_definition():
    """ST = ∇θ f(e_i + α - stop_grad(α)), by autograd, sample by sample."""
    est = hard.straight_through_gradient(THETA, square, 8, generator=gen(26))
    index = torch.multinomial(torch.softmax(THETA, -1), 8, replacement=True, generator=gen(26))
    for s in range(8):
        theta = THETA.clone().requires_grad_(True)
        alpha = torch.softmax(theta, -1)
        y = F.one_hot(index[s], 4).to(D) + alpha - alpha.detach()
        square(y[None]).sum().backward()
        torch.testing.assert_close(est[s], theta.grad)


# ----------------------------------------------------------------------------- bad input

V = torch.randn(5, 2, dtype=D)
S = torch.randn(5, dtype=D)
BAD = [
    (lambda: hard.soft_attention(torch.arange(5), V), TypeError, "scores"),
    (lambda: hard.soft_attention(S, torch.randn(5)), ValueError, "values"),
    (lambda: hard.soft_attention(torch.randn(4, dtype=D), V), ValueError, "values"),
    (lambda: hard.soft_attention(torch.full((5,), float("nan")), V), ValueError, "scores"),
    (lambda: hard.soft_attention(torch.full((5,), float("inf")), V), ValueError, "scores"),
    (lambda: hard.soft_attention(torch.full((5,), -float("inf")), V), ValueError, "scores"),
    (lambda: hard.soft_attention(torch.randn(3, 5), torch.randn(4, 5, 2)), ValueError, "batch"),
    (lambda: hard.soft_attention(torch.randn(0), torch.randn(0, 2)), ValueError, "scores"),
    (lambda: hard.hard_attention(S, V, mode="max"), ValueError, "mode"),
    (lambda: hard.hard_attention(S, V, generator=0), TypeError, "generator"),
    (lambda: hard.topk_attention(S, V, 0), ValueError, r"k.*L=5"),
    (lambda: hard.topk_attention(S, V, 6), ValueError, r"k.*L=5"),
    (lambda: hard.topk_attention(S, V, 2.0), TypeError, "k"),
    (lambda: hard.gumbel_softmax(S, tau=0), ValueError, "tau"),
    (lambda: hard.gumbel_softmax(S, tau=-1.0), ValueError, "tau"),
    (lambda: hard.gumbel_softmax(S, tau="1"), TypeError, "tau"),
    (lambda: hard.gumbel_softmax(S, hard=1), TypeError, "hard"),
    (lambda: hard.gumbel_softmax(S, dim=1), ValueError, "dim"),
    (lambda: hard.gumbel_softmax(S.int()), TypeError, "logits"),
    (lambda: hard.gumbel_softmax(torch.full((3,), float("nan"))), ValueError, "logits"),
    (lambda: hard.gumbel_softmax(S, generator="seed"), TypeError, "generator"),
    (lambda: hard.exact_gradient(THETA[None], R), ValueError, "logits"),
    (lambda: hard.exact_gradient(THETA, R[:3]), ValueError, "f"),
    (lambda: hard.exact_gradient(THETA, [1, 2, 3, 4]), TypeError, "f"),
    (lambda: hard.exact_gradient(THETA, R / 0), ValueError, "f"),
    (lambda: hard.exact_gradient(THETA, lambda y: y), ValueError, "f"),
    (lambda: hard.reinforce_gradient(THETA, R, 0), ValueError, "n_samples"),
    (lambda: hard.reinforce_gradient(THETA, R, 2.5), TypeError, "n_samples"),
    (lambda: hard.reinforce_gradient(THETA, R, 10, baseline="median"), ValueError, "baseline"),
    (lambda: hard.reinforce_gradient(THETA, R, 10, baseline=[1.0]), TypeError, "baseline"),
    (lambda: hard.reinforce_gradient(THETA, R, 1, baseline="mean"), ValueError, "n_samples"),
    (lambda: hard.reinforce_gradient(THETA, R, 5, generator=1), TypeError, "generator"),
    (lambda: hard.gumbel_softmax_gradient(THETA, R, 0.0, 10), ValueError, "tau"),
    (lambda: hard.gumbel_softmax_gradient(THETA.int(), R, 1.0, 10), TypeError, "logits"),
    (lambda: hard.straight_through_gradient(THETA, R, -3), ValueError, "n_samples"),
    (lambda: hard.straight_through_gradient(THETA * float("nan"), R, 3), ValueError, "logits"),
]


@pytest.mark.parametrize(("call", "error", "match"), BAD, ids=[m for _, _, m in BAD])
def test_bad_input_raises_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


V_INF = V.clone()
V_INF[2, 1] = float("inf")
NOT_FINITE = [
    # an inf value used to give an inf or NaN column of the context, silently
    (lambda: hard.soft_attention(S, V_INF), r"values contains \+inf \(shape \(5, 2\)\)"),
    (lambda: hard.topk_attention(S, V_INF, 2), r"values contains \+inf"),
    (lambda: hard.hard_attention(S, -V_INF), r"values contains -inf"),
    (lambda: hard.gumbel_softmax(S, tau=float("inf")), r"tau must be finite, got inf"),
    (lambda: hard.gumbel_softmax_gradient(THETA, R, float("inf"), 10), r"tau must be finite"),
]


@pytest.mark.parametrize(("call", "match"), NOT_FINITE, ids=[m for _, m in NOT_FINITE])
def test_inf_input_raises_a_clear_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ----------------------------------------------------------------------------- the lab

LAB_THETA = torch.tensor([1.0, 0.0, 0.5, -0.5], dtype=D)
LAB_R = torch.tensor([1.0, 3.0, -1.0, 0.0], dtype=D)


def test_lab_rewards_are_the_three_rewards():
    f = hard.lab_rewards(LAB_R)
    assert list(f) == ["linear", "linear + 10", "nonlinear (y·r)²"]
    y = torch.eye(4, dtype=D)
    torch.testing.assert_close(f["linear + 10"], LAB_R + 10)
    torch.testing.assert_close(f["nonlinear (y·r)²"](y), LAB_R**2)
    # the offset leaves the exact gradient alone
    torch.testing.assert_close(hard.exact_gradient(LAB_THETA, f["linear + 10"]),
                               hard.exact_gradient(LAB_THETA, f["linear"]))


def test_bias_variance_measures_what_it_says():
    exact = torch.tensor([1.0, -1.0], dtype=D)
    est = exact + torch.randn(4000, 2, generator=torch.Generator().manual_seed(0), dtype=D)
    stats = hard.bias_variance(est, exact)
    assert stats["z"] < 4.5 and abs(stats["variance"] - 2.0) < 0.2
    shifted = hard.bias_variance(est + 0.5, exact)
    assert shifted["z"] > 10 and abs(shifted["bias"] - 0.5 * math.sqrt(2)) < 0.1
    same = hard.bias_variance(exact.expand(5, 2), exact)
    assert same["z"] == 0 and same["variance"] == 0


def test_repeated_estimates_shape_and_bad_names():
    f = hard.lab_rewards(LAB_R)["linear"]
    for name in hard.ESTIMATORS:
        est = hard.repeated_estimates(name, LAB_THETA, f, 5, 7, generator=torch.Generator())
        assert est.shape == (7, 4)
    with pytest.raises(ValueError, match="estimator"):
        hard.estimates("nope", LAB_THETA, f, 5)
