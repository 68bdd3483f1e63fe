"""Chapter 2's checks accept correct answers and name every known bug."""

from __future__ import annotations

import math

import pytest
import torch

from utils import attention, masks
from utils.checks import cross_attention as ch
from utils.examples.translation import translation_batch, translation_example

# ---------------------------------------------------------------- exercise 1: implement

def _cross(x_dec, x_enc, w_q, w_k, w_v):
    q, k, v = x_dec @ w_q, x_enc @ w_k, x_enc @ w_v
    w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    return w @ v, w


def test_cross_attention_accepts_a_correct_answer(capsys):
    assert ch.check_cross_attention(_cross)
    assert "✅" in capsys.readouterr().out


def test_cross_attention_not_attempted():
    def stub(*args):
        raise NotImplementedError

    result = ch.check_cross_attention(stub)
    assert result.status == "not attempted" and not result


def test_cross_attention_notices_the_library():
    for answer in (attention.cross_attention,
                   lambda xd, xe, wq, wk, wv: attention.scaled_dot_product_attention(
                       xd @ wq, xe @ wk, xe @ wv)):
        result = ch.check_cross_attention(answer)
        assert result.diagnosis == "used_library" and "write this yourself" in result.message


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

    def near_miss(x_dec, x_enc, w_q, w_k, w_v):  # a scale no known bug has
        q, k, v = x_dec @ w_q, x_enc @ w_k, x_enc @ w_v
        w = torch.softmax(q @ k.mT / q.shape[-1], dim=-1)
        return w @ v, w

    assert ch.check_cross_attention(kv_from_decoder).diagnosis == "kv_from_decoder"
    result = ch.check_cross_attention(swapped_outputs)
    assert result.diagnosis == "wrong_shape" and "expected (4, 2), got (4, 4)" in result.message
    assert ch.check_cross_attention(near_miss).diagnosis == "values"


# ---------------------------------------------------------------- exercise 2: design W_Q

def _design(rows: dict | None = None, scale: float = 12.0):
    """The reference design with some rows replaced: {French word: 14 numbers}."""
    ex = translation_example()
    w_q = scale * ex.x_enc[ex.gold]
    for word, row in (rows or {}).items():
        w_q[ch.FRENCH.index(word)] = torch.as_tensor(row, dtype=torch.float64)
    return w_q


def test_design_accepts_other_correct_designs():
    ex = translation_example()
    assert ch.check_design_w_q(lambda: _design())

    def concepts_only():  # each French word asks for its translation's concepts, strongly
        w_q = torch.zeros(9, 14, dtype=torch.float64)
        for i, g in enumerate(ex.gold):
            w_q[i, :9] = 20.0 * ex.x_enc[g, :9]
        return w_q

    assert ch.check_design_w_q(concepts_only)
    assert ch.FRENCH == ex.target_tokens and ch.french_one_hot().shape == (9, 9)


def test_design_diagnoses():
    ex = translation_example()
    assert ch.check_design_w_q(lambda: _design().T.contiguous()).diagnosis == "transposed"
    assert ch.check_design_w_q(lambda: _design()[:, :9]).diagnosis == "wrong_shape"
    weak = ch.check_design_w_q(lambda: _design(scale=4.0))
    assert weak.diagnosis == "too_weak" and "scale W_Q up" in weak.message
    zero = ch.check_design_w_q(lambda: _design({"sur": torch.zeros(14)}))
    assert zero.diagnosis == "uniform_row" and "“sur”" in zero.message
    classes_only = _design()
    classes_only[:, :9] = 0  # asks only for the word class: "le" ties "the" and "a"
    tie = ch.check_design_w_q(lambda: classes_only)
    assert tie.diagnosis == "tie" and "“the” and “a”" in tie.message
    swapped = _design({"chat": _design()[2], "noir": _design()[1]})  # the positions, not meanings
    wrong = ch.check_design_w_q(lambda: swapped)
    assert wrong.diagnosis == "wrong_word" and "“chat” reads “black”" in wrong.message
    assert ch.check_design_w_q(lambda: _design().float()).diagnosis == "wrong_dtype"
    assert ch.check_design_w_q(lambda: ex.w_q).diagnosis == "wrong_shape"


# ---------------------------------------------------------------- exercise 3: debug

def _buggy(x_dec, x_enc, lengths, w_q, w_k, w_v):
    """The notebook's buggy function, as given."""
    q, k, v = x_dec @ w_q, x_enc @ w_k, x_enc @ w_v
    scores = q @ k.transpose(-2, -1) / math.sqrt(k.shape[-1])
    real = torch.arange(x_enc.shape[1]) < lengths[:, None]
    scores = scores.masked_fill(~real, float("-inf"))
    weights = torch.softmax(scores, dim=1)
    return weights @ v, weights


