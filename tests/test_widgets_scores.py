"""Chapter 6's widgets, driven headless: every control moves the figure, extremes stay finite."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from utils import scores
from utils.examples import running_example
from utils.widgets.scores import (
    D_K_OPTIONS,
    CosineTemperatureView,
    ScoreFunctionView,
    cosine_temperature_explorer,
    score_explorer,
    softmax_stats,
)


def _finite(state: dict) -> bool:
    for value in state.values():
        arr = value.detach().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        if not np.isfinite(arr).all():
            return False
    return True


@pytest.fixture(scope="module")
def example():
    ex = running_example()
    return ex, ex.x @ ex.w_q, ex.x @ ex.w_k


# --------------------------------------------------------------------------- softmax_stats


def test_softmax_stats_match_autograd_and_definitions():
    s = torch.randn(3, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    st = softmax_stats(s)
    for i in range(3):
        jac = torch.autograd.functional.jacobian(lambda x: torch.softmax(x, -1), s[i])
        torch.testing.assert_close(st["jacobian_norm"][i], jac.norm())
    p = torch.softmax(s, -1)
    torch.testing.assert_close(st["entropy"], -(p * p.log()).sum(-1))
    torch.testing.assert_close(st["max_weight"], p.amax(-1))


def test_softmax_stats_extremes_are_finite():
    one_hot = softmax_stats(torch.tensor([[1e4, 0.0, -1e4]], dtype=torch.float64))
    assert one_hot["entropy"].item() == pytest.approx(0.0, abs=1e-12)
    assert one_hot["jacobian_norm"].item() == pytest.approx(0.0, abs=1e-12)
    uniform = softmax_stats(torch.zeros(1, 4, dtype=torch.float64))
    assert uniform["entropy"].item() == pytest.approx(math.log(4))
    assert uniform["jacobian_norm"].item() == pytest.approx(math.sqrt(3) / 4)  # √(M-1)/M


# --------------------------------------------------------------------------- score explorer


def test_score_view_uses_utils_scores():
    view = ScoreFunctionView()
    q, k = view.q[:, :8], view.k[:, :8]
    torch.testing.assert_close(view.score_matrix("dot", 8), scores.dot(q, k))
    torch.testing.assert_close(view.score_matrix("scaled_dot", 8), scores.scaled_dot(q, k))
    torch.testing.assert_close(view.score_matrix("cosine", 8, 0.5), scores.cosine(q, k, 0.5))
    for name in scores.SCORE_FUNCTIONS:
        assert view.score_matrix(name, 8).shape == (16, 32)


def test_score_view_rejects_bad_input():
    view = ScoreFunctionView()
    with pytest.raises(ValueError, match="function must be one of"):
        view.update(function="bilinear", d_k=4)
    with pytest.raises(ValueError, match="d_k must be between"):
        view.update(function="dot", d_k=2048)


def test_score_explorer_every_control_changes_the_state_and_image():
    e = score_explorer()
    assert e.n_renders == 1 and _finite(e.state)
    for name in scores.SCORE_FUNCTIONS:
        before_png, before = e.image.value, e.state["scores"]
        e.controls["function"].value = name
        if name != "dot":
            assert not torch.equal(e.state["scores"], before)
            assert e.image.value != before_png
        assert _finite(e.state)
        for d in (min(D_K_OPTIONS), max(D_K_OPTIONS), 64):
            e.controls["d_k"].value = d
            assert e.state["scores"].shape == (16, 32) and _finite(e.state)
            assert e.state["histogram"].sum() == pytest.approx(1.0)


def test_score_explorer_temperature_moves_cosine_only():
    e = score_explorer(function="cosine")
    before = e.state["gauges"].copy()
    e.controls["temperature"].value = 0.01  # slider minimum: scores up to 100
    assert _finite(e.state) and not np.allclose(e.state["gauges"], before)
    assert e.state["max_weight"].mean() > before[0]
    e.controls["temperature"].value = 10.0  # maximum: nearly uniform
    assert e.state["entropy"].mean() / math.log(32) > 0.99
    e.controls["function"].value = "dot"
    dot_scores = e.state["scores"].clone()
    e.controls["temperature"].value = 0.5
    assert torch.equal(e.state["scores"], dot_scores)


def test_score_explorer_shows_the_saturation():
    e = score_explorer(function="dot", d_k=1)
    small = e.state["max_weight"].mean().item()
    e.controls["d_k"].value = 1024
    assert e.state["max_weight"].mean().item() > max(small, 0.9)
    e.controls["function"].value = "scaled_dot"
    assert e.state["max_weight"].mean().item() < 0.5
    e.controls["function"].value = "additive"
    assert e.state["scores"].abs().max() <= e.view.v.abs().sum() / math.sqrt(e.view.hidden)


def test_score_view_static_figure():
    fig = ScoreFunctionView().figure_at()
    assert len(fig.axes) == 3
    assert fig.texts[0].get_text().startswith("dot, d_k = 64")


# --------------------------------------------------------------------------- cosine explorer


def test_cosine_explorer_temperature_and_query(example):
    ex, q, k = example
    he, john = ex.index("He"), ex.index("John")
    e = cosine_temperature_explorer(ex.tokens, q, k, query=he)
    assert _finite(e.state)
    png = e.image.value
    e.controls["temperature"].value = 0.01
    assert e.image.value != png and _finite(e.state)
    w = e.state["weights"]
    assert w[john].item() == pytest.approx(0.5, abs=1e-6) and w[he].item() == pytest.approx(0.5, abs=1e-6)
    e.controls["temperature"].value = 10.0
    assert e.state["entropy"].item() > 0.99 * math.log(len(ex.tokens))
    e.controls["query"].value = ex.index("to")  # a zero query: uniform at every T
    assert torch.allclose(e.state["weights"], torch.full((len(ex.tokens),), 0.1, dtype=q.dtype))
    assert _finite(e.state)


def test_cosine_entropy_curve_is_monotone_in_T(example):
    ex, q, k = example
    view = CosineTemperatureView(ex.tokens, q, k)
    state = view.update(query=ex.index("He"), temperature=1.0)
    curve = state["curve"]
    assert torch.all(curve[1:] >= curve[:-1] - 1e-12)
    with pytest.raises(ValueError, match="temperature"):
        view.weights(0, 0.0)
