"""Chapter 5's widgets driven headless: set controls, assert the drawn state changed and is finite."""

from __future__ import annotations

import pytest
import torch

from utils import cost, masks
from utils.widgets.sparse import (
    PATTERN_NAMES,
    PatternView,
    ReceptiveFieldView,
    pattern_explorer,
    pattern_mask,
    reach_by_layer,
    receptive_field_explorer,
)


def finite(state: dict) -> bool:
    return all(torch.isfinite(torch.as_tensor(v, dtype=torch.float64)).all()
               for v in state.values())


# --------------------------------------------------------------------------- pure functions


def test_pattern_mask_uses_the_library_masks():
    n = 32
    assert torch.equal(pattern_mask("local", n, 3, 0, 0), masks.sliding_window_mask(n, 3))
    assert torch.equal(pattern_mask("strided", n, 4, 0, 0), masks.strided_mask(n, 4))
    assert torch.equal(pattern_mask("fixed", n, 4, 0, 0), masks.fixed_mask(n, 4))
    assert torch.equal(pattern_mask("block", n, 4, 0, 0), masks.block_mask(n, 4))
    assert torch.equal(pattern_mask("dilated", n, 3, 0, 0), masks.dilated_mask(n, 3, 2))
    assert torch.equal(pattern_mask("local + global", n, 2, 2, 0),
                       masks.sliding_window_mask(n, 2) | masks.global_mask(n, [0, 1]))
    assert pattern_mask("dense", n, 0, 0, 0).all()
    assert (pattern_mask("random", n, 0, 0, 5).sum(dim=-1) == 5).all()


@pytest.mark.parametrize("pattern", list(PATTERN_NAMES))
def test_pattern_mask_extremes_do_not_fail(pattern):
    for n, w, g, r in [(16, 0, 0, 0), (16, 32, 16, 16), (256, 32, 16, 16), (16, 1, 20, 20)]:
        mask = pattern_mask(pattern, n, w, g, r)
        assert mask.shape == (n, n) and mask.dtype == torch.bool


def test_pattern_mask_rejects_unknown_patterns():
    with pytest.raises(ValueError, match="pattern"):
        pattern_mask("diagonal", 8, 1, 0, 0)


def test_reach_by_layer_matches_cost_reach():
    mask = masks.sliding_window_mask(20, 2) | masks.random_mask(20, 1, torch.Generator().manual_seed(0))
    layers = reach_by_layer(mask, 6)
    assert layers.shape == (7, 20, 20)
    for k in range(7):
        assert torch.equal(layers[k], cost.reach(mask, k))


# --------------------------------------------------------------------------- pattern view


def test_pattern_view_numbers_match_the_mask():
    view = PatternView()
    state = view.update(pattern="local", n=64, window=4, n_global=0, n_random=0)
    assert int(state["entries"]) == cost.entries("local", 64, window=4)
    assert float(state["density"]) == pytest.approx(cost.entries("local", 64, window=4) / 64**2)
    assert int(state["flops"]) == cost.flops(int(state["entries"]), 64)
    assert int(state["bytes"]) == 4 * int(state["entries"])
    assert "N = 64" in view.numbers.get_text()


def test_pattern_static_figure():
    fig = PatternView().figure_at()
    assert fig.axes and PatternView.defaults["pattern"] == "bigbird"


def test_pattern_explorer_every_control_changes_the_picture():
    explorer = pattern_explorer()
    assert finite(explorer.state)
    for name, values in [("n", [16, 256, 64]), ("window", [0, 32, 7]),
                         ("n_global", [0, 16, 3]), ("n_random", [0, 16, 5])]:
        for value in values:
            before_img, before = explorer.image.value, explorer.state["mask"].clone()
            explorer.controls[name].value = value
            assert finite(explorer.state), (name, value)
            assert explorer.image.value != before_img, (name, value)
            assert not torch.equal(explorer.state["mask"], before) or name == "n_random"
    for pattern in PATTERN_NAMES:
        explorer.controls["pattern"].value = pattern
        assert finite(explorer.state)
        mask = explorer.state["mask"]
        assert float(explorer.state["density"]) == pytest.approx(mask.sum().item() / mask.numel())


# --------------------------------------------------------------------------- receptive field


def test_receptive_field_numbers():
    view = ReceptiveFieldView()
    state = view.update(layers=3, window=2, n_global=1)
    n = ReceptiveFieldView.N
    assert int(state["hops_local"]) == -(-(n - 1) // 2)
    assert int(state["hops_global"]) == 2
    assert float(state["share_global"][2]) == 1.0
    assert torch.equal(state["reach_local"], cost.reach(masks.sliding_window_mask(n, 2), 3))


def test_receptive_field_without_global_tokens_equals_local():
    state = ReceptiveFieldView().update(layers=5, window=3, n_global=0)
    assert torch.equal(state["share_local"], state["share_global"])
    assert int(state["hops_local"]) == int(state["hops_global"])


def test_receptive_field_explorer_sliders_and_extremes():
    explorer = receptive_field_explorer()
    assert finite(explorer.state)
    for name, values in [("layers", [0, 32, 1]), ("window", [1, 16, 3]), ("n_global", [0, 4, 2])]:
        for value in values:
            before = explorer.image.value
            explorer.controls[name].value = value
            assert finite(explorer.state), (name, value)
            assert explorer.image.value != before, (name, value)
    # the depth is pre-rendered: only the 6 moves of the other sliders redrew (all frames)
    assert explorer.n_renders == 1 + 6
    assert len(explorer.frames.children) == ReceptiveFieldView.MAX_LAYERS + 1
    assert explorer.image is explorer.frames.children[explorer.controls["layers"].value]
