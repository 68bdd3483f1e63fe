"""Chapter 2's widgets, driven without a browser."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from utils.examples.translation import translation_batch, translation_example
from utils.widgets.cross_attention import (
    AlignmentView,
    PaddingView,
    alignment_explorer,
    padded_weights,
    padding_explorer,
)


@pytest.fixture(scope="module")
def ex():
    return translation_example()


@pytest.fixture(scope="module")
def batch():
    return translation_batch()


def _qk(ex):
    return ex.x_dec @ ex.w_q, ex.x_enc @ ex.w_k


def _batch_qk(batch):
    return batch.x_dec @ batch.w_q, batch.x_enc @ batch.w_k


@pytest.fixture
def aligner(ex):
    return alignment_explorer(ex.target_tokens, ex.source_tokens, *_qk(ex),
                              target=ex.target_index("noir"))


@pytest.fixture
def padder(batch):
    return padding_explorer(batch.target_tokens, batch.source_tokens, *_batch_qk(batch),
                            query=(2, 0), masked=False)


# ---------------------------------------------------------------- alignment explorer

def test_alignment_temperature_changes_the_figure_not_the_winner(aligner, ex):
    before_png, before_row = aligner.image.value, aligner.state["row"].clone()
    widths = [line.get_linewidth() for line in aligner.view.lines]
    slider = aligner.controls["temperature"]
    slider.value = slider.options[-5][1]  # T ≈ 5
    assert aligner.image.value != before_png
    assert not torch.allclose(aligner.state["row"], before_row)
    assert [line.get_linewidth() for line in aligner.view.lines] != widths
    assert aligner.state["top"] == ex.source_index("black")  # argmax ignores T


def test_alignment_target_picker_moves_outline_marker_and_lines(aligner, ex):
    tapis = ex.target_index("tapis")
    aligner.controls["target"].value = tapis
    assert aligner.view.outline.get_y() == pytest.approx(tapis - 0.5)
    assert aligner.view.marker.get_text() == "tapis"
    assert torch.equal(aligner.state["row"], aligner.state["weights"][tapis])
    assert aligner.state["top"] == ex.source_index("mat")
    start = {float(line.get_xdata()[0]) for line in aligner.view.lines}
    assert start == {aligner.view.xt[tapis]}  # every line starts at the chosen target


def test_alignment_slider_extremes_stay_finite(aligner):
    slider = aligner.controls["temperature"]
    for index in (0, -1):
        slider.value = slider.options[index][1]
        w = aligner.state["weights"]
        assert torch.isfinite(w).all()
        assert torch.allclose(w.sum(-1), torch.ones(w.shape[0], dtype=w.dtype))
        assert np.isfinite(aligner.view.heat.get_array()).all()
        assert all(np.isfinite(line.get_linewidth()) for line in aligner.view.lines)
    assert aligner.state["row"].max() < 0.5  # T = 20: nearly uniform


def test_alignment_static_fallback_matches_the_explorer_start(ex):
    q, k = _qk(ex)
    fig = AlignmentView(ex.target_tokens, ex.source_tokens, q, k, target=2).figure_at()
    explorer = alignment_explorer(ex.target_tokens, ex.source_tokens, q, k, target=2)
    assert np.allclose(explorer.view.heat.get_array(), fig.axes[0].images[0].get_array())
    with pytest.raises(RuntimeError, match="explorer"):
        explorer.view.figure_at()


def test_alignment_view_rejects_mismatched_tokens(ex):
    q, k = _qk(ex)
    with pytest.raises(ValueError, match="source tokens"):
        AlignmentView(ex.target_tokens, ex.source_tokens[:-1], q, k)


def test_alignment_repr_is_stable_text(aligner):
    assert aligner._repr_mimebundle_()["text/plain"] == (
        "AlignmentView explorer: run the notebook to interact")


# ---------------------------------------------------------------- padding explorer

def test_mask_toggle_zeroes_padding_and_renormalises(padder, batch):
    assert padder.state["pad_weight"] > 0.05  # unmasked: "un" reads the padding
    before_png = padder.image.value
    padder.controls["masked"].value = True
    assert padder.image.value != before_png
    w, length = padder.state["weights"], batch.source_lengths
    for b in range(w.shape[0]):
        assert (w[b, :, length[b]:] == 0).all()  # exactly zero, not just small
    assert padder.state["pad_weight"] == 0
    assert torch.allclose(padder.state["row"], padder.state["alone"], atol=1e-12)
    heights = np.array([bar.get_height() for bar in padder.view.bars])
    assert np.allclose(heights, padder.state["row"].numpy())
    # the heatmap greys out the padded keys of sentence 3 (length 3)
    assert padder.view.heats[2].get_array().mask[:, 3:].all()


def test_unmasked_rows_differ_from_the_sentence_alone(padder):
    row, alone = padder.state["row"], padder.state["alone"]
    assert torch.allclose(row.sum(), torch.tensor(1.0, dtype=row.dtype))
    assert (row[:3] < alone[:3]).all()  # padding took its share from every real token


def test_choosing_another_sentence_relabels_and_moves_the_outline(padder, batch):
    padder.controls["query"].value = (1, 2)  # sentence 1 (0-based), "noir"
    labels = [t.get_text() for t in padder.view.ax.get_xticklabels()]
    assert labels == batch.padded_source(1)
    assert [r.get_visible() for r in padder.view.outlines] == [False, True, False]
    assert padder.view.outlines[1].get_y() == pytest.approx(1.5)
    assert padder.view.title.get_text().startswith("sentence 1, “noir”")
    png = padder.image.value
    padder.controls["masked"].value = True  # a blit after the full redraw still changes it
    assert padder.image.value != png


def test_padding_extremes_stay_finite(padder):
    slider = padder.controls["temperature"]
    for masked in (False, True):
        padder.controls["masked"].value = masked
        for index in (0, -1):
            slider.value = slider.options[index][1]
            w = padder.state["weights"]
            assert torch.isfinite(w).all()
            assert torch.allclose(w.sum(-1), torch.ones(w.shape[:2], dtype=w.dtype))
            assert all(np.isfinite(h.get_array().filled(0)).all() for h in padder.view.heats)
            if masked:
                assert padder.state["pad_weight"] == 0


def test_padded_weights_match_torch_sdpa_with_a_bool_mask(batch):
    q, k = _batch_qk(batch)
    mask = batch.key_padding_mask()
    want = torch.softmax((q @ k.mT / q.shape[-1] ** 0.5).masked_fill(~mask, float("-inf")), -1)
    assert torch.allclose(padded_weights(q, k, batch.source_lengths), want)
    with pytest.raises(ValueError, match="temperature"):
        padded_weights(q, k, batch.source_lengths, temperature=0.0)


def test_padding_static_fallback_matches_the_explorer_start(batch):
    q, k = _batch_qk(batch)
    fig = PaddingView(batch.target_tokens, batch.source_tokens, q, k, query=(2, 0)).figure_at()
    explorer = padding_explorer(batch.target_tokens, batch.source_tokens, q, k, query=(2, 0))
    assert np.allclose(explorer.view.heats[0].get_array(), fig.axes[0].images[0].get_array())
    assert explorer._repr_mimebundle_()["text/plain"] == (
        "PaddingView explorer: run the notebook to interact")
