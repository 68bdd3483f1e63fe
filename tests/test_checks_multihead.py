"""Chapter 3's checks: correct answers pass, a stub is "not attempted", every typical bug,
written the way a student would write it, gets its diagnosis, library calls are noticed and
near misses are only "values"."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from utils import checks
from utils.checks import multihead as ch
from utils.examples.heads import heads_example
from utils.multihead import merge_heads, split_heads
from utils.training import heads as heads_task


def _stub(*args, **kwargs):
    raise NotImplementedError


# ------------------------------------------------------------------ 1. design: next-token head

def _head(scale=6.0, steps=1, extra=None):
    """W_Q, W_K of one head: keys are the position code, the query is the code of i + steps."""
    ex = heads_example()
    rows = ch._position_rows()
    w_q = torch.zeros(12, 4, dtype=torch.float64)
    w_k = torch.zeros(12, 4, dtype=torch.float64)
    w_k[rows] = torch.eye(4, dtype=torch.float64)
    w_q[rows] = scale * ch._rotation(steps)
    if extra is not None:
        extra(ex, w_q, w_k)
    return w_q, w_k


def next_from_the_designed_head():
    """A student's answer: the designed previous-token head's block, transposed."""
    ex = heads_example()
    rows = ch._position_rows()
    w_q = torch.zeros(12, 4, dtype=torch.float64)
    w_k = torch.zeros(12, 4, dtype=torch.float64)
    w_q[rows] = ex.w_q[rows, 0:4].T  # 6 x (rotation one step back), transposed: one forward
    w_k[rows] = ex.w_k[rows, 0:4]
    return w_q, w_k


def _first_reads_five(ex, w_q, w_k):
    """The first word's query moved (through its "first" flag) to the code of position 5."""
    from utils.examples.heads import position_code

    code = position_code(6)
    w_q[ex.dims.index("first"), :] = 6.0 * (code[5] - code[1])


def test_next_token_head_passes(capsys):
    for fn in (ch._next_token_solution, next_from_the_designed_head, lambda: _head(scale=10.0),
               lambda: list(_head())):
        result = checks.check_next_token_head(fn)
        assert result.status == "pass", result.message
    assert "✅ next-token head" in capsys.readouterr().out
    assert checks.check_next_token_head(_stub).status == "not attempted"


@pytest.mark.parametrize(("fn", "diagnosis"), [
    (lambda: (heads_example().w_q[:, 0:4].clone(), heads_example().w_k[:, 0:4].clone()),
     "looks_back"),  # the designed previous-token head, copied
    (lambda: _head(steps=-1), "looks_back"),
    (lambda: _head(steps=0), "looks_at_itself"),
    (lambda: _head(scale=2.0), "too_flat"),
    (lambda: _head(steps=2), "wrong_place"),
    (lambda: (torch.zeros(12, 4, dtype=torch.float64),) * 2, "uniform"),
    (lambda: _head(scale=-6.0, steps=-1), "too_flat"),  # minus the designed query
    (lambda: _head(extra=_first_reads_five), "partly"),
    (lambda: _head()[0], "wrong_output"),
    (lambda: (*_head(), torch.zeros(4)), "wrong_output"),
    (lambda: (_head()[0][:, :2], _head()[1][:, :2]), "wrong_shape"),
    (lambda: tuple(w.float() for w in _head()), "wrong_dtype"),
    (lambda: None, "no_return"),
])
def test_next_token_head_diagnoses(fn, diagnosis):
    result = checks.check_next_token_head(fn)
    assert result.status == "fail" and result.diagnosis == diagnosis, result.message


def test_next_token_head_that_reads_words_is_named(monkeypatch):
    """A head right on the sentence but not on its words shuffled (positions kept). Every
    position term also shifts every score, so such a head is hard to write by hand: the
    weights are faked here."""
    ex = heads_example()
    perfect = torch.eye(10, dtype=torch.float64).roll(1, dims=1)  # row i -> i + 1
    monkeypatch.setattr(ch, "_head_weights", lambda x, w_q, w_k: perfect if torch.equal(x, ex.x)
                        else torch.eye(10, dtype=torch.float64))
    result = checks.check_next_token_head(ch._next_token_solution)
    assert result.diagnosis == "reads_words" and "reverse order" in result.message


def test_next_token_head_designed_prev_block_passes_on_sentence_only_when_rotated():
    w_q, w_k = next_from_the_designed_head()
    a = ch._head_weights(heads_example().x, w_q, w_k)
    assert a[:-1].argmax(-1).tolist() == list(range(1, 10))


# ------------------------------------------------------------------ 2. debug: split and merge

