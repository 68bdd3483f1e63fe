"""Chapter 1's widget, driven without a browser."""

from __future__ import annotations

import ipywidgets as widgets
import numpy as np
import pytest
import torch

from utils.examples import running_example
from utils.widgets import AttentionView, Explorer, attention_explorer, tempered_weights


@pytest.fixture
def explorer():
    ex = running_example()
    return attention_explorer(ex.tokens, ex.x @ ex.w_q, ex.x @ ex.w_k, query=ex.index("He"))


def _bar_heights(explorer) -> np.ndarray:
    return np.array([bar.get_height() for bar in explorer.view.bars])


def test_temperature_slider_changes_the_figure(explorer):
    before_png, before_bars = explorer.image.value, _bar_heights(explorer)
    slider = explorer.controls["temperature"]
    slider.value = slider.options[-5][1]  # T ≈ 5
    assert explorer.image.value != before_png
    assert not np.allclose(_bar_heights(explorer), before_bars)
    assert np.allclose(_bar_heights(explorer), explorer.state["row"].numpy())


def test_query_picker_moves_the_outline(explorer):
    explorer.controls["query"].value = 1
    assert explorer.view.outline.get_y() == pytest.approx(0.5)
    assert torch.equal(explorer.state["row"], explorer.state["weights"][1])


@pytest.mark.parametrize("index", [0, -1])
def test_slider_extremes_stay_finite(explorer, index):
    slider = explorer.controls["temperature"]
    slider.value = slider.options[index][1]
    w = explorer.state["weights"]
    assert torch.isfinite(w).all()
    assert torch.allclose(w.sum(-1), torch.ones(w.shape[0], dtype=w.dtype))
    assert np.isfinite(explorer.view.heat.get_array()).all()


def test_low_temperature_approaches_argmax_and_high_approaches_uniform():
    ex = running_example()
    q, k = ex.x @ ex.w_q, ex.x @ ex.w_k
    he = ex.index("He")
    assert tempered_weights(q, k, 0.05)[he].max() > 0.999
    assert torch.allclose(tempered_weights(q, k, 1e4)[he], torch.full((10,), 0.1, dtype=q.dtype),
                          atol=1e-3)
    with pytest.raises(ValueError, match="temperature"):
        tempered_weights(q, k, 0.0)


def test_static_fallback_is_the_same_picture_as_the_explorer_start():
    ex = running_example()
    q, k = ex.x @ ex.w_q, ex.x @ ex.w_k
    fig = AttentionView(ex.tokens, q, k, query=6).figure_at()
    assert fig.axes and fig.get_figwidth() > 0
    explorer = attention_explorer(ex.tokens, q, k, query=6)
    assert np.allclose(explorer.view.heat.get_array(), fig.axes[0].images[0].get_array())
    with pytest.raises(RuntimeError, match="explorer"):
        explorer.view.figure_at()


def test_repr_is_stable_text(explorer):
    bundle = explorer._repr_mimebundle_()
    assert bundle["text/plain"] == "AttentionView explorer: run the notebook to interact"
    assert "application/vnd.jupyter.widget-view+json" in bundle


def test_every_temperature_is_drawn_in_advance_and_linked_in_the_browser(explorer):
    slider = explorer.controls["temperature"]
    frames = explorer.frames.children
    assert len(frames) == len(slider.options) == 27
    assert len({f.value for f in frames}) == len(frames), "each temperature has its own frame"
    assert explorer.image is frames[slider.index]
    renders = explorer.n_renders
    slider.value = slider.options[3][1]
    assert explorer.n_renders == renders, "moving the slider must not redraw: frames are ready"
    assert explorer.frames.selected_index == 3 and explorer.image is frames[3]
    before = frames[3].value
    explorer.controls["query"].value = 1  # another control: every frame is redrawn
    assert explorer.n_renders == renders + 1 and explorer.image is frames[3]
    assert frames[3].value != before


def test_prerender_needs_a_selection_slider():
    ex = running_example()
    view = AttentionView(ex.tokens, ex.x @ ex.w_q, ex.x @ ex.w_k)
    with pytest.raises(TypeError, match="prerender"):
        Explorer(view, {"query": widgets.IntSlider(0, 0, 9), "temperature": widgets.FloatSlider(1.0)},
                 prerender="temperature")


def test_prerender_any_single_choice_control_and_follow_its_options():
    ex = running_example()
    view = AttentionView(ex.tokens, ex.x @ ex.w_q, ex.x @ ex.w_k)
    query = widgets.Dropdown(options=[(t, i) for i, t in enumerate(ex.tokens)], value=2)
    explorer = Explorer(view, {"query": query, "temperature": widgets.FloatSlider(1.0)},
                        prerender="query")
    assert len(explorer.frames.children) == len(ex.tokens) and explorer.image is explorer.frames.children[2]
    link = explorer.frames_link  # the browser switches frames without the kernel
    assert link.source == (query, "index") and link.target == (explorer.frames, "selected_index")
    query.value = 5
    assert explorer.n_renders == 1 and explorer.frames.selected_index == 5
    np.testing.assert_allclose(explorer.state["row"].numpy(),
                               view.update(query=5, temperature=1.0)["row"].numpy())
    query.options = [(t, i) for i, t in enumerate(ex.tokens[:4])]  # fewer options: fewer frames
    assert len(explorer.frames.children) == 4
    assert explorer.image is explorer.frames.children[query.index]


def test_prerender_links_the_control_only_once_its_frames_exist(monkeypatch):
    # In the browser, a link to a Tab without frames resets the control (it started at T = 0.1)
    seen = []
    real = widgets.jslink

    def spy(source, target):
        seen.append((len(target[0].children), target[0].selected_index, source[0].index))
        return real(source, target)

    monkeypatch.setattr(widgets, "jslink", spy)
    ex = running_example()
    explorer = attention_explorer(ex.tokens, ex.x @ ex.w_q, ex.x @ ex.w_k, query=ex.index("He"))
    slider = explorer.controls["temperature"]
    assert seen == [(len(slider.options), slider.index, slider.index)] and slider.index > 0
