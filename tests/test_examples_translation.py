"""Chapter 2's translation example: its alignment means what the chapter says it means."""

from __future__ import annotations

import pytest
import torch

from utils import attention
from utils.examples.translation import (
    PAD,
    PAIRS,
    embed,
    translation_batch,
    translation_example,
)


@pytest.mark.parametrize("pair", range(len(PAIRS)))
def test_strongest_source_token_is_the_translation(pair):
    ex = translation_example(pair)
    _, w = attention.cross_attention(ex.x_dec, ex.x_enc, ex.w_q, ex.w_k, ex.w_v)
    assert w.shape == (len(ex.target_tokens), len(ex.source_tokens))
    assert w.argmax(dim=-1).tolist() == ex.gold
    assert (w.max(dim=-1).values > 0.8).all()  # clearly peaked at T = 1


def test_main_pair_reorders_adjectives_and_splits_sat():
    ex = translation_example()
    align = ex.gold
    pairs = {(ex.target_tokens[i], ex.target_tokens[j])
             for i in range(len(align)) for j in range(i + 1, len(align)) if align[i] > align[j]}
    assert pairs == {("chat", "noir"), ("tapis", "rouge")}
    sat = ex.source_index("sat")
    assert [ex.target_tokens[i] for i, j in enumerate(align) if j == sat] == ["s'est", "assis"]


def test_shapes_and_the_values_keep_the_concepts():
    ex = translation_example()
    assert ex.x_enc.shape == (8, 14) and ex.x_dec.shape == (9, 14)
    assert ex.w_q.shape == ex.w_k.shape == (14, 14) and ex.w_v.shape == (14, 9)
    out, _ = attention.cross_attention(ex.x_dec, ex.x_enc, ex.w_q, ex.w_k, ex.w_v)
    noir = ex.target_index("noir")
    assert ex.value_features[int(out[noir].argmax())] == "black"


def test_batch_pads_with_zero_embeddings_and_masks_them():
    batch = translation_batch()
    assert batch.x_enc.shape == (3, 8, 14) and batch.x_dec.shape == (3, 9, 14)
    assert batch.source_lengths.tolist() == [8, 4, 3]
    assert batch.target_lengths.tolist() == [9, 5, 3]
    assert batch.padded_source(2) == ["a", "red", "mat"] + [PAD] * 5
    mask = batch.key_padding_mask()
    assert mask.shape == (3, 1, 8) and mask.sum().item() == 15
    for b, n in enumerate(batch.source_lengths.tolist()):
        assert (batch.x_enc[b, n:] == 0).all()
    # each sentence of the masked batch gives what it gives alone
    out, _ = attention.cross_attention(batch.x_dec, batch.x_enc, batch.w_q, batch.w_k, batch.w_v,
                                       mask=mask)
    for b in range(3):
        ex = translation_example(b)
        alone, _ = attention.cross_attention(ex.x_dec, ex.x_enc, ex.w_q, ex.w_k, ex.w_v)
        assert torch.allclose(out[b, : len(ex.target_tokens)], alone, atol=1e-12)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="unknown token"):
        embed(["the", "dog"])
    with pytest.raises(ValueError, match="pair"):
        translation_example(len(PAIRS))
    with pytest.raises(ValueError, match="pairs"):
        translation_batch([0, 7])
    assert translation_example(dtype=torch.float32).x_enc.dtype == torch.float32
