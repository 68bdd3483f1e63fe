"""Chapter 5's checks: each accepts a correct answer and names each known bug."""

from __future__ import annotations

import math

import pytest
import torch

from utils import attention
from utils.checks import sparse as ex
from utils.masks import sliding_window_mask


def _not_attempted(*args, **kwargs):
    raise NotImplementedError


# --------------------------------------------------------------------------- sliding-window mask


def band(rule):
    def fn(n, window):
        i = torch.arange(n)
        return rule(i[:, None] - i[None, :], window)

    return fn


def test_window_pairs_formula_counts_the_mask():
    for n in range(1, 12):
        for w in range(0, 14):
            assert ex.window_pairs(n, w) == int(sliding_window_mask(n, w).sum())


def test_sliding_window_accepts_a_correct_mask(capsys):
    result = ex.check_sliding_window_mask(band(lambda d, w: d.abs() <= w))
    assert result.status == "pass" and result.diagnosis is None
    assert "✅" in capsys.readouterr().out


@pytest.mark.parametrize("key, buggy", [
    ("off_by_one_narrow", band(lambda d, w: d.abs() < w)),
    ("off_by_one_wide", band(lambda d, w: d.abs() <= w + 1)),
    ("causal_only", band(lambda d, w: (d >= 0) & (d <= w))),
    ("future_only", band(lambda d, w: (d <= 0) & (d >= -w))),
    ("no_diagonal", band(lambda d, w: (d.abs() <= w) & (d != 0))),
    ("wrong_dtype", band(lambda d, w: (d.abs() <= w).float())),
    ("wrong_shape", band(lambda d, w: (d.abs() <= w)[:-1])),
    ("raised", band(lambda d, w: d.abs() <= undefined_name)),  # noqa: F821
])
def test_sliding_window_diagnoses(key, buggy, capsys):
    result = ex.check_sliding_window_mask(buggy)
    assert result.status == "fail"
    assert result.diagnosis == key
    out = capsys.readouterr().out
    assert "❌" in out
    if key.startswith("off_by_one") or key == "causal_only":
        assert "n(2w+1) − w(w+1) = 34" in out  # the pair count of the first case, n=8, w=2


def test_sliding_window_not_attempted():
    assert ex.check_sliding_window_mask(_not_attempted).status == "not attempted"


# --------------------------------------------------------------------------- BigBird


def bigbird(*, window=True, cols=True, rows=True, sampler="distinct", skip_global_rows=True,
            extra=0):
    """A BigBird mask builder with switchable mistakes."""

    def fn(n, w, global_tokens, n_random, generator=None):
        i = torch.arange(n)
        mask = ((i[:, None] - i[None, :]).abs() <= w) if window else torch.eye(n, dtype=torch.bool)
        g = torch.tensor(global_tokens)
        if rows:
            mask[g, :] = True
        if cols:
            mask[:, g] = True
        for q in range(n):
            if skip_global_rows and q in global_tokens:
                continue
            if sampler == "distinct":
                unseen = (~mask[q]).nonzero().flatten()
                pick = unseen[torch.randperm(len(unseen), generator=generator)[:n_random + extra]]
            elif sampler == "randint":  # duplicates possible
                unseen = (~mask[q]).nonzero().flatten()
                pick = unseen[torch.randint(len(unseen), (n_random,), generator=generator)]
            elif sampler == "anywhere":  # distinct, but may land in the window
                pick = torch.randperm(n, generator=generator)[:n_random]
            else:  # "fixed": the same keys whatever the generator
                unseen = (~mask[q]).nonzero().flatten()
                pick = unseen[:n_random]
            mask[q, pick] = True
        return mask

    return fn


def test_bigbird_accepts_the_reference_and_a_correct_mask():
    assert ex.check_bigbird_mask(ex._bigbird_mask).status == "pass"
    assert ex.check_bigbird_mask(bigbird()).status == "pass"


def test_reference_bigbird_follows_the_rules():
    n, w, g, r = 64, 2, [0, 1], 3
    mask = ex.reference_bigbird_mask(n, w, g, r, generator=torch.Generator().manual_seed(0))
    assert mask[:, g].all() and mask[g, :].all()
    assert mask[sliding_window_mask(n, w)].all()
    # every non-global row: window + 2 global columns (minus overlap) + exactly r more
    seen = sliding_window_mask(n, w)
    seen[:, g] = True
    assert ((mask & ~seen)[2:].sum(dim=-1) == r).all()


