"""Structure of every notebook: what nbval does not check."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from utils.authoring import BEGIN, END, slide_types

ROOT = Path(__file__).resolve().parents[1]
NAMES = [
    "01-self-attention",
    "02-cross-attention",
    "03-multi-head-attention",
    "04-causal-attention",
    "05-sparse-attention",
    "06-score-functions",
    "07-soft-vs-hard-attention",
]
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]-*.ipynb"))
ALL = SOLUTIONS + CHAPTERS
IMG_HTML = re.compile(r"<img\b[^>]*>", re.IGNORECASE)
IMG_MD = re.compile(r"!\[(?P<alt>[^\]]*)\]\((?P<src>[^)\s]+)")
LINK = re.compile(r"""(?:href=["']|\]\()(?P<target>[^"')#\s]+\.(?:ipynb|md))""")


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _ids(paths):
    return [f"{p.parent.name}/{p.name}" for p in paths]


def _code(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def test_notebook_names_are_the_course_chapters():
    for path in ALL:
        assert path.stem in NAMES, f"{path} is not one of the course's chapter names"
    assert {p.name for p in CHAPTERS} == {p.name for p in SOLUTIONS}


@pytest.mark.parametrize("path", ALL, ids=_ids(ALL))
def test_kernelspec_and_no_widget_state(path):
    nb = _read(path)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert "widgets" not in nb.metadata, "widget state must not be saved in a notebook"


@pytest.mark.parametrize("path", ALL, ids=_ids(ALL))
def test_first_code_cell_prints_versions_and_seeds(path):
    first = _code(_read(path))[0].source
    assert "from utils.notebook import start" in first and re.search(r"start\(seed=\d+\)", first)


@pytest.mark.parametrize("path", CHAPTERS, ids=_ids(CHAPTERS))
def test_chapters_have_no_outputs_and_no_solutions(path):
    for cell in _read(path).cells:
        assert BEGIN not in cell.source and END not in cell.source
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


@pytest.mark.parametrize("path", SOLUTIONS, ids=_ids(SOLUTIONS))
def test_solutions_are_executed_without_errors_or_warnings(path):
    cells = _code(_read(path))
    counts = [c.execution_count for c in cells]
    assert None not in counts, "the solution notebook must be executed (outputs committed)"
    assert counts == sorted(counts), "run the notebook top to bottom"
    for cell in cells:
        for out in cell.outputs:
            assert out.output_type != "error", f"error output in cell {cell.get('id')}"
            assert not (out.output_type == "stream" and out.name == "stderr"), (
                f"stderr (a warning?) in cell {cell.get('id')}: {out.text[:200]}"
            )


@pytest.mark.parametrize("path", SOLUTIONS, ids=_ids(SOLUTIONS))
def test_every_exercise_has_a_check_right_after_it(path):
    cells = _read(path).cells
    exercises = [i for i, c in enumerate(cells) if c.cell_type == "code" and BEGIN in c.source]
    assert len(exercises) >= 3, "each chapter has at least three exercises"
    for i in exercises:
        after = cells[i + 1]
        assert after.cell_type == "code" and "check" in after.source, (
            f"the exercise in cell {cells[i].get('id')} needs a check cell right after it"
        )


@pytest.mark.parametrize("path", ALL, ids=_ids(ALL))
def test_images_exist_and_have_alt_text(path):
    for cell in _read(path).cells:
        if cell.cell_type != "markdown":
            continue
        for tag in IMG_HTML.findall(cell.source):
            src = re.search(r'src="([^"]+)"', tag).group(1)
            alt = re.search(r'alt="([^"]*)"', tag)
            assert alt and len(alt.group(1).strip()) >= 10, f"{tag[:80]}: needs real alt text"
            _assert_local_image(path, src)
        for m in IMG_MD.finditer(cell.source):
            assert len(m.group("alt").strip()) >= 10, f"{m.group(0)}: needs real alt text"
            _assert_local_image(path, m.group("src"))


def _assert_local_image(notebook: Path, src: str) -> None:
    assert not src.startswith(("http:", "https:", "//")), f"{src}: no hot-linked images"
    target = (notebook.parent / src).resolve()
    assert target.parent == ROOT / "images", f"{src}: images live in images/"
    assert target.is_file(), f"{src}: no such image"


@pytest.mark.parametrize("path", ALL, ids=_ids(ALL))
def test_links_point_to_real_files_and_navigation_is_complete(path):
    text = "\n".join(c.source for c in _read(path).cells if c.cell_type == "markdown")
    targets = [m.group("target") for m in LINK.finditer(text)]
    for target in targets:
        assert (path.parent / target).resolve().is_file(), f"{path.name}: broken link {target}"
    index = NAMES.index(path.stem)
    if index > 0:
        assert f"{NAMES[index - 1]}.ipynb" in targets, "missing the link to the previous chapter"
    if index < len(NAMES) - 1:
        assert f"{NAMES[index + 1]}.ipynb" in targets, "missing the link to the next chapter"
    assert "../README.md" in targets, "missing the link back to the main page"


@pytest.mark.parametrize("path", ALL, ids=_ids(ALL))
def test_every_cell_carries_slideshow_metadata(path):
    """Live slides: ``##`` starts a slide, ``###`` a sub-slide, set-up and long code skipped,
    figures and explorers on sub-slides of their own (``utils.authoring.slide_types``)."""
    nb = _read(path)
    cells = nb.cells
    for cell, expected in zip(cells, slide_types(nb), strict=True):
        if expected == "-":  # continuation: no metadata (jupyterlab-slideshow hides an explicit "-")
            assert "slideshow" not in cell.metadata, f"cell {cell.get('id')}: drop its slideshow metadata"
        else:
            assert cell.metadata.get("slideshow", {}).get("slide_type") == expected, (
                f"cell {cell.get('id')}: run python -m utils.authoring execute (or build)"
            )
    assert cells[0].metadata["slideshow"]["slide_type"] == "slide"


@pytest.mark.parametrize("path", ALL, ids=_ids(ALL))
def test_nbval_markers_are_spelled_so_nbval_sees_them(path):
    """nbval reads a marker only when the comment is the marker alone: ``# NBVAL_IGNORE_OUTPUT
    (why)`` is silently not a marker, and the cell's output is compared after all."""
    for cell in _read(path).cells:
        for line in cell.source.splitlines():
            comment = line.strip()
            if comment.startswith("#") and "NBVAL_" in comment:
                assert comment.lstrip("#").strip() in {
                    "NBVAL_IGNORE_OUTPUT", "NBVAL_CHECK_OUTPUT", "NBVAL_RAISES_EXCEPTION",
                    "NBVAL_SKIP"}, f"cell {cell.get('id')}: {comment!r} is not a marker nbval reads"