def _fixed(mask_fix: bool, softmax_fix: bool, unsqueeze: bool = False):
    def fn(x_dec, x_enc, lengths, w_q, w_k, w_v):
        q, k, v = x_dec @ w_q, x_enc @ w_k, x_enc @ w_v
        scores = q @ k.transpose(-2, -1) / math.sqrt(k.shape[-1])
        real = torch.arange(x_enc.shape[1]) < lengths[:, None]
        hide = (~real.unsqueeze(1) if unsqueeze else ~real[:, None, :]) if mask_fix else ~real
        weights = torch.softmax(scores.masked_fill(hide, float("-inf")),
                                dim=-1 if softmax_fix else 1)
        return weights @ v, weights

    return fn


def test_padded_accepts_fixes_and_notices_the_library():
    assert ch.check_padded_cross_attention(_fixed(True, True))
    assert ch.check_padded_cross_attention(_fixed(True, True, unsqueeze=True))

    def with_utils(x_dec, x_enc, lengths, w_q, w_k, w_v):
        real = masks.padding_mask(lengths, x_enc.shape[1])
        return attention.cross_attention(x_dec, x_enc, w_q, w_k, w_v, key_padding_mask=real)

    assert ch.check_padded_cross_attention(with_utils).diagnosis == "used_library"


@pytest.mark.parametrize("fn, key", [
    (_buggy, "both_bugs"),
    (_fixed(True, False), "softmax_over_queries"),
    (_fixed(False, True), "mask_as_is"),
    (ch._padded_variant(mask="rows"), "mask_over_rows"),
    (ch._padded_variant(mask="inverted"), "inverted_mask"),
    (ch._padded_variant(mask="none"), "no_mask"),
    (ch._padded_variant(where="after"), "after_softmax"),
    (ch._padded_variant(fill=0.0), "zero_not_inf"),
])
def test_padded_diagnoses_each_bug(fn, key):
    result = ch.check_padded_cross_attention(fn)
    assert result.status == "fail" and result.diagnosis == key, result.message


def test_the_buggy_function_runs_silently_on_the_notebooks_batch():
    batch = translation_batch()
    x_dec = batch.x_dec[:, :3]  # B = N = 3: it runs
    _, w = _buggy(x_dec, batch.x_enc, batch.source_lengths, batch.w_q, batch.w_k, batch.w_v)
    real = masks.padding_mask(batch.source_lengths, batch.x_enc.shape[1])
    assert w.shape == (3, 3, 8) and (w[~real[:, None, :].expand_as(w)] > 0).any()
    assert not torch.allclose(w.sum(-1), torch.ones(3, 3, dtype=w.dtype))
    with pytest.raises(RuntimeError):  # a batch with B != N
        _buggy(batch.x_dec, batch.x_enc, batch.source_lengths, batch.w_q, batch.w_k, batch.w_v)


# ---------------------------------------------------------------- exercise 4: predict, then run

def test_the_registered_prediction_is_what_runs():
    assert ch._predicted_rows() == {w: ch._outcome(w, s)[:2] for w, s in ch.PREDICT_ROWS.items()}
    assert ch.check_rows_without_translation(ch._predicted_rows)
    as_lists = {w: list(v) for w, v in ch._predicted_rows().items()}
    assert ch.check_rows_without_translation(lambda: as_lists)


@pytest.mark.parametrize("answer, key, text", [
    ({"noir": ("red", True), "sur": ("tie", False), "s'est": ("sat", True)},
     "wrong_prediction", "“noir” over “the red cat sat” reads “red” (0.38)"),
    ({"noir": ("red", False), "sur": ("the", False), "s'est": ("sat", True)},
     "wrong_prediction", "4-way tie (0.25 each)"),
    ({"noir": ("black", True), "sur": ("tie", False), "s'est": ("sat", True)},
     "wrong_type", "predict one of"),
    ({"noir": ("red", False), "sur": ("tie", False)}, "wrong_output", "missing"),
    ({"noir": "red", "sur": ("tie", False), "s'est": ("sat", True)}, "wrong_type", "a pair"),
    ([("red", False)], "wrong_type", "return a dict"),
])
def test_predictions_are_compared_with_what_runs(answer, key, text):
    result = ch.check_rows_without_translation(lambda: answer)
    assert result.diagnosis == key and text in result.message, result.message


