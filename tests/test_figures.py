"""images/ holds exactly what ``python -m utils.figures`` draws, byte for byte."""

from __future__ import annotations

from utils.figures import IMAGES, build_all


def test_figures_are_reproducible_and_committed(tmp_path):
    written = build_all(tmp_path)
    assert written, "no figure is registered"
    for path in written:
        committed = IMAGES / path.name
        assert committed.exists(), f"{committed} is missing: run python -m utils.figures"
        assert path.read_bytes() == committed.read_bytes(), (
            f"{committed} is out of date: run python -m utils.figures"
        )


def test_drawing_twice_gives_the_same_bytes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    build_all(a)
    build_all(b)
    for path in a.iterdir():
        assert path.read_bytes() == (b / path.name).read_bytes()
