"""Chapter 1's checks: correct answers pass, a stub is "not attempted", each bug is named,
library calls are noticed, near misses are only "values"."""

from __future__ import annotations

import math

import pytest
import torch

from utils import attention, checks, positions
from utils.checks import self_attention as c
from utils.examples import running_example


def _stub(*args, **kwargs):
    raise NotImplementedError


# ------------------------------------------------------------------ 1. debug: self-attention


def buggy_self_attention(x, w_q, w_k, w_v):  # the notebook's, as the student gets it
    q, k, v = x @ w_q, x @ w_k, x @ w_v
    scores = q @ k.T / math.sqrt(x.shape[-1])
    e = scores.exp()
    weights = e / e.sum(dim=0)
    return weights @ v, weights


def _fixed(transpose=True, scale=True, overflow=True, axis=True):
    """The buggy function with some of its bugs fixed, written as a student would."""

    def fn(x, w_q, w_k, w_v):
        q, k, v = x @ w_q, x @ w_k, x @ w_v
        k_t = k.mT if transpose else k.T
        scores = q @ k_t / math.sqrt(q.shape[-1] if scale else x.shape[-1])
        if overflow:
            scores = scores - scores.max(dim=-1, keepdim=True).values
        e = scores.exp()
        weights = e / (e.sum(dim=-1, keepdim=True) if axis else e.sum(dim=0))
        return weights @ v, weights

    return fn


def test_the_buggy_function_runs_on_the_running_example_and_is_named():
    ex = running_example()
    out, weights = buggy_self_attention(ex.x, ex.w_q, ex.w_k, ex.w_v)
    assert out.shape == (10, 7) and weights.shape == (10, 10)
    result = checks.check_self_attention(buggy_self_attention)
    assert result.diagnosis == "transpose+sqrt_d_model+overflow+wrong_axis"
    assert "4 of the four bugs" in result.message


@pytest.mark.parametrize(
    ("fixed", "diagnosis"),
    [
        ({}, None),
        ({"transpose": False}, "transpose"),
        ({"scale": False}, "sqrt_d_model"),
        ({"overflow": False}, "overflow"),
        ({"axis": False}, "wrong_axis"),
        ({"transpose": False, "axis": False}, "transpose+wrong_axis"),
        ({"scale": False, "overflow": False, "axis": False}, "sqrt_d_model+overflow+wrong_axis"),
    ],
)
def test_each_bug_left_is_named(fixed, diagnosis):
    result = checks.check_self_attention(_fixed(**fixed))
    assert result.diagnosis == diagnosis, result.message
    assert result.status == ("pass" if diagnosis is None else "fail")


def test_other_ways_of_writing_it():
    def with_softmax(x, w_q, w_k, w_v):
        q, k, v = x @ w_q, x @ w_k, x @ w_v
        w = torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, dim=-1)
        return w @ v, w

    def softmax_wrong_axis(x, w_q, w_k, w_v):
        q, k, v = x @ w_q, x @ w_k, x @ w_v
        w = torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, dim=0)
        return w @ v, w

    def library_softmax(x, w_q, w_k, w_v):
        q, k, v = x @ w_q, x @ w_k, x @ w_v
        w = attention.softmax(q @ k.mT / math.sqrt(k.shape[-1]))
        return w @ v, w

    assert checks.check_self_attention(with_softmax).status == "pass"
    assert checks.check_self_attention(library_softmax).status == "pass"  # softmax is allowed
    assert checks.check_self_attention(softmax_wrong_axis).diagnosis == "wrong_axis"
    assert checks.check_self_attention(_stub).status == "not attempted"