def test_a_prediction_that_computes_is_noticed():
    ex = translation_example()

    def computes():
        attention.cross_attention(ex.x_dec, ex.x_enc, ex.w_q, ex.w_k, ex.w_v)
        return ch._predicted_rows()

    def softmaxes():
        torch.softmax(torch.zeros(3), dim=-1)
        return ch._predicted_rows()

    assert ch.check_rows_without_translation(computes).diagnosis == "used_library"
    assert ch.check_rows_without_translation(softmaxes).diagnosis == "used_library"


# ---------------------------------------------------------------- exercise 5: dropout

def _weights(q, k):
    return torch.softmax(q @ k.mT / math.sqrt(q.shape[-1]), -1)


def _drop(keep_if=lambda u, p: u >= p, scale=lambda p: 1 / (1 - p), in_eval=False,
          renormalise=False, on_scores=False, output_before=False, draw="generator"):
    """Dropout on the weights written the ways students write it."""

    def fn(q, k, v, p, training, generator):
        s = q @ k.mT / math.sqrt(q.shape[-1])
        w = torch.softmax(s, -1)
        out = w @ v
        if training or in_eval:
            if draw == "generator":
                u = torch.rand(w.shape, generator=generator, dtype=w.dtype)
            else:
                u = torch.rand(w.shape, dtype=w.dtype)
            keep = keep_if(u, p)
            if on_scores:
                w = torch.softmax(s * keep * scale(p), -1)
            else:
                w = w * keep * scale(p)
            if renormalise:
                w = w / w.sum(-1, keepdim=True)
        return (out if output_before else w @ v), w

    return fn


def test_dropout_accepts_correct_answers():
    assert ch.check_attention_dropout(_drop())

    def bernoulli(q, k, v, p, training, generator):
        w = _weights(q, k)
        if training:
            w = w * torch.bernoulli(torch.full_like(w, 1 - p), generator=generator) / (1 - p)
        return w @ v, w

    assert ch.check_attention_dropout(bernoulli)


@pytest.mark.parametrize("fn, key", [
    (_drop(draw="global"), "ignores_generator"),
    (_drop(scale=lambda p: 1.0), "not_scaled"),
    (_drop(scale=lambda p: 1 - p), "scaled_wrong_way"),
    (_drop(keep_if=lambda u, p: u < p), "inverted_keep"),
    (_drop(in_eval=True), "dropout_in_eval"),
    (_drop(renormalise=True), "renormalised"),
    (_drop(on_scores=True), "before_softmax"),
    (_drop(output_before=True), "values"),
    (_drop(keep_if=lambda u, p: u >= 2 * p), "rate"),
])
def test_dropout_diagnoses_each_bug(fn, key):
    result = ch.check_attention_dropout(fn)
    assert result.status == "fail" and result.diagnosis == key, result.message


def test_dropout_with_torch_dropout_is_told_about_the_generator():
    def torch_dropout(q, k, v, p, training, generator):
        w = torch.nn.functional.dropout(_weights(q, k), p, training)
        return w @ v, w

    result = ch.check_attention_dropout(torch_dropout)
    assert result.diagnosis == "ignores_generator" and "global generator" in result.message


# ---------------------------------------------------------------- near misses, in place


def test_padded_near_miss_is_values_and_in_place_is_named():
    def one_more_key(x_dec, x_enc, lengths, w_q, w_k, w_v):  # `<=`: no known bug
        q, k, v = x_dec @ w_q, x_enc @ w_k, x_enc @ w_v
        scores = q @ k.mT / math.sqrt(k.shape[-1])
        real = torch.arange(x_enc.shape[1]) <= lengths[:, None]
        w = torch.softmax(scores.masked_fill(~real[:, None, :], float("-inf")), dim=-1)
        return w @ v, w

    result = ch.check_padded_cross_attention(one_more_key)
    assert result.diagnosis == "values" and "first at index" in result.message

    def in_place(x_dec, x_enc, lengths, w_q, w_k, w_v):
        x_dec /= 2.0  # changes the caller's tensor
        return _fixed(True, True)(2.0 * x_dec, x_enc, lengths, w_q, w_k, w_v)

    result = ch.check_padded_cross_attention(in_place)
    assert result.diagnosis == "mutated_input" and "`x_dec`" in result.message


def test_design_and_dropout_wrong_types_are_named():
    assert ch.check_design_w_q(lambda: _design().tolist()).diagnosis == "wrong_type"
    result = ch.check_attention_dropout(lambda q, k, v, p, training, generator: _drop()(
        q, k, v, p, training, generator)[1])
    assert result.diagnosis == "wrong_output"