@pytest.mark.parametrize("key, buggy", [
    ("missing_window", bigbird(window=False)),
    ("missing_global_columns", bigbird(cols=False)),
    ("missing_global_rows", bigbird(rows=False)),
    ("random_not_distinct", bigbird(sampler="randint")),
    ("random_not_distinct", bigbird(sampler="anywhere")),
    ("too_many_random", bigbird(extra=1)),
    ("not_random", bigbird(sampler="fixed")),
    ("wrong_shape", lambda n, w, g, r, generator=None: torch.zeros(n, n + 1, dtype=torch.bool)),
    ("wrong_dtype", lambda n, w, g, r, generator=None: torch.ones(n, n)),
    ("raised", lambda n, w, g, r, generator=None: 1 / 0),
])
def test_bigbird_diagnoses(key, buggy, capsys):
    result = ex.check_bigbird_mask(buggy)
    assert result.status == "fail"
    assert result.diagnosis == key
    assert "❌" in capsys.readouterr().out


def test_bigbird_not_attempted():
    assert ex.check_bigbird_mask(_not_attempted).status == "not attempted"


# --------------------------------------------------------------------------- blockwise attention


def blockwise(*, neighbours=(-1, 0, 1), band_mask=True, scale=True):
    """Blockwise sliding-window attention with switchable mistakes."""

    def fn(q, k, v, window, block):
        n = q.shape[-2]
        out = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
        for start in range(0, n, block):
            keys = torch.cat([torch.arange(s, s + block) for s in
                              (start + o * block for o in neighbours) if 0 <= s < n])
            rows = torch.arange(start, start + block)
            scores = q[..., rows, :] @ k[..., keys, :].transpose(-2, -1)
            if scale:
                scores = scores / math.sqrt(q.shape[-1])
            if band_mask:
                allowed = (rows[:, None] - keys[None, :]).abs() <= window
                scores = scores.masked_fill(~allowed, float("-inf"))
            out[..., rows, :] = torch.softmax(scores, dim=-1) @ v[..., keys, :]
        return out

    return fn


def test_blockwise_accepts_a_correct_answer():
    assert ex.check_blockwise_attention(blockwise()).status == "pass"


@pytest.mark.parametrize("key, buggy", [
    ("missing_previous_block", blockwise(neighbours=(0, 1))),
    ("missing_next_block", blockwise(neighbours=(-1, 0))),
    ("own_block_only", blockwise(neighbours=(0,))),
    ("no_mask_inside_blocks", blockwise(band_mask=False)),
    ("missing_scale", blockwise(scale=False)),
    ("wrong_shape", lambda q, k, v, w, b: q),
])
def test_blockwise_diagnoses(key, buggy):
    result = ex.check_blockwise_attention(buggy)
    assert result.status == "fail"
    assert result.diagnosis == key


def test_blockwise_not_attempted():
    assert ex.check_blockwise_attention(_not_attempted).status == "not attempted"


# --------------------------------------------------------------------------- near misses, generator


def test_sliding_window_two_too_wide_is_values_with_the_pair_count():
    result = ex.check_sliding_window_mask(band(lambda d, w: d.abs() <= w + 2))
    assert result.diagnosis == "values" and "allows 52 pairs" in result.message


@pytest.mark.parametrize("extra", [1, -1])
def test_blockwise_window_one_off_is_values_not_another_bug(extra):
    def off(q, k, v, window, block):
        return blockwise()(q, k, v, max(window + extra, 0), block)

    result = ex.check_blockwise_attention(off)
    assert result.diagnosis == "values" and "first at index" in result.message


def test_bigbird_must_draw_from_the_generator():
    def global_rng(n, w, g, r, generator=None):
        return ex._bigbird_mask(n, w, g, r)  # ignores the generator passed

    assert ex.check_bigbird_mask(global_rng).diagnosis == "ignores_generator"

    def own_seed(n, w, g, r, generator=None):  # a generator, but always the same seed
        return ex._bigbird_mask(n, w, g, r, generator=torch.Generator().manual_seed(0))

    assert ex.check_bigbird_mask(own_seed).diagnosis == "not_random"


def test_bigbird_random_keys_must_be_uniform():
    def nearest_unseen(n, w, global_tokens, n_random, generator=None):
        """Random, distinct, the right count, but biased: from the 2·n_random nearest unseen."""
        mask = sliding_window_mask(n, w)
        mask[global_tokens, :] = True
        mask[:, global_tokens] = True
        for q in range(n):
            if q in global_tokens:
                continue
            unseen = (~mask[q]).nonzero().flatten()
            near = unseen[(unseen - q).abs().argsort()[:2 * n_random]]
            mask[q, near[torch.randperm(len(near), generator=generator)[:n_random]]] = True
        return mask

    result = ex.check_bigbird_mask(nearest_unseen)
    assert result.diagnosis == "not_uniform", result.message


def test_bigbird_global_tokens_changed_in_place_is_named():
    def sorts(n, w, global_tokens, n_random, generator=None):
        global_tokens.append(global_tokens[0])
        return ex._bigbird_mask(n, w, global_tokens, n_random, generator=generator)

    result = ex.check_bigbird_mask(sorts)
    assert result.diagnosis == "mutated_input" and "`global_tokens`" in result.message


