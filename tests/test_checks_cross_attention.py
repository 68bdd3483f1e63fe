"""Chapter 2's checks accept correct answers and name every known bug."""

from __future__ import annotations

import math

import pytest
import torch

from utils import attention, masks
from utils.checks import cross_attention as ch

# ---------------------------------------------------------------- exercise 1

def _cross(x_dec, x_enc, w_q, w_k, w_v):
    q, k, v = x_dec @ w_q, x_enc @ w_k, x_enc @ w_v
    w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    return w @ v, w


def test_cross_attention_accepts_a_correct_answer_and_the_reference(capsys):
    assert ch.check_cross_attention(_cross)
    assert ch.check_cross_attention(attention.cross_attention)
    assert "✅" in capsys.readouterr().out


def test_cross_attention_not_attempted():
    def stub(*args):
        raise NotImplementedError

    result = ch.check_cross_attention(stub)
    assert result.status == "not attempted" and not result


@pytest.mark.parametrize("key", ["kv_from_decoder", "swapped_sources", "missing_scale",
                                 "sqrt_d_model", "wrong_axis"])
def test_cross_attention_diagnoses_each_bug(key):
    variants = {
        "kv_from_decoder": ch._cross_variant(kv_from="dec"),
        "swapped_sources": ch._cross_variant(q_from="enc", kv_from="dec"),
        "missing_scale": ch._cross_variant(scale_of=lambda q, x: 1.0),
        "sqrt_d_model": ch._cross_variant(scale_of=lambda q, x: 1 / math.sqrt(x.shape[-1])),
        "wrong_axis": ch._cross_variant(axis=-2),
    }
    result = ch.check_cross_attention(variants[key])
    assert result.status == "fail" and result.diagnosis == key


def test_cross_attention_diagnoses_hand_written_bugs():
    def kv_from_decoder(x_dec, x_enc, w_q, w_k, w_v):  # written the way a student would
        q, k, v = x_dec @ w_q, x_dec @ w_k, x_dec @ w_v
        w = (q @ k.mT / q.shape[-1] ** 0.5).softmax(-1)
        return w @ v, w

    def swapped_outputs(x_dec, x_enc, w_q, w_k, w_v):
        out, w = _cross(x_dec, x_enc, w_q, w_k, w_v)
        return w, out

    assert ch.check_cross_attention(kv_from_decoder).diagnosis == "kv_from_decoder"
    result = ch.check_cross_attention(swapped_outputs)
    assert result.diagnosis == "wrong_shape" and "expected (4, 2), got (4, 4)" in result.message


# ---------------------------------------------------------------- exercise 2

def _padded(q, k, v, lengths):
    """Correct, also for a source of length 0: a query with no key gets zero weights."""
    keep = torch.arange(k.shape[-2])[None, :] < lengths[:, None]
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    alive = keep.any(-1)[:, None, None]
    w = torch.softmax(s.masked_fill(~keep[:, None, :], float("-inf")).masked_fill(~alive, 0.0),
                      dim=-1) * alive
    return w @ v, w


def _padded_nan_when_empty(q, k, v, lengths):
    """Right for every non-empty source; NaN rows for a source of length 0 (torch.softmax)."""
    keep = torch.arange(k.shape[-2])[None, :] < lengths[:, None]
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    w = torch.softmax(s.masked_fill(~keep[:, None, :], float("-inf")), dim=-1)
    return w @ v, w


def test_padded_attention_accepts_correct_answers():
    assert ch.check_padded_attention(_padded)

    def with_utils(q, k, v, lengths):
        mask = masks.padding_mask(lengths, k.shape[-2])[:, None, :]
        return attention.scaled_dot_product_attention(q, k, v, mask=mask)

    def renormalised_after(q, k, v, lengths):  # zero after the softmax, then renormalise: fine
        keep = (torch.arange(k.shape[-2])[None, :] < lengths[:, None])[:, None, :]
        w = torch.softmax(q @ k.mT / math.sqrt(q.shape[-1]), dim=-1) * keep
        w = w / w.sum(dim=-1, keepdim=True).clamp_min(1e-300)  # an empty source: 0 / tiny = 0
        return w @ v, w

    assert ch.check_padded_attention(with_utils)
    assert ch.check_padded_attention(renormalised_after)


@pytest.mark.parametrize("key, fn", [
    ("empty_source_nan", _padded_nan_when_empty),
    ("empty_source_uniform", lambda q, k, v, lengths: _padded_variant_fill(q, k, v, lengths, -1e9)),
    ("empty_source_uniform", lambda q, k, v, lengths: _padded_variant_fill(
        q, k, v, lengths, torch.finfo(q.dtype).min)),
])
def test_a_source_of_length_0_must_get_zero_weights(key, fn):
    """Today's answers that give NaN or uniform weights to an empty source fail, by name."""
    result = ch.check_padded_attention(fn)
    assert result.status == "fail" and result.diagnosis == key, result.message
    assert "length 0" in result.message


