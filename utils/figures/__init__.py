"""SVG diagrams for ``images/``, drawn by code and byte-for-byte reproducible.

Each chapter's diagrams live in a module of this package, registered with
``@figure("name.svg")``. ``python -m utils.figures`` redraws them all;
``tests/test_figures.py`` redraws them to a temporary folder and compares bytes.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path

import matplotlib as mpl
from matplotlib.figure import Figure

__all__ = ["FIGURES", "IMAGES", "build_all", "figure", "save_svg"]

IMAGES = Path(__file__).resolve().parents[2] / "images"
FIGURES: dict[str, Callable[[], Figure]] = {}
_RC = {"svg.hashsalt": "attention-hands-on", "svg.fonttype": "path", "font.family": "DejaVu Sans"}


def figure(filename: str):
    """Register a function returning a ``Figure`` as ``images/<filename>``."""
    if not filename.endswith(".svg"):
        raise ValueError(f"filename must end in .svg, got {filename!r}")

    def register(fn: Callable[[], Figure]) -> Callable[[], Figure]:
        if filename in FIGURES:
            raise ValueError(f"{filename} is registered twice")
        FIGURES[filename] = fn
        return fn

    return register


def save_svg(fig: Figure, path: Path) -> None:
    """Save ``fig`` as an SVG with no date and a fixed hash salt (same bytes every time)."""
    with mpl.rc_context(_RC):
        fig.savefig(path, format="svg", metadata={"Date": None})


def load_all() -> dict[str, Callable[[], Figure]]:
    """Import every figure module of this package; return the registry."""
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")
    return FIGURES


def build_all(out_dir: Path = IMAGES) -> list[Path]:
    """Draw every registered figure into ``out_dir``; return the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in sorted(load_all().items()):
        with mpl.rc_context(_RC):
            fig = make()
        save_svg(fig, out_dir / name)
        written.append(out_dir / name)
    return written