def test_bigbird_correct_answers_from_other_random_streams_pass():
    """The uniformity test must not fail a correct answer by bad luck: five other streams."""
    for skip in range(1, 6):
        def shifted(n, w, g, r, generator=None, skip=skip):
            torch.rand(skip, generator=generator)
            return ex._bigbird_mask(n, w, g, r, generator=generator)

        assert ex.check_bigbird_mask(shifted).status == "pass"

    def multinomial(n, w, global_tokens, n_random, generator=None):
        mask = sliding_window_mask(n, w)
        mask[global_tokens, :] = True
        mask[:, global_tokens] = True
        for q in range(n):
            if q not in global_tokens:
                unseen = (~mask[q]).nonzero().flatten()
                pick = torch.multinomial(torch.ones(len(unseen)), n_random, generator=generator)
                mask[q, unseen[pick]] = True
        return mask

    assert ex.check_bigbird_mask(multinomial).status == "pass"


# --------------------------------------------------------------------------- one utils call / dense


def _dense_utils(q, k, v, window, block):
    n = q.shape[-2]
    return attention.scaled_dot_product_attention(q, k, v, mask=sliding_window_mask(n, window))[0]


def _dense_by_hand(q, k, v, window, block):
    n = q.shape[-2]
    i = torch.arange(n)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill((i[:, None] - i[None, :]).abs() > window, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def _dense_torch_sdpa(q, k, v, window, block):
    n = q.shape[-2]
    i = torch.arange(n)
    band = (i[:, None] - i[None, :]).abs() <= window
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=band)


def _rows_against_all_keys(q, k, v, window, block):
    """Blocks of queries against *all* keys: no n x n tensor, but n^2 scores in all."""
    n = q.shape[-2]
    out = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
    i = torch.arange(n)
    for start in range(0, n, block):
        rows = i[start:start + block]
        scores = q[..., rows, :] @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        scores = scores.masked_fill((rows[:, None] - i[None, :]).abs() > window, float("-inf"))
        out[..., rows, :] = torch.softmax(scores, dim=-1) @ v
    return out


@pytest.mark.parametrize("dense", [_dense_by_hand, _dense_torch_sdpa, _rows_against_all_keys])
def test_blockwise_rejects_dense_masked_attention(dense):
    result = ex.check_blockwise_attention(dense)
    assert result.status == "fail" and result.diagnosis == "dense_scores", result.message


def test_blockwise_rejects_the_library():
    from utils.sparse import sliding_window_attention

    def one_call(q, k, v, window, block):
        return sliding_window_attention(q, k, v, window, block_size=block)

    for answer in (one_call, _dense_utils):
        result = ex.check_blockwise_attention(answer)
        assert result.status == "fail" and result.diagnosis == "used_library", result.message


def test_masks_reject_the_library():
    from utils import masks

    result = ex.check_sliding_window_mask(lambda n, window: masks.sliding_window_mask(n, window))
    assert result.diagnosis == "used_library", result.message
    result = ex.check_bigbird_mask(
        lambda n, window, g, r, generator=None: masks.bigbird_mask(n, window, g, r, generator))
    assert result.diagnosis == "used_library", result.message
    result = ex.check_bigbird_mask(
        lambda n, window, g, r, generator=None: ex.reference_bigbird_mask(n, window, g, r, generator))
    assert result.diagnosis == "used_library", result.message


# --------------------------------------------------------------------------- exercise 4: predict


def test_reach_prediction_is_what_runs():
    assert ex._predicted_reach() == ex._reach_outcome()
    assert ex.check_reach_prediction(ex._predicted_reach).status == "pass"
    assert ex.check_reach_prediction(_not_attempted).status == "not attempted"


@pytest.mark.parametrize(("change", "diagnosis"), [
    ({"local": 3}, "wrong_prediction"),             # one layer's reach
    ({"dilated": 12}, "wrong_prediction"),          # forgot the gap
    ({"odd": True}, "wrong_prediction"),            # odd offsets filled in by stacking
    ({"global_layers": 1}, "wrong_prediction"),
    ({"global_layers": 2.0}, "wrong_type"),
    ({"odd": 0}, "wrong_type"),
    ({"local": True}, "wrong_type"),
])
def test_reach_prediction_diagnoses(change, diagnosis):
    answer = {**ex._predicted_reach(), **change}
    result = ex.check_reach_prediction(lambda: dict(answer))
    assert result.diagnosis == diagnosis, result.message


def test_reach_prediction_refuses_computing():
    def computes():
        return ex._reach_outcome()

    assert ex.check_reach_prediction(computes).diagnosis == "used_library"
    assert ex.check_reach_prediction(lambda: [12, 24, False, 2]).diagnosis == "wrong_type"
    assert ex.check_reach_prediction(lambda: {"local": 12}).diagnosis == "wrong_output"