def _padded_variant_fill(q, k, v, lengths, fill):
    keep = torch.arange(k.shape[-2])[None, :] < lengths[:, None]
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    w = torch.softmax(s.masked_fill(~keep[:, None, :], fill), dim=-1)
    return w @ v, w


@pytest.mark.parametrize("key, variant", [
    ("no_mask", dict(where="none")),
    ("inverted_mask", dict(keep_of=lambda pos, n: pos >= n)),
    ("inverted_mask_nan", dict(keep_of=lambda pos, n: pos >= n, empty="nan")),
    ("off_by_one", dict(keep_of=lambda pos, n: pos <= n)),
    ("off_by_one_short", dict(keep_of=lambda pos, n: pos < n - 1)),
    ("off_by_one_short", dict(keep_of=lambda pos, n: pos < n - 1, empty="nan")),
    ("off_by_one_short", dict(keep_of=lambda pos, n: pos < n - 1, empty="uniform")),
    ("missing_scale", dict(scaled=False, empty="nan")),
    ("empty_source_nan", dict(empty="nan")),
    ("empty_source_uniform", dict(empty="uniform")),
    ("after_softmax", dict(where="after")),
    ("zero_not_inf", dict(fill=0.0)),
    ("missing_scale", dict(scaled=False)),
])
def test_padded_attention_diagnoses_each_bug(key, variant):
    result = ch.check_padded_attention(ch._padded_variant(**variant))
    assert result.status == "fail" and result.diagnosis == key, result.message


def test_padded_attention_diagnoses_hand_written_inverted_masks():
    # True = pad passed to utils' softmax (which zeroes fully masked rows instead of NaN)
    def inverted(q, k, v, lengths):
        pad = ~masks.padding_mask(lengths, k.shape[-2])
        return attention.scaled_dot_product_attention(q, k, v, mask=pad[:, None, :])

    assert ch.check_padded_attention(inverted).diagnosis == "inverted_mask"

    def inverted_torch(q, k, v, lengths):  # True = pad, with torch's softmax: NaN rows
        pad = torch.arange(k.shape[-2])[None, :] >= lengths[:, None]
        s = (q @ k.mT / math.sqrt(q.shape[-1])).masked_fill(~pad[:, None, :], float("-inf"))
        w = s.softmax(-1)
        return w @ v, w

    result = ch.check_padded_attention(inverted_torch)
    assert result.diagnosis == "inverted_mask_nan" and "NaN" in result.message


# ---------------------------------------------------------------- exercise 3

def test_alignment_accepts_correct_answers():
    assert ch.check_alignment(lambda w: w.argmax(dim=-1))
    assert ch.check_alignment(lambda w: w.max(dim=-1).indices)


@pytest.mark.parametrize("key, fn", [
    ("wrong_axis", lambda w: w.argmax(dim=-2)),
    ("wrong_axis_dim0", lambda w: w.argmax(dim=0)),
    ("argmin", lambda w: w.argmin(dim=-1)),
    ("returned_values", lambda w: w.max(dim=-1).values),
    ("wrong_shape", lambda w: w.argmax()),
    ("wrong_shape", lambda w: w.argmax(dim=-1, keepdim=True)),
])
def test_alignment_diagnoses_each_bug(key, fn):
    result = ch.check_alignment(fn)
    assert result.status == "fail" and result.diagnosis == key


# ---------------------------------------------------------------- near misses


def test_cross_attention_near_misses_are_values():
    # scaled by √d_v instead of √d_k: no known bug
    def sqrt_dv(x_dec, x_enc, w_q, w_k, w_v):
        q, k, v = x_dec @ w_q, x_enc @ w_k, x_enc @ w_v
        w = torch.softmax(q @ k.mT / math.sqrt(v.shape[-1]), dim=-1)
        return w @ v, w

    assert ch.check_cross_attention(sqrt_dv).diagnosis == "values"


def test_padded_attention_near_misses_are_values():
    # two padded keys let through (not the known `<=` off-by-one)
    result = ch.check_padded_attention(ch._padded_variant(keep_of=lambda pos, n: pos < n + 2))
    assert result.diagnosis == "values" and "first at index" in result.message


def test_padded_attention_in_place_scale_is_named():
    def in_place(q, k, v, lengths):
        q /= math.sqrt(q.shape[-1])  # scales the caller's q
        keep = (torch.arange(k.shape[-2])[None, :] < lengths[:, None])[:, None, :]
        return attention.scaled_dot_product_attention(q, k, v, mask=keep, scale=1.0)

    result = ch.check_padded_attention(in_place)
    assert result.diagnosis == "mutated_input" and "`q`" in result.message


def test_alignment_as_int32_or_list_fails():
    assert ch.check_alignment(lambda w: w.argmax(-1).int()).diagnosis == "wrong_dtype"
    assert ch.check_alignment(lambda w: w.argmax(-1).tolist()).diagnosis == "wrong_type"
