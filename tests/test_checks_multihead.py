"""Chapter 3's checks: a correct answer passes, a stub is "not attempted", and every
typical bug, written the way a student would write it, gets its diagnosis."""

import math

import pytest
import torch

from utils.checks import multihead as ch
from utils.multihead import merge_heads, split_heads


def _stub(*args, **kwargs):
    raise NotImplementedError


# --- split_heads --------------------------------------------------------------------------

def split_ok(x, n_heads):
    b, n, d = x.shape
    return x.view(b, n, n_heads, d // n_heads).transpose(1, 2)


def split_view_only(x, n_heads):
    b, n, d = x.shape
    return x.view(b, n_heads, n, d // n_heads)


def split_interleaved(x, n_heads):
    b, n, d = x.shape
    return x.view(b, n, d // n_heads, n_heads).permute(0, 3, 1, 2)


def split_no_transpose(x, n_heads):
    b, n, d = x.shape
    return x.view(b, n, n_heads, d // n_heads)


def split_wrong_transpose(x, n_heads):
    b, n, d = x.shape
    return x.view(b, n, n_heads, d // n_heads).permute(0, 2, 3, 1)


def test_split_heads_passes_and_not_attempted(capsys):
    assert ch.check_split_heads(split_ok).status == "pass"
    assert ch.check_split_heads(split_heads).status == "pass"
    assert "✅" in capsys.readouterr().out
    r = ch.check_split_heads(_stub)
    assert r.status == "not attempted" and r.diagnosis is None


@pytest.mark.parametrize("fn, key", [
    (split_view_only, "view_without_transpose"),
    (split_interleaved, "heads_interleaved"),
    (split_no_transpose, "missing_transpose"),
    (split_wrong_transpose, "wrong_transpose"),
])
def test_split_heads_diagnoses(fn, key, capsys):
    r = ch.check_split_heads(fn)
    assert r.status == "fail" and r.diagnosis == key
    assert r.message in capsys.readouterr().out


def test_split_heads_unknown_bug_is_reported_by_shape():
    r = ch.check_split_heads(lambda x, n_heads: x[:, None])
    assert r.diagnosis == "wrong_shape" and "expected" in r.message


# --- merge_heads --------------------------------------------------------------------------

def merge_ok(x):
    b, h, n, dh = x.shape
    return x.transpose(1, 2).reshape(b, n, h * dh)


def merge_view_only(x):
    b, h, n, dh = x.shape
    return x.reshape(b, n, h * dh)


def merge_interleaved(x):
    b, h, n, dh = x.shape
    return x.permute(0, 2, 3, 1).reshape(b, n, h * dh)


def merge_no_reshape(x):
    return x.transpose(1, 2)


def merge_view_non_contiguous(x):
    b, h, n, dh = x.shape
    return x.transpose(1, 2).view(b, n, h * dh)


def test_merge_heads_passes():
    assert ch.check_merge_heads(merge_ok).status == "pass"
    assert ch.check_merge_heads(merge_heads).status == "pass"
    assert ch.check_merge_heads(_stub).status == "not attempted"


@pytest.mark.parametrize("fn, key", [
    (merge_view_only, "view_without_transpose"),
    (merge_interleaved, "heads_interleaved"),
    (merge_no_reshape, "missing_reshape"),
    (merge_view_non_contiguous, "view_not_contiguous"),
])
def test_merge_heads_diagnoses(fn, key):
    r = ch.check_merge_heads(fn)
    assert r.status == "fail" and r.diagnosis == key


def test_view_only_split_and_merge_round_trip_yet_are_wrong():
    """The reason the check looks inside: the buggy pair is a perfect round trip."""
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    assert torch.equal(merge_view_only(split_view_only(x, 3)), x)
    assert ch.check_split_heads(split_view_only).diagnosis == "view_without_transpose"


# --- the forward pass ---------------------------------------------------------------------

def mha(x, w_q, w_k, w_v, w_o, n_heads, *, scale="d_head", split=split_ok, merge=merge_ok,
        project=True, axis=-1, average=False, heads=None):
    n_heads = heads or n_heads
    q, k, v = split(x @ w_q, n_heads), split(x @ w_k, n_heads), split(x @ w_v, n_heads)
    d = {"d_head": q.shape[-1], "d_model": x.shape[-1], "none": 1}[scale]
    a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=axis)
    out = merge(a @ v)
    if project:
        out = out @ w_o
    if average:
        a = a.mean(1)
    if heads == 1:
        a = a[:, 0]
    return out, a


def test_multi_head_attention_passes():
    assert ch.check_multi_head_attention(mha).status == "pass"
    assert ch.check_multi_head_attention(ch.multi_head_attention).status == "pass"
    assert ch.check_multi_head_attention(_stub).status == "not attempted"


@pytest.mark.parametrize("kwargs, key", [
    ({"project": False}, "missing_output_projection"),
    ({"scale": "d_model"}, "sqrt_d_model"),
    ({"scale": "none"}, "missing_scale"),
    ({"split": split_view_only}, "view_without_transpose"),
    ({"merge": merge_view_only}, "heads_not_merged"),
    ({"axis": -2}, "wrong_axis"),
    ({"average": True}, "averaged_weights"),
    ({"heads": 1}, "single_head"),
])
def test_multi_head_attention_diagnoses(kwargs, key):
    r = ch.check_multi_head_attention(lambda *args: mha(*args, **kwargs))
    assert r.status == "fail" and r.diagnosis == key


def test_multi_head_attention_reference_matches_the_module():
    from utils.multihead import MultiHeadAttention

    torch.manual_seed(0)
    m = MultiHeadAttention(12, 3, bias=False, dtype=torch.float64)
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    ws = [layer.weight.T for layer in (m.w_q, m.w_k, m.w_v, m.w_o)]
    out, w = ch.multi_head_attention(x, *ws, 3)
    ref_out, ref_w = m(x, x, x)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(w, ref_w)


# --- counting parameters ------------------------------------------------------------------

def count_ok(d_model, n_heads, bias=True):
    d_head = d_model // n_heads
    per_head = 3 * (d_model * d_head + (d_head if bias else 0))
    return n_heads * per_head + d_model * d_model + (d_model if bias else 0)


@pytest.mark.parametrize("fn, key", [
    (lambda d, h, bias=True: 4 * d * d, "forgot_biases"),
    (lambda d, h, bias=True: 4 * d * d + 4 * d, "ignores_bias_flag"),
    (lambda d, h, bias=True: 3 * d * d + 3 * d * bias, "forgot_output_projection"),
    (lambda d, h, bias=True: 3 * h * ((d // h) ** 2 + (d // h) * bias) + d * d + d * bias,
     "block_diagonal"),
    (lambda d, h, bias=True: h * (3 * d * d + 3 * d * bias) + d * d + d * bias, "heads_full_size"),
])
def test_count_parameters_diagnoses(fn, key):
    r = ch.check_count_parameters(fn)
    assert r.status == "fail" and r.diagnosis == key


def test_count_parameters_passes_and_agrees_with_torch():
    assert ch.check_count_parameters(count_ok).status == "pass"
    assert ch.check_count_parameters(ch.count_parameters).status == "pass"
    assert ch.check_count_parameters(_stub).status == "not attempted"
    for bias in (True, False):
        m = torch.nn.MultiheadAttention(12, 3, bias=bias)
        assert ch.count_parameters(12, 3, bias) == sum(p.numel() for p in m.parameters())
    r = ch.check_count_parameters(lambda d, h, bias=True: 7)
    assert r.diagnosis == "values" and "expected 624" in r.message


# --- near misses --------------------------------------------------------------------------

def test_multi_head_near_misses_are_values():
    def scale_by_d_head(x, w_q, w_k, w_v, w_o, n_heads):  # d_head, not its square root
        q, k, v = (split_heads(x @ w, n_heads) for w in (w_q, w_k, w_v))
        weights = torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1], dim=-1)
        return merge_heads(weights @ v) @ w_o, weights

    assert ch.check_multi_head_attention(scale_by_d_head).diagnosis == "values"
    # three of the four biases
    r = ch.check_count_parameters(lambda d, h, bias=True: 4 * d * d + (3 * d if bias else 0))
    assert r.diagnosis == "values" and "returned 612, expected 624" in r.message


def test_count_parameters_as_float_or_tensor_is_named():
    r = ch.check_count_parameters(lambda d, h, bias=True: float(count_ok(d, h, bias)))
    assert r.diagnosis == "wrong_type" and "Python int" in r.message
    r = ch.check_count_parameters(lambda d, h, bias=True: torch.tensor(count_ok(d, h, bias)))
    assert r.diagnosis == "wrong_type" and "`int(...)`" in r.message
