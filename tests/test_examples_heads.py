"""Chapter 3's hand-designed heads do what the chapter says they do."""

import math

import pytest
import torch

from utils.examples.heads import (
    PATTERNS,
    heads_example,
    pattern_scores,
    pattern_targets,
    position_code,
)
from utils.examples.running import running_example


@pytest.fixture(scope="module")
def ex():
    return heads_example()


def _weights(ex, x=None):
    x = ex.x if x is None else x
    with torch.no_grad():
        return ex.module()(x[None], x[None], x[None])


def test_shapes_and_names(ex):
    n = len(ex.tokens)
    assert ex.x.shape == (n, 12) and ex.d_model == 12 and ex.n_heads == 3 and ex.d_head == 4
    assert len(ex.dims) == len(ex.value_names) == 12
    assert ex.tokens == running_example().tokens
    torch.testing.assert_close(ex.x[:, :7], running_example().x)  # chapter 1's features


def test_position_code_rotation_and_period():
    code = position_code(25)
    torch.testing.assert_close(code[12:24], code[:12], rtol=0, atol=1e-12)
    assert (code.abs() < 1e-12).sum() == (code == 0).sum()  # tiny values snapped to 0
    first_four = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(code[0], first_four)
    assert code[1, 0].item() == pytest.approx(math.cos(math.pi / 3))


def test_each_head_follows_its_pattern(ex):
    _, w = _weights(ex)
    scores = pattern_scores(w[0], ex)  # (heads, patterns)
    assert ex.head_names == PATTERNS
    for h in range(3):
        assert scores[h, h] > 0.9
        others = [scores[g, h] for g in range(3) if g != h]
        assert all(scores[h, h] > o + 0.5 for o in others)


def test_previous_token_head_argmax(ex):
    _, w = _weights(ex)
    top = w[0, 0].argmax(-1)
    assert top.tolist() == [0, *range(9)]  # the first token looks at itself


def test_reorder_moves_words_not_positions(ex):
    perm = torch.tensor([9, 8, 7, 6, 5, 4, 3, 2, 1, 0])
    x = ex.reorder(perm)
    pos = ex.position_dims
    torch.testing.assert_close(x[:, pos], ex.x[:, pos])
    words = [c for c in range(12) if c not in pos]
    torch.testing.assert_close(x[:, words], ex.x[perm][:, words])
    x0 = ex.reorder(perm, position_strength=0.0)
    assert (x0[:, pos] == 0).all()
    torch.testing.assert_close(x0, ex.inputs(0.0)[perm])  # no positions: a plain permutation


def test_without_positions_position_heads_are_uniform(ex):
    _, w = _weights(ex, ex.inputs(0.0))
    torch.testing.assert_close(w[0, 0], torch.full((10, 10), 0.1, dtype=torch.float64))
    torch.testing.assert_close(w[0, 2], torch.full((10, 10), 0.1, dtype=torch.float64))


def test_module_matches_the_matrices(ex):
    out, w = _weights(ex)
    q, k, v = ex.x @ ex.w_q + ex.b_q, ex.x @ ex.w_k, ex.x @ ex.w_v
    heads = []
    for h in range(3):
        s = slice(4 * h, 4 * h + 4)
        a = torch.softmax(q[:, s] @ k[:, s].T / 2.0, dim=-1)
        torch.testing.assert_close(w[0, h], a)
        heads.append(a @ v[:, s])
    torch.testing.assert_close(out[0], torch.cat(heads, -1) @ ex.w_o)
    assert ex.module(6).n_heads == 6


def test_pattern_targets_and_uniform_baseline(ex):
    t = pattern_targets(ex)
    assert t["previous token"].sum(-1).tolist() == [1] * 10
    assert t["start"][:, 0].all() and not t["start"][:, 1:].any()
    uniform = torch.full((10, 10), 0.1, dtype=torch.float64)
    base = pattern_scores(uniform, ex)
    assert base[0].item() == pytest.approx(0.1) and base[2].item() == pytest.approx(0.1)
