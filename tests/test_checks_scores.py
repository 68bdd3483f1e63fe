"""Chapter 6's checks: the reference passes, a stub is "not attempted", every typical bug is named."""

from __future__ import annotations

import math

import pytest
import torch

from utils import scores
from utils.checks import scores as checks

# --------------------------------------------------------------------------- additive


def additive_ok(q, k, w_q, w_k, v):
    return torch.tanh((q @ w_q).unsqueeze(-2) + (k @ w_k).unsqueeze(-3)) @ v


def additive_loop(q, k, w_q, w_k, v):
    """A correct but different implementation: explicit loops over the pairs (2-D and 3-D)."""
    if q.dim() == 3:
        return torch.stack([additive_loop(a, b, w_q, w_k, v) for a, b in zip(q, k, strict=True)])
    out = torch.empty(q.shape[0], k.shape[0], dtype=q.dtype)
    for i in range(q.shape[0]):
        for j in range(k.shape[0]):
            out[i, j] = v @ torch.tanh(q[i] @ w_q + k[j] @ w_k)
    return out


ADDITIVE_BUGS = {
    "no_tanh": lambda q, k, w_q, w_k, v: ((q @ w_q).unsqueeze(-2) + (k @ w_k).unsqueeze(-3)) @ v,
    "wrong_broadcast": lambda q, k, w_q, w_k, v: torch.tanh(q @ w_q + k @ w_k) @ v,
    "transposed": lambda q, k, w_q, w_k, v: torch.tanh((q @ w_q).unsqueeze(-3)
                                                       + (k @ w_k).unsqueeze(-2)) @ v,
    "no_v": lambda q, k, w_q, w_k, v: torch.tanh((q @ w_q).unsqueeze(-2)
                                                 + (k @ w_k).unsqueeze(-3)).sum(-1),
    "one_projection": lambda q, k, w_q, w_k, v: torch.tanh((q @ w_q).unsqueeze(-2)
                                                           + (k @ w_q).unsqueeze(-3)) @ v,
}


@pytest.mark.parametrize("fn", [additive_ok, additive_loop])
def test_additive_accepts_correct_implementations(fn):
    result = checks.check_additive_scores(fn)
    assert result.status == "pass" and result.diagnosis is None


def test_additive_stub_is_not_attempted():
    def stub(q, k, w_q, w_k, v):
        raise NotImplementedError

    assert checks.check_additive_scores(stub).status == "not attempted"


@pytest.mark.parametrize("key", ADDITIVE_BUGS)
def test_additive_names_the_bug(key):
    result = checks.check_additive_scores(ADDITIVE_BUGS[key])
    assert result.status == "fail"
    assert result.diagnosis == key, result.message


def test_additive_unknown_wrong_shape_names_both_shapes():
    result = checks.check_additive_scores(lambda q, k, w_q, w_k, v: torch.zeros(2, 2))
    assert result.diagnosis == "wrong_shape"
    assert "(4, 4)" in result.message and "(2, 2)" in result.message


def test_additive_reports_an_exception():
    result = checks.check_additive_scores(lambda q, k, w_q, w_k, v: q @ k)
    assert result.diagnosis == "raised"


# --------------------------------------------------------------------------- general

GENERAL_BUGS = {
    "w_transposed": lambda q, k, w: q @ w.T @ k.transpose(-2, -1),
    "transposed": lambda q, k, w: k @ w.T @ q.transpose(-2, -1),
    "no_w": lambda q, k, w: q @ k.transpose(-2, -1),
    "scaled": lambda q, k, w: q @ w @ k.transpose(-2, -1) / math.sqrt(k.shape[-1]),
}


@pytest.mark.parametrize("fn", [
    lambda q, k, w: q @ w @ k.transpose(-2, -1),
    lambda q, k, w: torch.einsum("...id,de,...je->...ij", q, w, k),
])
def test_general_accepts_correct_implementations(fn):
    assert checks.check_general_scores(fn).status == "pass"


