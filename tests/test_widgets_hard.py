"""Chapter 7's widgets, driven headless: buttons and sliders change the state and the image,
numbers stay finite at the extremes, and the drawn numbers are the right ones."""

from __future__ import annotations

import math

import pytest
import torch

from utils import hard
from utils.examples import running_example
from utils.widgets import hard as wh
from utils.widgets import hard_estimators as he
from utils.widgets._core import Explorer

D = torch.float64
EX = running_example()
CANDIDATES = [EX.index(t) for t in ("John", "went", "store")]
ALPHA = torch.tensor([0.85, 0.05, 0.10], dtype=D)
VALUES = EX.x[CANDIDATES]
THETA = torch.tensor([1.0, 0.0, 0.5, -0.5], dtype=D)
R = torch.tensor([1.0, 3.0, -1.0, 0.0], dtype=D)


def finite(state: dict) -> bool:
    for v in state.values():
        if isinstance(v, torch.Tensor) and not torch.isfinite(v).all():
            return False
        if isinstance(v, float) and not math.isfinite(v):
            return False
    return True


# ----------------------------------------------------------------------------- hard attention


def hard_explorer():
    return wh.hard_attention_explorer(EX.tokens, CANDIDATES, ALPHA, VALUES, EX.features)


def test_hard_explorer_starts_empty_and_samples_one_then_a_hundred():
    ex = hard_explorer()
    assert ex.state["n"] == 0 and ex.state["counts"].sum() == 0 and finite(ex.state)
    image = ex.image.value
    ex.buttons["sample"].click()
    assert ex.state["n"] == 1 and ex.image.value != image
    i = ex.state["index"]
    assert torch.equal(ex.state["hard_output"], VALUES[i])  # the drawn value, exactly
    ex.buttons["sample 100"].click()
    assert ex.state["n"] == 101 and ex.state["counts"].sum() == 101 and finite(ex.state)
    ex.buttons["reset"].click()
    assert ex.state["n"] == 0


def test_sample_is_drawn_before_it_is_clicked():
    ex = hard_explorer()  # prefetch="sample": two frames, the hidden one holds the next draw
    assert "course-frames-ready" in ex.frames._dom_classes  # ready from the start
    plain = Explorer(wh.HardAttentionView(EX.tokens, CANDIDATES, ALPHA, VALUES, EX.features), {},
                     {"sample": lambda e: e.view.add(1), "sample 100": lambda e: e.view.add(100)})
    for label in ["sample"] * 5 + ["sample 100", "sample", "sample"]:
        shown, hidden = ex.frames.selected_index, 1 - ex.frames.selected_index
        ready = ex.frames.children[hidden].value
        ex.buttons[label].click()
        plain.buttons[label].click()
        if label == "sample":  # the click showed the frame drawn in advance
            assert ex.frames.selected_index == hidden and ex.image.value == ready
        else:  # another button redraws the frame on show
            assert ex.frames.selected_index == shown
        # the same states and pixels as an explorer that draws after each click
        assert ex.state["n"] == plain.state["n"] and ex.state["index"] == plain.state["index"]
        assert torch.equal(ex.state["counts"], plain.state["counts"])
        assert ex.image.value == plain.image.value


def test_prefetch_needs_a_button_and_a_view_with_a_snapshot():
    view = wh.HardAttentionView(EX.tokens, CANDIDATES, ALPHA, VALUES, EX.features)
    with pytest.raises(ValueError, match="prefetch='draw' must be one of the buttons"):
        Explorer(view, {}, {"sample": lambda e: e.view.add(1)}, prefetch="draw")
    temperature = wh.TemperatureView(["a", "b"], torch.tensor([1.0, 0.0]))
    with pytest.raises(TypeError, match="TemperatureView has no snapshot"):
        Explorer(temperature, {}, {"resample": lambda e: None}, prefetch="resample")


def test_hard_histogram_converges_to_alpha():
    view = wh.HardAttentionView(EX.tokens, CANDIDATES, ALPHA, VALUES, EX.features)
    for _ in range(49):  # what 49 clicks on "sample 100" do, without rendering each one
        view.add(100)
    ex = Explorer(view, {}, {"sample 100": lambda e: e.view.add(100)})
    ex.buttons["sample 100"].click()
    freq, n = ex.state["frequencies"], ex.state["n"]
    se = (ALPHA * (1 - ALPHA) / n).sqrt()
    assert n == 5000 and ((freq - ALPHA).abs() <= 4.5 * se).all()


def test_hard_draws_do_not_depend_on_how_you_click():
    a = wh.HardAttentionView(EX.tokens, CANDIDATES, ALPHA, VALUES, EX.features)
    b = wh.HardAttentionView(EX.tokens, CANDIDATES, ALPHA, VALUES, EX.features)
    for _ in range(100):
        a.add(1)
        state_a = a.update()
    b.add(100)
    state_b = b.update()
    assert torch.equal(state_a["counts"], state_b["counts"])
    assert state_a["index"] == state_b["index"]


def test_hard_soft_output_is_the_weighted_average():
    state = hard_explorer().state
    torch.testing.assert_close(state["soft_output"], ALPHA @ VALUES)


