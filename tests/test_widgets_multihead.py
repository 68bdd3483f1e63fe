"""Chapter 3's widgets, driven headless: set control values, assert the drawn numbers
change, stay finite, and that the static figure is the explorer's first frame."""

import matplotlib
import pytest
import torch

from utils.examples.heads import heads_example
from utils.multihead import MultiHeadAttention
from utils.widgets import multihead as mw

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def ex():
    return heads_example()


def _finite(state):
    return all(torch.isfinite(v).all() for v in state.values() if isinstance(v, torch.Tensor))


def test_split_head_weights_match_the_module(ex):
    x = ex.x[None]
    for h in mw.divisors(ex.d_model):
        _, w = ex.module(h)(x, x, x)
        got = mw.split_head_weights(ex.x @ ex.w_q + ex.b_q, ex.x @ ex.w_k, h)
        torch.testing.assert_close(got, w[0].detach(), rtol=0, atol=1e-12)
    assert mw.divisors(12) == [1, 2, 3, 4, 6, 12]


def test_head_count_explorer_every_count_and_head(ex):
    e = mw.head_count_explorer(ex)
    assert e.controls["n_heads"].options == (1, 2, 3, 4, 6, 12)
    start = e.state["head_weights"].clone()
    image = e.image.value
    e.controls["head"].value = 2
    assert not torch.equal(e.state["head_weights"], start)
    assert e.image.value != image
    for h in e.controls["n_heads"].options:  # both extremes: one head of 12, twelve of 1
        e.controls["n_heads"].value = h
        assert e.controls["head"].options == tuple(range(h))
        assert len(e.frames.children) == h, "one pre-rendered frame per head"
        assert e.image is e.frames.children[e.frames.selected_index]
        assert e.state["weights"].shape == (h, 10, 10) and _finite(e.state)
        torch.testing.assert_close(e.state["weights"].sum(-1), torch.ones(h, 10, dtype=ex.x.dtype))
        e.controls["head"].value = h - 1
        assert e.state["head"] == h - 1
    e.controls["n_heads"].value = 2  # a new head count starts again at head 0
    assert e.controls["head"].value == 0 and e.state["head"] == 0


def test_a_new_head_count_rebuilds_the_head_slider(ex):
    """A slider whose options change keeps its first range for the End key in the browser
    (noUiSlider), so a new H puts a new slider, with the new range, where the old one was."""
    e = mw.head_count_explorer(ex, n_heads=3)
    row = e.box.children[0]
    old = e.controls["head"]
    e.controls["n_heads"].value = 12
    new = e.controls["head"]
    assert new is not old and old.comm is None, "the old slider is closed"
    assert new in row.children and old not in row.children
    assert new.options == tuple(range(12)) and new.value == 0
    assert e.frames_link is not None and e.frames_link.source[0] is new
    new.value = 11  # the last head, as the End key would pick
    assert e.state["head"] == 11 and e.frames.selected_index == 11


def test_head_count_view_designed_heads_specialise(ex):
    state = mw.HeadCountView(ex).update(n_heads=3, head=0)
    scores = state["scores"]  # (heads, patterns), patterns in the order of the head names
    assert (scores.diagonal() > 0.9).all()
    one = mw.HeadCountView(ex).update(n_heads=1, head=0)["scores"][0]
    assert (one < scores.diagonal()).all()  # one big head blends the three patterns


def test_head_count_view_rejects_bad_counts(ex):
    with pytest.raises(ValueError, match="n_heads must divide d_model=12"):
        mw.HeadCountView(ex).update(n_heads=5, head=0)


def test_static_figure_is_the_default_frame(ex):
    static = mw.HeadCountView(ex)
    assert static.figure_at().axes
    e = mw.head_count_explorer(ex)
    torch.testing.assert_close(e.state["weights"], static.update(**static.defaults)["weights"])
    static = mw.QueryHeadsView(ex, query=6)
    assert static.figure_at().axes
    e = mw.query_heads_explorer(ex, query=6)
    torch.testing.assert_close(e.state["rows"], static.update(**static.defaults)["rows"])
    with pytest.raises(RuntimeError, match="drives an explorer"):
        e.view.figure_at()


def test_query_heads_explorer_query_and_positions(ex):
    e = mw.query_heads_explorer(ex)
    first = e.state["rows"].clone()
    image = e.image.value
    e.controls["query"].value = ex.index("He")
    assert not torch.equal(e.state["rows"], first) and e.image.value != image
    rows = e.state["rows"]
    assert ex.tokens[int(rows[0].argmax())] == "."  # previous token of "He"
    assert ex.tokens[int(rows[2].argmax())] == "John"  # the start
    torch.testing.assert_close(rows[-1], rows[:-1].mean(0))  # the average panel
    for s in (0.0, 0.5, 1.0):  # slider extremes
        e.controls["position_strength"].value = s
        assert _finite(e.state)
    # without positions the previous-token and start heads cannot tell positions apart
    e.controls["position_strength"].value = 0.0
    uniform = torch.full((10,), 0.1, dtype=ex.x.dtype)
    torch.testing.assert_close(e.state["weights"][0, 3], uniform)
    torch.testing.assert_close(e.state["weights"][2, 3], uniform)


def test_query_heads_weights_match_torch(ex):
    """The widget's heads are the heads of torch.nn.MultiheadAttention with these weights."""
    ref = torch.nn.MultiheadAttention(12, 3, batch_first=True, dtype=torch.float64)
    mine = ex.module()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([mine.w_q.weight, mine.w_k.weight, mine.w_v.weight]))
        ref.in_proj_bias.copy_(torch.cat([mine.w_q.bias, mine.w_k.bias, mine.w_v.bias]))
        ref.out_proj.weight.copy_(mine.w_o.weight)
        ref.out_proj.bias.copy_(mine.w_o.bias)
    x = ex.x[None]
    _, w = ref(x, x, x, average_attn_weights=False)
    state = mw.QueryHeadsView(ex).update(query=0, position_strength=1.0)
    torch.testing.assert_close(state["weights"], w[0].detach(), rtol=0, atol=1e-12)
    assert isinstance(MultiHeadAttention.from_torch(ref), MultiHeadAttention)
