"""Chapter 1's checks: correct answers pass, a stub is "not attempted", each bug is named,
library calls are noticed, near misses are only "values"."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from utils import attention, checks, positions, widgets
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


def _hand_softmax(shift="row", total="row", scale="d_k", k_t="mT"):
    """The fixed function written by hand, with one more mistake a student makes."""

    def fn(x, w_q, w_k, w_v):
        q, k, v = x @ w_q, x @ w_k, x @ w_v
        kt = k.transpose(1, 2) if k_t == "from_front" else k.mT
        d = {"d_k": q.shape[-1], "d_v": v.shape[-1], "axis_1": q.shape[1], "notebook": 4}[scale]
        s = q @ kt / math.sqrt(d)
        s = s - {"row": lambda: s.max(dim=-1, keepdim=True).values,
                 "no_keepdim": lambda: s.max(dim=-1).values,
                 "column": lambda: s.max(dim=-2, keepdim=True).values,
                 "global": s.max}[shift]()
        e = s.exp()
        w = e / {"row": lambda: e.sum(dim=-1, keepdim=True), "no_keepdim": lambda: e.sum(-1),
                 "queries": lambda: e.sum(dim=-2, keepdim=True), "all": e.sum}[total]()
        return w @ v, w

    return fn


def _softmax_dim(dim):
    def fn(x, w_q, w_k, w_v):
        q, k, v = x @ w_q, x @ w_k, x @ w_v
        w = torch.softmax(q @ k.mT / math.sqrt(q.shape[-1]), dim=dim)
        return w @ v, w

    return fn


def _transpose_0_1(x, w_q, w_k, w_v):
    q, k, v = x @ w_q, x @ w_k, x @ w_v
    w = torch.softmax(q @ k.transpose(0, 1) / math.sqrt(q.shape[-1]), dim=-1)
    return w @ v, w


def _scores_times_sqrt(x, w_q, w_k, w_v):
    q, k, v = x @ w_q, x @ w_k, x @ w_v
    w = torch.softmax(q @ k.mT * math.sqrt(q.shape[-1]), dim=-1)
    return w @ v, w


@pytest.mark.parametrize(
    ("fn", "diagnosis"),
    [
        (_hand_softmax(), None),
        (_hand_softmax(total="no_keepdim"), "sum_no_keepdim"),
        (_hand_softmax(total="all"), "sum_all"),
        (_hand_softmax(total="queries"), "wrong_axis"),  # dim=-2: dim=0 only on one sequence
        (_softmax_dim(-2), "wrong_axis"),
        (_hand_softmax(shift="no_keepdim"), "max_not_row"),
        (_hand_softmax(shift="column"), "max_not_row"),
        (_hand_softmax(shift="global"), "global_max"),  # NaN on the large scores
        (_hand_softmax(scale="d_v"), "sqrt_d_v"),
        (_hand_softmax(scale="axis_1"), "scale_axis_1"),  # right on one sequence only
        (_scores_times_sqrt, "scale_multiplied"),
        (_hand_softmax(k_t="from_front"), "axis_from_front"),  # works on a batch only
        (_transpose_0_1, "transpose"),
        (_hand_softmax(scale="notebook"), "notebook_d_k"),  # the notebook's global d_k = 4
    ],
)
def test_self_attention_student_mistakes(fn, diagnosis):
    result = checks.check_self_attention(fn, verbose=False)
    assert result.diagnosis == diagnosis, result.message
    assert result.status == ("pass" if diagnosis is None else "fail")


def test_self_attention_transpose_hint_fits_both_ways_of_writing_it():
    for fn in (_transpose_0_1, _fixed(transpose=False)):
        message = checks.check_self_attention(fn, verbose=False).message
        assert "k.transpose(-2, -1)" in message and "transpose(0, 1)" in message


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


def test_design_too_weak_names_the_runner_up():
    result = checks.check_bought_reads_milk(lambda: _w_q(action=[2, 1, 3, 0]))  # kept person
    assert result.diagnosis == "too_weak" and "“John” next" in result.message


def test_design_other_wrong_answers():
    def unchanged_float32():
        return _w_q(action=[0, 0, 3, 0]).float()

    def nan():
        return _w_q(action=[0, 0, float("nan"), 0])

    def swapped_indices():  # w_q[role, feature]
        ex = running_example()
        w = ex.w_q.clone()
        w[ex.roles.index("food"), ex.features.index("action")] = 3.0
        return w

    assert checks.check_bought_reads_milk(unchanged_float32).diagnosis == "wrong_dtype"
    assert checks.check_bought_reads_milk(nan).diagnosis == "nan"
    assert checks.check_bought_reads_milk(lambda: _w_q(action=[0, 0, 3, 0]).T).diagnosis == \
        "wrong_shape"
    assert checks.check_bought_reads_milk(lambda: _w_q(action=[0, 0, 3, 0]).numpy()).diagnosis \
        == "wrong_type"
    assert checks.check_bought_reads_milk(lambda: None).diagnosis == "no_return"
    raised = checks.check_bought_reads_milk(swapped_indices)
    assert raised.diagnosis == "raised" and "index 4 is out of bounds" in raised.message


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
        ({"exponent": "4i"}, "exponent_doubled"),
        ({"positions_from": 0}, "ignores_p"),
        ({"positions_from": 1}, "values"),  # 1, 2, ... for any p: no known bug explains it
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
    assert checks.check_sinusoidal(from_zero).diagnosis == "ignores_p"
    assert checks.check_sinusoidal(lambda p, d: student(p, d).float()).diagnosis == "wrong_dtype"
    library = checks.check_sinusoidal(lambda p, d: positions.sinusoidal(len(p), d, dtype=p.dtype))
    assert library.diagnosis == "used_library"


def test_sinusoidal_more_student_answers():
    def interleave(angle):  # (n, d/2) angles -> sin, cos, sin, cos, ...
        return torch.stack([angle.sin(), angle.cos()], dim=-1).flatten(-2)

    def stacked(p, d):  # another correct way: exp-log frequencies, sin/cos stacked pairwise
        freq = torch.exp(-math.log(10000.0) * torch.arange(0, d, 2, dtype=p.dtype) / d)
        return interleave(torch.outer(p, freq))

    def doubled(p, d):  # i from arange(0, d, 2), then 2 * i again
        i = torch.arange(0, d, 2, dtype=p.dtype)
        return interleave(p[:, None] / 10000 ** (2 * i / d))

    def in_place(p, d):
        p.unsqueeze_(1)
        return interleave(p / 10000 ** (torch.arange(0, d, 2, dtype=p.dtype) / d))

    def from_one(p, d):
        return stacked(p + 1, d)

    assert checks.check_sinusoidal(stacked).status == "pass"
    assert checks.check_sinusoidal(doubled).diagnosis == "exponent_doubled"
    assert checks.check_sinusoidal(in_place).diagnosis == "mutated_input"
    assert checks.check_sinusoidal(from_one).diagnosis == "shifted_positions"
    assert checks.check_sinusoidal(lambda p, d: stacked(p, d).T).diagnosis == "wrong_shape"
    assert checks.check_sinusoidal(lambda p, d: stacked(p, 8)).diagnosis == "wrong_shape"
    assert checks.check_sinusoidal(lambda p, d: None).diagnosis == "no_return"


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


def test_low_temperature_accepts_numpy_rows():
    assert checks.check_low_temperature(
        lambda: {k: np.array(v, dtype=float) for k, v in RIGHT.items()}).status == "pass"


@pytest.mark.parametrize("how", ["softmax", "exp", "tempered"])
def test_low_temperature_notices_a_computed_answer(how):
    ex = running_example()

    def computed():
        q, k = ex.x @ ex.w_q, ex.x @ ex.w_k
        s = q @ k.T / (2 * 0.01)
        if how == "softmax":
            a = torch.softmax(s, dim=-1)
        elif how == "exp":  # the stable softmax of the chapter, copied
            e = torch.exp(s - s.amax(dim=-1, keepdim=True))
            a = e / e.sum(dim=-1, keepdim=True)
        else:
            a = widgets.tempered_weights(q, k, 0.01)
        return {t: a[ex.index(t)].tolist() for t in ("He", "milk", "the")}

    result = checks.check_low_temperature(computed, verbose=False)
    assert result.diagnosis == "used_library", result.message
    assert "prediction, not a computation" in result.message


def test_low_temperature_truth():
    """What the prose and the solution say: one-hot on John, a tie, uniform."""
    weights = c._low_temperature_weights()
    ex = running_example()
    for query, row in RIGHT.items():
        assert torch.allclose(weights[ex.index(query)], torch.tensor(row, dtype=torch.float64),
                              atol=1e-6)