@pytest.mark.parametrize(
    ("fn", "diagnosis"),
    [
        (c._scaled(lambda q, x: 1.0), "missing_scale"),
        (c._scaled(lambda q, x: 1 / q.shape[-1]), "scale_d_k"),
        (c._scaled(lambda q, x: 1 / math.sqrt(q.shape[-1]), transposed=True), "transposed_scores"),
        (c._scaled(lambda q, x: 1 / math.sqrt(q.shape[-1]), x_values=True), "used_x_as_values"),
        (lambda x, wq, wk, wv: (x, x), "wrong_shape"),
        (lambda x, wq, wk, wv: 1 / 0, "raised"),
        (c._scaled(lambda q, x: 1.01 / math.sqrt(q.shape[-1])), "values"),  # a near miss
    ],
)
def test_self_attention_other_bugs(fn, diagnosis, capsys):
    result = checks.check_self_attention(fn)
    assert result.status == "fail" and result.diagnosis == diagnosis, result.message
    assert capsys.readouterr().out.strip() == result.message  # printed once


@pytest.mark.parametrize("library", [attention.self_attention,
                                     lambda x, a, b, v: attention.scaled_dot_product_attention(
                                         x @ a, x @ b, x @ v)])
def test_self_attention_library_call_is_noticed(library):
    result = checks.check_self_attention(lambda x, a, b, v: library(x, a, b, v))
    assert result.diagnosis == "used_library" and "attention" in result.message


# ------------------------------------------------------------------ 2. design: bought -> milk


def _w_q(**rows):
    ex = running_example()
    w = ex.w_q.clone()
    for feature, values in rows.items():
        w[ex.features.index(feature)] = torch.tensor(values, dtype=w.dtype)
    return w


@pytest.mark.parametrize(
    ("rows", "status", "diagnosis"),
    [
        ({"action": [0, 0, 3, 0]}, "pass", None),
        ({"action": [0, 0, 5, 0]}, "pass", None),
        ({"action": [0, -2, 4, 0]}, "pass", None),
        ({}, "fail", "wrong_row"),
        ({"food": [0, 0, 3, 0]}, "fail", "wrong_row"),  # milk's own query, not bought's
        ({"action": [0, 3, 0, 0]}, "fail", "wrong_role"),  # asks for a place
        ({"action": [3, 1, 2, 0]}, "fail", "wrong_role"),  # John still wins
        ({"action": [0, 0, 1.5, 0]}, "fail", "too_weak"),
        ({"action": [0, 0, 3, 0], "pronoun": [0, 0, 0, 0]}, "fail", "broke_he"),
        ({"action": [0, 0, 3, 0], "male": [0, 0, 3, 0]}, "fail", "broke_he"),
    ],
)
def test_design_check(rows, status, diagnosis):
    result = checks.check_bought_reads_milk(lambda: _w_q(**rows))
    assert (result.status, result.diagnosis) == (status, diagnosis), result.message


def test_design_check_thresholds_are_the_stated_ones():
    ex = running_example()
    _, a = attention.self_attention(ex.x, c._design_solution(), ex.w_k, ex.w_v)
    assert a[ex.index("bought"), ex.index("milk")] > c.BOUGHT_MILK
    assert a[ex.index("He"), ex.index("John")] > c.HE_JOHN
    _, a = attention.self_attention(ex.x, ex.w_q, ex.w_k, ex.w_v)  # the designed W_Q fails
    assert a[ex.index("bought"), ex.index("milk")] < c.BOUGHT_MILK
    assert checks.check_bought_reads_milk(_stub).status == "not attempted"
    wrong = checks.check_bought_reads_milk(lambda: torch.zeros(4, 7, dtype=torch.float64))
    assert wrong.diagnosis == "wrong_shape"


# ------------------------------------------------------------------ 3. the sinusoidal code


def test_sinusoidal_reference_is_the_library():
    p = torch.arange(11, dtype=torch.float64)
    assert torch.allclose(c._solution_sinusoidal(p, 20),
                          positions.sinusoidal(11, 20, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "diagnosis"),
    [
        ({"swap": True}, "sin_cos_swapped"),
        ({"layout": "halves"}, "halves"),
        ({"exponent": "column"}, "column_exponent"),
        ({"exponent": "i"}, "i_over_d"),
        ({"divide": False}, "multiplied"),
    ],
)
def test_sinusoidal_bugs(kwargs, diagnosis):
    result = checks.check_sinusoidal(lambda p, d: c._sinusoidal(p, d, **kwargs))
    assert result.diagnosis == diagnosis, result.message