def test_hard_static_figure_and_bad_input():
    view = wh.HardAttentionView(EX.tokens, CANDIDATES, ALPHA, VALUES, EX.features)
    assert view.figure_at() is view.fig and view.n == 100
    with pytest.raises(ValueError, match="sum to 1"):
        wh.HardAttentionView(EX.tokens, CANDIDATES, ALPHA * 2, VALUES, EX.features)
    with pytest.raises(ValueError, match="values"):
        wh.HardAttentionView(EX.tokens, CANDIDATES, ALPHA, VALUES[:, :3], EX.features)


# ----------------------------------------------------------------------------- temperature


def test_temperature_slider_extremes_and_sample_button():
    ex = wh.temperature_explorer(["John", "went", "store"], ALPHA.log())
    slider = ex.controls["tau"]
    states = {}
    for tau in (slider.min, 1.0, slider.max):  # log10 bounds
        slider.value = 10**tau if tau != 1.0 else 1.0
        states[tau] = ex.state
        assert finite(ex.state)
        torch.testing.assert_close(ex.state["samples"].sum(-1), torch.ones(20, dtype=D))
    low, high = states[slider.min], states[slider.max]
    assert low["samples"].max(-1).values.median() > 0.99  # τ = 0.1: near one-hot
    assert (high["samples"].max(-1).values < 0.75).all()  # τ = 5: far from one-hot
    image, sample = ex.image.value, ex.state["sample"]
    ex.buttons["sample"].click()
    assert ex.image.value != image and not torch.equal(ex.state["sample"], sample)


def test_temperature_noise_is_held_while_sliding():
    view = wh.TemperatureView(["John", "went", "store"], ALPHA.log())
    a = view.update(tau=0.3)["sample"]
    b = view.update(tau=3.0)["sample"]
    # the same Gumbel noise g at both temperatures: the same argmax, y = softmax((s + g)/τ)
    assert a.argmax() == b.argmax()
    s_plus_g_a, s_plus_g_b = a.log() * 0.3, b.log() * 3.0  # equal up to a constant per row
    torch.testing.assert_close(s_plus_g_a - s_plus_g_a[0], s_plus_g_b - s_plus_g_b[0])


def test_temperature_soft_weights_are_tempered_softmax():
    view = wh.TemperatureView(["a", "b", "c"], torch.tensor([1.0, 0.0, -1.0], dtype=D))
    state = view.update(tau=2.0)
    torch.testing.assert_close(state["soft"], torch.softmax(torch.tensor([0.5, 0.0, -0.5],
                                                                         dtype=D), -1))


# ----------------------------------------------------------------------------- top-k


def bought_scores():
    q, k = EX.x @ EX.w_q, EX.x @ EX.w_k
    return (q @ k.T / 2)[EX.index("bought")] - 1e-6 * torch.arange(len(EX.tokens), dtype=D)


def test_topk_slider_from_hard_to_soft():
    scores = bought_scores()
    ex = wh.topk_explorer(EX.tokens, scores, EX.x, EX.features)
    slider = ex.controls["k"]
    images = set()
    for k in range(slider.min, slider.max + 1):
        slider.value = k
        images.add(ex.image.value)
        state = ex.state
        assert finite(state) and int((state["weights"] > 0).sum()) == k
        torch.testing.assert_close(state["weights"].sum(), torch.tensor(1.0, dtype=D))
        assert (state["grad"][state["weights"] == 0] == 0).all()
    assert len(images) == slider.max  # every k draws something different
    slider.value = slider.max
    soft, _ = hard.soft_attention(scores, EX.x)
    torch.testing.assert_close(ex.state["context"], soft)
    slider.value = 1
    assert torch.equal(ex.state["context"], EX.x[scores.argmax()])
    assert (ex.state["grad"] == 0).all()  # argmax: no gradient at all


def test_topk_static_figure():
    view = wh.TopKView(EX.tokens, bought_scores(), EX.x, EX.features)
    assert view.figure_at(k=2) is view.fig


# ----------------------------------------------------------------------------- estimators


def test_estimator_explorer_every_control_and_extreme():
    ex = he.estimator_explorer(THETA, R, repeats=40)
    c = ex.controls
    for name in hard.ESTIMATORS:
        c["estimator"].value = name
        for reward in c["reward"].options:
            c["reward"].value = reward
            assert finite(ex.state), (name, reward)
    c["estimator"].value = "Gumbel-softmax"
    for tau in (10**c["tau"].min, 10**c["tau"].max):
        c["tau"].value = tau
        assert finite(ex.state)
    for n in (c["n_samples"].options[0], c["n_samples"].options[-1]):
        c["n_samples"].value = n
        assert finite(ex.state)
    image, est = ex.image.value, ex.state["estimates"]
    ex.buttons["resample"].click()
    assert ex.image.value != image and not torch.equal(ex.state["estimates"], est)


def test_estimator_view_numbers():
    view = he.EstimatorView(THETA, R, repeats=50)
    st = view.update("straight-through", "linear", 1.0, 10)
    assert st["bias"] < 1e-12 and st["spread"] < 1e-12 and st["z"] == 0  # exact for linear f
    plain = view.update("REINFORCE", "linear + 10", 1.0, 10)
    base = view.update("REINFORCE + baseline", "linear + 10", 1.0, 10)
    assert base["spread"] < plain["spread"] / 3
    torch.testing.assert_close(plain["exact"], hard.exact_gradient(THETA, R))
