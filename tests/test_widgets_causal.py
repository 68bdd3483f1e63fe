"""Chapter 4's widgets driven headless: set controls, assert the drawn state changed and is finite."""

from __future__ import annotations

import pytest
import torch

from utils.attention import self_attention
from utils.examples import running_example
from utils.masks import causal_mask
from utils.widgets.causal import (
    MODES,
    GenerationView,
    LeakageView,
    future_change,
    generation_explorer,
    leakage_explorer,
    masked_weights,
)

EX = running_example()
X = EX.x
Q, K, V = X @ EX.w_q, X @ EX.w_k, X @ EX.w_v
N = len(EX.tokens)
VOCAB = {t: X[EX.index(t)] for t in dict.fromkeys(EX.tokens)}
HE = EX.index("He")


def finite(state: dict) -> bool:
    return all(torch.isfinite(torch.as_tensor(v, dtype=torch.float64)).all()
               for v in state.values())


# --------------------------------------------------------------------------- pure functions


def test_masked_weights_modes():
    causal = masked_weights(Q, K, "causal")
    torch.testing.assert_close(causal, self_attention(X, EX.w_q, EX.w_k, EX.w_v,
                                                      mask=causal_mask(N))[1])
    after = masked_weights(Q, K, "after")
    assert torch.all(after[~causal_mask(N)] == 0)
    assert after.sum(-1)[:-1].max() < 1 - 1e-3  # rows lose their future mass
    torch.testing.assert_close(after / after.sum(-1, keepdim=True), causal)
    torch.testing.assert_close(masked_weights(Q, K, "none").sum(-1), torch.ones(N,
                                                                                dtype=X.dtype))
    with pytest.raises(ValueError, match="mode"):
        masked_weights(Q, K, "sideways")


def test_future_change_is_zero_before_the_position_only_with_the_mask():
    new = VOCAB["John"]
    causal = future_change(X, EX.w_q, EX.w_k, EX.w_v, HE, new, "causal")
    assert torch.all(causal[:HE] == 0) and causal[HE] > 0
    assert future_change(X, EX.w_q, EX.w_k, EX.w_v, HE, new, "none")[:HE].min() > 0
    assert future_change(X, EX.w_q, EX.w_k, EX.w_v, HE, new, "after")[:HE].max() > 0
    with pytest.raises(ValueError, match="position"):
        future_change(X, EX.w_q, EX.w_k, EX.w_v, N, new)


# --------------------------------------------------------------------------- generation


def test_generation_view_rows_come_from_the_kv_cache():
    view = GenerationView(EX.tokens, Q, K, V)
    full = masked_weights(Q, K, "causal")
    for step in (0, HE, N - 1):
        state = view.update(step=step)
        assert state["visible"] == state["cache_len"] == step + 1
        torch.testing.assert_close(state["row"], full[step, :step + 1])
        assert finite(state)
    with pytest.raises(ValueError, match="step"):
        view.update(step=N)


def test_generation_explorer_slider_and_play_button():
    explorer = generation_explorer(EX.tokens, Q, K, V)
    first_png, first_row = explorer.image.value, explorer.state["row"]
    assert explorer.state["visible"] == 1
    explorer.controls["step"].value = N - 1  # slider extreme
    assert explorer.state["visible"] == N and finite(explorer.state)
    assert explorer.image.value != first_png
    assert explorer.state["row"].shape != first_row.shape
    explorer.play.value = 3  # the Play button drives the slider (kernel-side link)
    assert explorer.controls["step"].value == 3 and explorer.state["visible"] == 4
    explorer.controls["step"].value = 0  # other extreme
    assert explorer.state["visible"] == 1 and float(explorer.state["row"][0]) == 1.0
    widget = explorer.widget
    assert explorer.play in widget.children[0].children


def test_generation_static_figure():
    fig = GenerationView(EX.tokens, Q, K, V).figure_at(step=HE)
    assert fig.axes


# --------------------------------------------------------------------------- leakage


def test_leakage_view_counts_leaks_per_mode():
    view = LeakageView(EX.tokens, X, EX.w_q, EX.w_k, EX.w_v, VOCAB, position=HE,
                       replacement="John")
    leaks = {m: view.update(mode=m, position=HE, replacement="John")["leaked"] for m in MODES}
    assert leaks["causal"] == 0
    assert leaks["none"] == HE
    assert 0 < leaks["after"] < HE
    for mode in MODES:  # the view's shortcut computes the same as future_change
        state = view.update(mode=mode, position=N - 1, replacement="He")
        expected = future_change(X, EX.w_q, EX.w_k, EX.w_v, N - 1, VOCAB["He"], mode)
        torch.testing.assert_close(state["change"], expected, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="position"):
        view.update(mode="causal", position=N, replacement="He")


def test_leakage_explorer_every_control_and_extremes():
    explorer = leakage_explorer(EX.tokens, X, EX.w_q, EX.w_k, EX.w_v, VOCAB, position=HE,
                                replacement="John")
    assert explorer.state["leaked"] == HE
    png = explorer.image.value
    explorer.controls["mode"].value = "causal"
    assert explorer.state["leaked"] == 0 and explorer.state["max_leak"] == 0.0
    assert explorer.image.value != png
    for position in (0, N - 1):  # extremes
        explorer.controls["position"].value = position
        assert finite(explorer.state)
        assert explorer.state["leaked"] == 0
    explorer.controls["mode"].value = "none"
    assert explorer.state["leaked"] > 0  # the last token changed: every earlier one saw it
    before = explorer.state["change"].clone()
    explorer.controls["replacement"].value = "milk"
    assert not torch.equal(explorer.state["change"], before)
    explorer.controls["replacement"].value = "."  # the original token: nothing changes
    assert explorer.state["change"].abs().max() == 0 and finite(explorer.state)


def test_leakage_static_figure():
    view = LeakageView(EX.tokens, X, EX.w_q, EX.w_k, EX.w_v, VOCAB, position=HE,
                       replacement="John")
    assert view.figure_at().axes
    with pytest.raises(RuntimeError):  # a view that drives an explorer is not reused
        view.render()
        view.figure_at()


def test_leakage_y_range_bounds_every_setting():
    view = LeakageView(EX.tokens, X, EX.w_q, EX.w_k, EX.w_v, VOCAB, position=HE,
                       replacement="John")
    top = max(float(future_change(X, EX.w_q, EX.w_k, EX.w_v, p, VOCAB[t], m).max())
              for m in MODES for p in (0, HE, N - 1) for t in VOCAB)
    assert top <= view.ax.get_ylim()[1]
