"""Tiny attention models trained in the notebook, in seconds, deterministically.

The course's claims that attention *learns* something are shown by training, not asserted:
each chapter trains a model built from the course's own attention (``utils.attention``,
``utils.multihead``, ...) on data made in code, beside the hand-designed example.

* :func:`train` — a seeded loop on ``torch.optim`` (Adam by default): the same seed gives the
  same model, losses and metrics, and the caller's global random state is left untouched.
* :func:`train_seeds` — the same run for several seeds (claims must hold for every seed).
* :class:`Run` / :class:`History` — the trained model and its learning curve.
* :func:`utils.plotting.learning_curves` draws histories (mean line and min–max band).

One module per task holds its data and model (e.g. the chapter's own examples): see
``utils.training.<task>``.
"""

from .loop import History, Run, train, train_seeds

__all__ = ["History", "Run", "train", "train_seeds"]