def test_general_stub_is_not_attempted():
    def stub(q, k, w):
        raise NotImplementedError

    assert checks.check_general_scores(stub).status == "not attempted"


@pytest.mark.parametrize("key", GENERAL_BUGS)
def test_general_names_the_bug(key):
    result = checks.check_general_scores(GENERAL_BUGS[key])
    assert result.status == "fail"
    assert result.diagnosis == key, result.message


@pytest.mark.filterwarnings("ignore:The use of `x.T`:UserWarning")
def test_general_batched_k_dot_T_fails():
    # k.T reverses every dimension of a batched k: it must not pass
    result = checks.check_general_scores(lambda q, k, w: q @ w @ k.T)
    assert result.status == "fail"


# --------------------------------------------------------------------------- variance


def _pairs(d_k, n, generator):
    q = torch.randn(n, d_k, generator=generator, dtype=torch.float64)
    k = torch.randn(n, d_k, generator=generator, dtype=torch.float64)
    return q, k


def variance_ok(d_k, n_samples=10_000, generator=None):
    q, k = _pairs(d_k, n_samples, generator)
    return (q * k).sum(-1).var().item()


def variance_as_tensor(d_k, n_samples=10_000, generator=None):
    q = torch.randn(n_samples, d_k, generator=generator)  # float32, tensor result
    k = torch.randn(n_samples, d_k, generator=generator)
    return torch.var(torch.einsum("nd,nd->n", q, k))


def variance_scaled(d_k, n_samples=10_000, generator=None):
    q, k = _pairs(d_k, n_samples, generator)
    return ((q * k).sum(-1) / math.sqrt(d_k)).var().item()


def variance_std(d_k, n_samples=10_000, generator=None):
    q, k = _pairs(d_k, n_samples, generator)
    return (q * k).sum(-1).std().item()


def variance_mean(d_k, n_samples=10_000, generator=None):
    q, k = _pairs(d_k, n_samples, generator)
    return (q * k).mean(-1).var().item()


def variance_same_vector(d_k, n_samples=10_000, generator=None):
    q, _ = _pairs(d_k, n_samples, generator)
    return (q * q).sum(-1).var().item()


def variance_uniform(d_k, n_samples=10_000, generator=None):
    q = torch.rand(n_samples, d_k, generator=generator, dtype=torch.float64)
    k = torch.rand(n_samples, d_k, generator=generator, dtype=torch.float64)
    return (q * k).sum(-1).var().item()


@pytest.mark.parametrize("fn", [variance_ok, variance_as_tensor])
def test_variance_accepts_correct_implementations(fn):
    result = checks.check_score_variance(fn)
    assert result.status == "pass", result.message


def test_variance_passes_for_other_random_streams():
    # the tolerance must not make a correct experiment fail by bad luck: five other streams from
    # the same generator (some numbers skipped first)
    for skip in range(1, 6):
        def fn(d_k, n_samples, generator, skip=skip):
            torch.rand(skip, generator=generator)
            return variance_ok(d_k, n_samples, generator)

        assert checks.check_score_variance(fn, verbose=False).status == "pass"


def test_variance_must_draw_from_the_generator():
    def own_generator(d_k, n_samples, generator):
        return variance_ok(d_k, n_samples, None)  # the global random state

    assert checks.check_score_variance(own_generator).diagnosis == "ignores_generator"
    hard_coded = checks.check_score_variance(lambda d_k, n, g: float(d_k))
    assert hard_coded.diagnosis == "not_random"


def variance_elementwise(d_k, n_samples=10_000, generator=None):
    """A near miss: the variance of the products q_i k_i (≈ 1), not of their sum."""
    q, k = _pairs(d_k, n_samples, generator)
    return (q * k).var().item()


def variance_elementwise_float32(d_k, n_samples=10_000, generator=None):
    q = torch.randn(n_samples, d_k, generator=generator)
    k = torch.randn(n_samples, d_k, generator=generator)
    return torch.var(q * k, unbiased=False).item()


