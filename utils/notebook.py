"""The first code cell of every chapter: versions, seeds, print options."""

from __future__ import annotations

import platform
import random

import ipywidgets
import matplotlib
import numpy as np
import torch

__all__ = ["start"]


def start(seed: int = 0) -> torch.Generator:
    """Seed every generator, fix print precision and show the library versions.

    Returns a ``torch.Generator`` seeded with ``seed``, for code that wants its own.
    """
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - students may use the legacy global generator
    torch.manual_seed(seed)
    torch.set_printoptions(precision=3, sci_mode=False, linewidth=100)
    np.set_printoptions(precision=3, suppress=True, linewidth=100)
    python = ".".join(platform.python_version_tuple()[:2])
    print(f"Python {python} | torch {torch.__version__.split('+')[0]} | numpy {np.__version__} | "
          f"matplotlib {matplotlib.__version__} | ipywidgets {ipywidgets.__version__} | "
          f"seed {seed}")
    return torch.Generator().manual_seed(seed)