def test_sinusoidal_student_answers():
    def student(p, d):
        angle = p[:, None] / 10000 ** (torch.arange(0, d, 2, dtype=p.dtype) / d)
        code = torch.zeros(len(p), d, dtype=p.dtype)
        code[:, 0::2] = torch.sin(angle)
        code[:, 1::2] = torch.cos(angle)
        return code

    def from_zero(p, d):  # ignores p: positions 0..n-1 whatever is asked
        return student(torch.arange(len(p), dtype=p.dtype), d)

    assert checks.check_sinusoidal(student).status == "pass"
    assert checks.check_sinusoidal(_stub).status == "not attempted"
    assert checks.check_sinusoidal(from_zero).diagnosis == "values"
    assert checks.check_sinusoidal(lambda p, d: student(p, d).float()).diagnosis == "wrong_dtype"
    library = checks.check_sinusoidal(lambda p, d: positions.sinusoidal(len(p), d, dtype=p.dtype))
    assert library.diagnosis == "used_library"


# ------------------------------------------------------------------ 4. predict, then run

RIGHT = {"He": [1, 0, 0, 0, 0, 0, 0, 0, 0, 0], "milk": [0, 0.5, 0, 0, 0, 0, 0, 0.5, 0, 0],
         "the": [0.1] * 10}


@pytest.mark.parametrize(
    ("change", "diagnosis"),
    [
        ({}, None),
        ({"He": [0.97, 0, 0, 0, 0, 0, 0.03, 0, 0, 0]}, "wrong_he"),  # the T = 1 weights
        ({"He": [0, 0, 0, 0, 0, 0, 1, 0, 0, 0]}, "wrong_he"),
        ({"milk": [0, 1, 0, 0, 0, 0, 0, 0, 0, 0]}, "wrong_milk"),  # missed the tie
        ({"milk": [0, 0, 0, 0, 0, 0, 0, 1, 0, 0]}, "wrong_milk"),
        ({"the": [1] + [0] * 9}, "wrong_the"),
        ({"the": [0.1] * 9}, "wrong_shape"),
        ({"the": [0.2] * 10}, "not_weights"),
        ({"He": "John"}, "wrong_type"),
    ],
)
def test_low_temperature(change, diagnosis):
    result = checks.check_low_temperature(lambda: {**RIGHT, **change})
    assert result.diagnosis == diagnosis, result.message
    if diagnosis and diagnosis.startswith("wrong_"):
        assert "it runs as" in result.message or diagnosis in ("wrong_type", "wrong_shape")


def test_low_temperature_accepts_tensors_and_needs_every_query():
    as_tensors = {k: torch.tensor(v) for k, v in RIGHT.items()}
    assert checks.check_low_temperature(lambda: as_tensors).status == "pass"
    assert checks.check_low_temperature(lambda: {"He": RIGHT["He"]}).diagnosis == "missing_query"
    assert checks.check_low_temperature(lambda: [RIGHT]).diagnosis == "wrong_type"
    assert checks.check_low_temperature(_stub).status == "not attempted"


def test_low_temperature_notices_a_computed_answer():
    ex = running_example()

    def computed():
        q, k = ex.x @ ex.w_q, ex.x @ ex.w_k
        a = torch.softmax(q @ k.T / (2 * 0.01), dim=-1)
        return {t: a[ex.index(t)].tolist() for t in ("He", "milk", "the")}

    assert checks.check_low_temperature(computed).diagnosis == "used_library"


def test_low_temperature_truth():
    """What the prose and the solution say: one-hot on John, a tie, uniform."""
    weights = c._low_temperature_weights()
    ex = running_example()
    for query, row in RIGHT.items():
        assert torch.allclose(weights[ex.index(query)], torch.tensor(row, dtype=torch.float64),
                              atol=1e-6)