@pytest.mark.parametrize("fn", [variance_elementwise, variance_elementwise_float32])
def test_variance_near_miss_is_not_named_as_another_bug(fn):
    # ≈ 1 for every d_k, like the scaled score: but it is not the scaled score
    result = checks.check_score_variance(fn)
    assert result.status == "fail" and result.diagnosis == "values", result.message


def test_variance_stub_is_not_attempted():
    def stub(d_k, n_samples=10_000, generator=None):
        raise NotImplementedError

    assert checks.check_score_variance(stub).status == "not attempted"


@pytest.mark.parametrize(("fn", "key"), [
    (variance_scaled, "scaled"),
    (variance_std, "std"),
    (variance_mean, "mean_not_sum"),
    (variance_same_vector, "same_vector"),
    (variance_uniform, "uniform"),
])
def test_variance_names_the_bug(fn, key):
    result = checks.check_score_variance(fn)
    assert result.status == "fail"
    assert result.diagnosis == key, result.message


def test_variance_rejects_a_wrong_value_without_a_known_bug():
    result = checks.check_score_variance(lambda d_k, n, g: 1.4 * variance_ok(d_k, n, g))
    assert result.status == "fail" and result.diagnosis == "values"


def test_variance_reports_nan_and_exceptions_and_tensors():
    assert checks.check_score_variance(lambda d, n, g: float("nan")).diagnosis == "nan"
    assert checks.check_score_variance(lambda d, n, g: 1 / 0).diagnosis == "raised"
    vector = checks.check_score_variance(lambda d, n, g: torch.ones(3))
    assert vector.diagnosis == "wrong_type" and "one number" in vector.message
    assert checks.check_score_variance(lambda d, n, g: None).diagnosis == "no_return"


def test_check_prints_one_line(capsys):
    checks.check_score_variance(variance_ok)
    out = capsys.readouterr().out
    assert out.startswith("✅") and out.count("\n") == 1


def test_variance_bug_drawn_in_one_stacked_call_is_still_named():
    def scaled_stacked(d_k, n_samples, generator=None):
        q, k = torch.randn(2, n_samples, d_k, generator=generator, dtype=torch.float64)
        return ((q * k).sum(-1) / math.sqrt(d_k)).var().item()

    assert checks.check_score_variance(scaled_stacked).diagnosis == "scaled"


def test_variance_correct_but_drawn_differently_passes():
    def interleaved(d_k, n_samples, generator=None):
        qk = torch.randn(n_samples, 2, d_k, generator=generator, dtype=torch.float64)
        return (qk[:, 0] * qk[:, 1]).sum(-1).var(unbiased=False).item()

    assert checks.check_score_variance(interleaved)


def test_additive_and_general_near_misses_are_values():
    sigmoid = lambda q, k, w_q, w_k, v: torch.sigmoid(  # noqa: E731
        (q @ w_q).unsqueeze(-2) + (k @ w_k).unsqueeze(-3)) @ v
    assert checks.check_additive_scores(sigmoid).diagnosis == "values"
    symmetrised = lambda q, k, w: q @ ((w + w.mT) / 2) @ k.mT  # noqa: E731
    assert checks.check_general_scores(symmetrised).diagnosis == "values"


# --------------------------------------------------------------------------- one call of utils


@pytest.mark.parametrize(("check", "answer"), [
    (checks.check_additive_scores, scores.additive),
    (checks.check_additive_scores,
     lambda q, k, w_q, w_k, v: scores.concat(q, k, torch.cat([w_q, w_k]), v)),
    (checks.check_general_scores, scores.general),
    (checks.check_general_scores, lambda q, k, w: scores.dot(q @ w, k)),
])
def test_one_call_of_utils_is_refused(check, answer):
    result = check(answer)
    assert result.status == "fail" and result.diagnosis == "used_library", result.message


# --------------------------------------------------------------------------- learned temperature


def _cosine_module(score, init=0.0, parameter=True):
    """A module computing ``score(q, k, b)`` with its scalar b (a parameter unless told)."""

    class Module(torch.nn.Module):
        def __init__(self):
            super().__init__()
            b = torch.tensor(init)
            self.b = torch.nn.Parameter(b) if parameter else b

        def forward(self, q, k):
            return score(q, k, self.b)

    return Module