def buggy_split_heads(x, n_heads):  # the notebook's
    b, n, d = x.shape
    return x.view(b, n, d // n_heads, n_heads).permute(0, 3, 1, 2)


def buggy_merge_heads(x):  # the notebook's
    b, h, n, d_head = x.shape
    return x.permute(0, 2, 3, 1).reshape(b, n, h * d_head)


def split_ok(x, n_heads):
    b, n, d = x.shape
    return x.view(b, n, n_heads, d // n_heads).transpose(1, 2)


def merge_ok(x):
    b, h, n, dh = x.shape
    return x.transpose(1, 2).reshape(b, n, h * dh)


def test_the_buggy_pair_round_trips_yet_is_named():
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    assert torch.equal(buggy_merge_heads(buggy_split_heads(x, 3)), x)
    assert buggy_split_heads(x, 3).shape == split_heads(x, 3).shape
    assert checks.check_split_heads(buggy_split_heads).diagnosis == "heads_interleaved"
    assert checks.check_merge_heads(buggy_merge_heads).diagnosis == "heads_interleaved"


def test_split_and_merge_pass_and_not_attempted(capsys):
    assert checks.check_split_heads(split_ok).status == "pass"
    assert checks.check_merge_heads(merge_ok).status == "pass"
    assert "✅" in capsys.readouterr().out
    assert checks.check_split_heads(_stub).status == "not attempted"
    assert checks.check_merge_heads(_stub).status == "not attempted"


def test_the_library_functions_are_noticed():
    for check, fn in ((checks.check_split_heads, split_heads),
                      (checks.check_split_heads, lambda x, h: split_heads(x, h).clone()),
                      (checks.check_merge_heads, merge_heads),
                      (checks.check_merge_heads, lambda x: merge_heads(x) * 1)):
        result = check(fn)
        assert result.diagnosis == "used_library", result.message
        assert "utils.multihead" in result.message


def split_view_only(x, n_heads):
    b, n, d = x.shape
    return x.view(b, n_heads, n, d // n_heads)


def split_no_transpose(x, n_heads):
    b, n, d = x.shape
    return x.view(b, n, n_heads, d // n_heads)


def split_wrong_transpose(x, n_heads):
    b, n, d = x.shape
    return x.view(b, n, n_heads, d // n_heads).permute(0, 2, 3, 1)


@pytest.mark.parametrize(("fn", "key"), [
    (buggy_split_heads, "heads_interleaved"),
    (split_view_only, "view_without_transpose"),
    (split_no_transpose, "missing_transpose"),
    (split_wrong_transpose, "wrong_transpose"),
])
def test_split_heads_diagnoses(fn, key):
    r = checks.check_split_heads(fn)
    assert r.status == "fail" and r.diagnosis == key, r.message


def merge_view_only(x):
    b, h, n, dh = x.shape
    return x.reshape(b, n, h * dh)


def merge_view_non_contiguous(x):
    b, h, n, dh = x.shape
    return x.transpose(1, 2).view(b, n, h * dh)


@pytest.mark.parametrize(("fn", "key"), [
    (buggy_merge_heads, "heads_interleaved"),
    (merge_view_only, "view_without_transpose"),
    (lambda x: x.transpose(1, 2), "missing_reshape"),
    (merge_view_non_contiguous, "view_not_contiguous"),
])
def test_merge_heads_diagnoses(fn, key):
    r = checks.check_merge_heads(fn)
    assert r.status == "fail" and r.diagnosis == key, r.message


def test_split_near_miss_is_values():
    def split_last_head_off(x, n_heads):  # head order reversed
        return split_ok(x, n_heads).flip(1)

    assert checks.check_split_heads(split_last_head_off).diagnosis == "values"


# ------------------------------------------------------------------ 3. predict, then run

RIGHT = {"previous-word head zeroed": {"previous": "chance", "first": "right"},
         "first-word head zeroed": {"previous": "right", "first": "chance"}}


def test_zeroed_heads_right_prediction_passes_with_any_model():
    assert checks.check_zeroed_heads(lambda: RIGHT).status == "pass"
    model = heads_task.fit(2, seed=3).model
    assert checks.check_zeroed_heads(lambda: RIGHT, model=model).status == "pass"
    assert checks.check_zeroed_heads(_stub).status == "not attempted"


@pytest.mark.parametrize(("prediction", "diagnosis", "text"), [
    ({"previous-word head zeroed": {"previous": "right", "first": "chance"},
      "first-word head zeroed": {"previous": "chance", "first": "right"}},
     "wrong_prediction", "the previous half: you predicted 'right', it runs 'chance'"),
    ({"previous-word head zeroed": {"previous": "chance", "first": "chance"},
      "first-word head zeroed": {"previous": "chance", "first": "chance"}},
     "wrong_prediction", "it runs 'right'"),
    ({"previous-word head zeroed": {"previous": "chance", "first": "right"}},
     "wrong_type", "keys"),
    ({"previous-word head zeroed": {"previous": "drops", "first": "right"},
      "first-word head zeroed": {"previous": "right", "first": "chance"}},
     "wrong_type", "\"right\" or \"chance\""),
    ("chance", "wrong_type", "keys"),
    (None, "no_return", "`return`"),
])
def test_zeroed_heads_diagnoses(prediction, diagnosis, text):
    result = checks.check_zeroed_heads(lambda: prediction)
    assert result.diagnosis == diagnosis and text in result.message, result.message


def test_zeroed_heads_refuses_to_run_the_experiment():
    def measured():
        heads_task.accuracy(ch._default_model(), ablate=0)
        return RIGHT

    assert checks.check_zeroed_heads(measured).diagnosis == "used_library"


# ------------------------------------------------------------------ 4. extend: grouped-query

def gqa_ok(x, w_q, w_k, w_v, w_o, n_heads, n_groups):  # with the library's split/merge
    q = split_heads(x @ w_q, n_heads)
    k, v = split_heads(x @ w_k, n_groups), split_heads(x @ w_v, n_groups)
    r = n_heads // n_groups
    k, v = k.repeat_interleave(r, dim=1), v.repeat_interleave(r, dim=1)
    a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return merge_heads(a @ v) @ w_o, a


def gqa_with_torch(x, w_q, w_k, w_v, w_o, n_heads, n_groups):  # torch's SDPA for the output
    q = split_heads(x @ w_q, n_heads)
    k, v = split_heads(x @ w_k, n_groups), split_heads(x @ w_v, n_groups)
    out = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    k_all = k.repeat_interleave(n_heads // n_groups, dim=1)
    a = torch.softmax(q @ k_all.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return merge_heads(out) @ w_o, a


def test_gqa_passes():
    for fn in (gqa_ok, gqa_with_torch, ch._gqa_solution):
        assert checks.check_grouped_query_attention(fn).status == "pass"
    assert checks.check_grouped_query_attention(_stub).status == "not attempted"
    assert checks.check_grouped_query_attention(ch._gqa_reference).diagnosis == "used_library"


def _gqa_bug(**kwargs):
    return ch._gqa_variant(**kwargs)


def gqa_tiled(x, w_q, w_k, w_v, w_o, n_heads, n_groups):  # as a student would write it
    q = split_heads(x @ w_q, n_heads)
    k, v = split_heads(x @ w_k, n_groups), split_heads(x @ w_v, n_groups)
    r = n_heads // n_groups
    k, v = k.repeat(1, r, 1, 1), v.repeat(1, r, 1, 1)
    a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return merge_heads(a @ v) @ w_o, a


@pytest.mark.parametrize(("fn", "key"), [
    (gqa_tiled, "groups_tiled"),
    (_gqa_bug(scale="d_model"), "sqrt_d_model"),
    (_gqa_bug(scale="none"), "missing_scale"),
    (_gqa_bug(project=False), "missing_output_projection"),
    (_gqa_bug(axis=-2), "wrong_axis"),
    (_gqa_bug(split_q=split_view_only), "view_without_transpose"),
    (_gqa_bug(average=True), "averaged_weights"),
])
def test_gqa_diagnoses(fn, key):
    r = checks.check_grouped_query_attention(fn)
    assert r.status == "fail" and r.diagnosis == key, r.message


def gqa_kv_split_into_h(x, w_q, w_k, w_v, w_o, n_heads, n_groups):
    q, k, v = (split_heads(x @ w, n_heads) for w in (w_q, w_k, w_v))
    a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return merge_heads(a @ v) @ w_o, a


def gqa_kv_viewed_as_h(x, w_q, w_k, w_v, w_o, n_heads, n_groups):
    b, n, d = x.shape
    q, k, v = ((x @ w).view(b, n, n_heads, d // n_heads).transpose(1, 2) for w in (w_q, w_k, w_v))
    a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return (a @ v).transpose(1, 2).reshape(b, n, d) @ w_o, a


@pytest.mark.parametrize(("fn", "key"), [(gqa_kv_split_into_h, "kv_split_into_h"),
                                         (gqa_kv_viewed_as_h, "kv_viewed_as_h")])
def test_gqa_keys_split_into_query_heads_is_named(fn, key):
    r = checks.check_grouped_query_attention(fn)
    assert r.diagnosis == key and "n_groups heads" in r.message, r.message


def test_gqa_near_miss_is_values():
    def reversed_groups(x, w_q, w_k, w_v, w_o, n_heads, n_groups):  # groups in reverse order
        q = split_heads(x @ w_q, n_heads)
        k = split_heads(x @ w_k, n_groups).flip(1)
        v = split_heads(x @ w_v, n_groups).flip(1)
        r = n_heads // n_groups
        k, v = k.repeat_interleave(r, dim=1), v.repeat_interleave(r, dim=1)
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        return merge_heads(a @ v) @ w_o, a

    assert checks.check_grouped_query_attention(reversed_groups).diagnosis == "values"


def test_gqa_reference_is_torch_and_reduces_to_multi_head():
    """With G = H it is multi-head attention (the course's module); with G < H it equals
    torch's SDPA on keys and values repeated in place."""
    from utils.multihead import MultiHeadAttention

    torch.manual_seed(0)
    m = MultiHeadAttention(12, 3, bias=False, dtype=torch.float64)
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    ws = [layer.weight.T for layer in (m.w_q, m.w_k, m.w_v, m.w_o)]
    out, w = ch._gqa_reference(x, *ws, 3, 3)
    ref_out, ref_w = m(x, x, x)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(w, ref_w)
    case = ch._gqa_case(2, 5, 12, 6, 2, 0)
    out, w = ch._gqa_reference(*case.args)
    out2, w2 = gqa_ok(*case.args)
    torch.testing.assert_close(out, out2)
    torch.testing.assert_close(w, w2)
