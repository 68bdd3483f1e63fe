"""Chapter 5's trained claims (utils.training.longrange), for every seed 0-4.

Every position must output the first token (distance = position). With a window of w = 4:
one layer is at chance beyond distance w and right within it; L stacked layers are right up to
L·w and at chance beyond; dense attention and the window plus one global token (position 0)
are right at every distance in one layer.
"""

import pytest
import torch

from utils import cost
from utils.training import longrange as lr

SEEDS = range(5)  # also held for seeds 5-9 when written
GOOD, CHANCE_BOUND = 0.9, 0.2  # accuracy within reach; above chance (1/8) by far less than this
DIST = torch.arange(lr.LENGTH)


def _acc(pattern, layers, seed):
    return lr.accuracy_by_distance(lr.fit(pattern, layers, seed=seed).model)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("pattern", ["dense", "window+global"])
def test_one_layer_with_full_reach_is_right_at_every_distance(pattern, seed):
    acc = _acc(pattern, 1, seed)
    assert acc.min().item() > GOOD, (pattern, seed, acc)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("layers", [1, 2])
def test_window_layers_reach_exactly_l_times_w(layers, seed):
    acc = _acc("window", layers, seed)
    reach = layers * lr.WINDOW
    inside, outside = acc[DIST <= reach], acc[DIST > reach]
    assert inside.min().item() > GOOD, (layers, seed, acc)
    if outside.numel():
        assert outside.max().item() < CHANCE_BOUND, (layers, seed, acc)


def test_reach_matches_the_receptive_field():
    """The structural fact behind the claims: token 0 reaches position i after L layers iff i <= L·w."""
    mask = lr.pattern_mask("window")
    for layers in (1, 2, 3):
        assert cost.reach(mask, layers)[:, 0].tolist() == (DIST <= layers * lr.WINDOW).tolist()
    assert cost.reach(lr.pattern_mask("window+global"), 1)[:, 0].all()


def test_deterministic_and_leaves_threads_and_rng():
    threads = torch.get_num_threads()
    state = torch.random.get_rng_state()
    a = lr.fit("window", 1, seed=3, steps=10)
    b = lr.fit("window", 1, seed=3, steps=10)
    assert a.history.loss == b.history.loss
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.random.get_rng_state(), state)


def test_bad_pattern():
    with pytest.raises(ValueError, match="pattern must be one of"):
        lr.pattern_mask("strided")


def _weights(pattern, layers, seed):
    ids, _ = lr.evaluation_batch()
    model = lr.fit(pattern, layers, seed=seed).model
    with torch.no_grad():
        return model(ids)[1]


@pytest.mark.parametrize("seed", SEEDS)
def test_learned_weights_read_token_zero(seed):
    """The heatmaps' claims: with the global token, queries at distance > w put > 0.95 of their
    weight on key 0 (held >= 0.999 for seeds 0-9); in the two-layer window model, layer 1's
    queries 1..w put > 0.7 on key 0 (held >= 0.79 for seeds 0-9)."""
    (w_global,) = _weights("window+global", 1, seed)
    assert w_global[:, lr.WINDOW + 1:, 0].mean().item() > 0.95
    w1, _ = _weights("window", 2, seed)
    assert w1[:, 1:lr.WINDOW + 1, 0].mean().item() > 0.7