def _unit(x, eps=1e-12):
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


COSINE_OK = lambda q, k, b: torch.exp(b) * _unit(q) @ _unit(k).mT  # noqa: E731
COSINE_BUGS = {
    "not_exponentiated": _cosine_module(lambda q, k, b: b * _unit(q) @ _unit(k).mT, init=1.0),
    "inverse": _cosine_module(lambda q, k, b: _unit(q) @ _unit(k).mT / torch.exp(b)),
    "not_normalised": _cosine_module(lambda q, k, b: torch.exp(b) * q @ k.mT),
    "whole_norm": _cosine_module(lambda q, k, b: torch.exp(b) * (q / q.norm()) @ (k / k.norm()).mT),
    "wrong_axis": _cosine_module(lambda q, k, b: torch.exp(b) * (q / q.norm(dim=-2, keepdim=True))
                                 @ (k / k.norm(dim=-2, keepdim=True)).mT),
    "zero_vector": _cosine_module(lambda q, k, b: torch.exp(b) * (q / q.norm(dim=-1, keepdim=True))
                                  @ (k / k.norm(dim=-1, keepdim=True)).mT),
    "no_gradient": _cosine_module(lambda q, k, b: math.exp(b.item()) * _unit(q) @ _unit(k).mT),
    "init": _cosine_module(COSINE_OK, init=1.0),
    "no_parameter": _cosine_module(COSINE_OK, parameter=False),
}


@pytest.mark.parametrize("cls", [
    checks._LearnedCosine,
    _cosine_module(COSINE_OK),
    _cosine_module(lambda q, k, b: b.exp() * torch.nn.functional.cosine_similarity(
        q.unsqueeze(-2), k.unsqueeze(-3), dim=-1)),
])
def test_learned_cosine_accepts_correct_modules(cls):
    result = checks.check_learned_cosine(cls)
    assert result.status == "pass", result.message


@pytest.mark.parametrize("key", COSINE_BUGS)
def test_learned_cosine_names_the_bug(key):
    result = checks.check_learned_cosine(COSINE_BUGS[key])
    assert result.status == "fail"
    assert result.diagnosis == key, result.message


def test_learned_cosine_stub_library_and_near_miss():
    class Stub(torch.nn.Module):
        def __init__(self):
            raise NotImplementedError

    assert checks.check_learned_cosine(Stub).status == "not attempted"
    library = _cosine_module(lambda q, k, b: torch.exp(b) * scores.cosine(q, k))
    assert checks.check_learned_cosine(library).diagnosis == "used_library"
    squared = _cosine_module(lambda q, k, b: torch.exp(2 * b) * _unit(q) @ _unit(k).mT)
    assert checks.check_learned_cosine(squared).diagnosis == "values"
    assert checks.check_learned_cosine(lambda: "model").diagnosis == "wrong_type"


@pytest.mark.parametrize(("forward", "key"), [
    (lambda q, k, b: None, "no_return"),
    (lambda q, k, b: COSINE_OK(q, k, b).tolist(), "wrong_type"),
    (lambda q, k, b: COSINE_OK(q, k, b).float(), "wrong_dtype"),
    (lambda q, k, b: COSINE_OK(q, k, b)[..., :-1], "wrong_shape"),
    (lambda q, k, b: COSINE_OK(q, k, b).mT, "wrong_shape"),
])
def test_learned_cosine_forward_returning_the_wrong_kind_of_value(forward, key):
    # the robustness test cannot build these from a class: the forward pass is checked here
    result = checks.check_learned_cosine(_cosine_module(forward))
    assert result.status == "fail" and result.diagnosis == key, result.message


def test_learned_cosine_forward_changing_its_input_fails():
    def forward(q, k, b):
        out = COSINE_OK(q, k, b)
        q.zero_()
        return out

    assert checks.check_learned_cosine(_cosine_module(forward)).diagnosis == "mutated_input"
