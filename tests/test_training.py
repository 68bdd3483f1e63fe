"""The training loop: deterministic per seed, leaves global RNG alone, learns, clear errors."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch

from utils import plotting, training


def _regression():
    """y = x @ w_true: a linear model must reach ~0 loss."""
    w_true = torch.tensor([[1.0], [-2.0], [0.5]])

    def batch_fn(g):
        x = torch.randn(32, 3, generator=g)
        return x, x @ w_true

    def loss_fn(model, batch):
        x, y = batch
        return torch.nn.functional.mse_loss(model(x), y)

    def eval_fn(model):
        return {"error": (model.weight.T - w_true).abs().max().item()}

    return batch_fn, loss_fn, eval_fn


def _fit(seed=0, **kwargs):
    batch_fn, loss_fn, eval_fn = _regression()
    kwargs = {"steps": 200, "lr": 0.05, "eval_fn": eval_fn, **kwargs}
    return training.train(lambda: torch.nn.Linear(3, 1, bias=False), batch_fn, loss_fn, seed=seed, **kwargs)


def test_learns_and_records_curves():
    run = _fit()
    h = run.history
    assert len(h.loss) == 200 and h.loss[-1] < 1e-3 < h.loss[0]
    assert h.eval_steps[0] == 0 and h.eval_steps[-1] == 200 and len(h.metrics["error"]) == len(h.eval_steps)
    assert h.final("error") < 0.05 < h.metrics["error"][0]
    assert not run.model.training  # handed back in eval mode


def test_same_seed_same_run_other_seed_other_run():
    a, b, c = _fit(seed=3), _fit(seed=3), _fit(seed=4)
    assert a.history.loss == b.history.loss
    assert torch.equal(a.model.weight, b.model.weight)
    assert a.history.loss != c.history.loss


def test_global_random_state_is_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _fit(steps=5)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_optimizers_from_torch_optim(optimizer):
    run = _fit(optimizer=optimizer, lr=0.05 if optimizer != "sgd" else 0.1, steps=300)
    assert run.history.loss[-1] < 0.01


def test_train_seeds_runs_each_seed():
    batch_fn, loss_fn, _ = _regression()
    runs = training.train_seeds(range(3), lambda: torch.nn.Linear(3, 1), batch_fn, loss_fn, steps=5)
    assert [r.history.seed for r in runs] == [0, 1, 2]
    with pytest.raises(ValueError, match="seeds is empty"):
        training.train_seeds([], lambda: torch.nn.Linear(3, 1), batch_fn, loss_fn, steps=5)


def test_bad_arguments_and_diverging_loss():
    batch_fn, loss_fn, _ = _regression()
    model = lambda: torch.nn.Linear(3, 1)  # noqa: E731
    with pytest.raises(ValueError, match="steps"):
        training.train(model, batch_fn, loss_fn, steps=0)
    with pytest.raises(ValueError, match="optimizer"):
        training.train(model, batch_fn, loss_fn, steps=1, optimizer="adagrad")
    with pytest.raises(TypeError, match="model_fn"):
        training.train(lambda: 3, batch_fn, loss_fn, steps=1)
    with pytest.raises(ValueError, match="scalar"):
        training.train(model, batch_fn, lambda m, b: m(b[0]), steps=1)
    with pytest.raises(ValueError, match="step 0"):
        training.train(model, batch_fn, lambda m, b: m(b[0]).sum() * float("inf"), steps=1)
    with pytest.raises(KeyError, match="recorded"):
        _fit(steps=2).history.final("accuracy")


def test_learning_curves_plot_mean_and_band():
    runs = [_fit(seed=s, steps=20) for s in range(3)]
    ax = plotting.learning_curves({"linear": runs, "one seed": runs[0]})
    assert len(ax.lines) == 2 and len(ax.collections) == 1  # a band only for several seeds
    assert ax.get_yscale() == "log"
    ax2 = plotting.learning_curves({"linear": runs}, metric="error", logy=False)
    assert list(ax2.lines[0].get_xdata()) == runs[0].history.eval_steps
    with pytest.raises(KeyError, match="accuracy"):
        plotting.learning_curves({"x": runs}, metric="accuracy")
    plt.close("all")


def test_threads_are_set_while_training_and_restored():
    before = torch.get_num_threads()
    seen = []

    def batch_fn(g):
        seen.append(torch.get_num_threads())
        return _regression()[0](g)

    training.train(lambda: torch.nn.Linear(3, 1, bias=False), batch_fn, _regression()[1], steps=2)
    assert seen == [1, 1] and torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"):
        _fit(steps=1, threads=0)
