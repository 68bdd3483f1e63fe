"""solutions/ -> chapters/: stubs, dropped cells, cleared outputs, and student work kept safe."""

from __future__ import annotations

import subprocess
import sys

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from utils import authoring

SOLUTION_CELL = """def f(x):
    '''Double x.'''
    ### BEGIN SOLUTION
    y = 2 * x
    return y
    ### END SOLUTION

print(f(2))"""


def _solution_notebook() -> nbformat.NotebookNode:
    code = new_code_cell(SOLUTION_CELL, execution_count=3,
                         outputs=[new_output("stream", name="stdout", text="4\n")])
    dropped = new_code_cell("print('only for instructors')", metadata={"tags": ["solution"]})
    answer = new_markdown_cell("Why?\n### BEGIN SOLUTION\nBecause.\n### END SOLUTION")
    nb = new_notebook(cells=[new_markdown_cell("# Title"), code, dropped, answer])
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    return nb


def test_student_version_stubs_solutions_and_clears_outputs():
    student = authoring.student_version(_solution_notebook())
    assert len(student.cells) == 3  # the `solution`-tagged cell is dropped
    code = student.cells[1]
    assert code.source == (
        "def f(x):\n    '''Double x.'''\n    # YOUR CODE HERE\n    raise NotImplementedError\n\n"
        "print(f(2))"
    )
    assert code.outputs == [] and code.execution_count is None
    assert "Because" not in student.cells[2].source and "YOUR ANSWER HERE" in student.cells[2].source
    assert "widgets" not in student.metadata


def test_stub_raises_only_when_called():
    source = authoring.strip_solutions(SOLUTION_CELL.replace("print(f(2))", ""))
    namespace: dict = {}
    exec(source, namespace)  # defining the function is fine
    with pytest.raises(NotImplementedError):
        namespace["f"](1)


def test_unbalanced_markers_are_an_error():
    with pytest.raises(authoring.AuthoringError, match="unbalanced"):
        authoring.strip_solutions("### BEGIN SOLUTION\nx = 1\n")


@pytest.fixture
def course(tmp_path):
    solutions, chapters = tmp_path / "solutions", tmp_path / "chapters"
    solutions.mkdir()
    nbformat.write(_solution_notebook(), solutions / "01-demo.ipynb")
    return solutions, chapters


def test_build_then_check_is_clean(course):
    solutions, chapters = course
    assert authoring.check(solutions, chapters) == [f"{chapters / '01-demo.ipynb'}: missing"]
    assert authoring.build(solutions, chapters) == ["01-demo.ipynb"]
    assert authoring.check(solutions, chapters) == []
    assert authoring.build(solutions, chapters) == []  # nothing to do the second time


def test_check_notices_a_changed_solution(course):
    solutions, chapters = course
    authoring.build(solutions, chapters)
    nb = nbformat.read(solutions / "01-demo.ipynb", as_version=4)
    nb.cells.append(new_markdown_cell("new text"))
    nbformat.write(nb, solutions / "01-demo.ipynb")
    assert "differs from its solution" in authoring.check(solutions, chapters)[0]
    assert authoring.build(solutions, chapters) == ["01-demo.ipynb"]  # unchanged chapter: updated


def test_build_refuses_to_overwrite_student_work(course):
    solutions, chapters = course
    authoring.build(solutions, chapters)
    chapter = chapters / "01-demo.ipynb"
    worked = chapter.read_text().replace("raise NotImplementedError", "return 2 * x")
    chapter.write_text(worked)
    nb = nbformat.read(solutions / "01-demo.ipynb", as_version=4)
    nb.cells.append(new_markdown_cell("an update from the authors"))
    nbformat.write(nb, solutions / "01-demo.ipynb")
    with pytest.raises(authoring.AuthoringError, match=r"01-demo\.ipynb.*changed since"):
        authoring.build(solutions, chapters)
    assert chapter.read_text() == worked  # untouched


def test_force_overwrites_after_a_backup(course):
    solutions, chapters = course
    authoring.build(solutions, chapters)
    chapter = chapters / "01-demo.ipynb"
    worked = chapter.read_text().replace("raise NotImplementedError", "return 2 * x")
    chapter.write_text(worked)
    authoring.build(solutions, chapters, force=True)
    backups = list(chapters.glob("01-demo.backup-*.ipynb"))
    assert len(backups) == 1 and backups[0].read_text() == worked
    assert "raise NotImplementedError" in chapter.read_text()
    assert authoring.check(solutions, chapters) == []


def test_the_repository_chapters_are_up_to_date():
    """``python -m utils.authoring check`` exits 0 on the repository."""
    run = subprocess.run([sys.executable, "-m", "utils.authoring", "check"], capture_output=True,
                         text=True, cwd=authoring.ROOT)
    assert run.returncode == 0, run.stderr


def test_clean_solution_makes_outputs_stable():
    widget = new_output("execute_result", execution_count=1, data={
        "text/plain": "SomeView explorer: run the notebook to interact",
        authoring.WIDGET_VIEW: {"model_id": "3f2a", "version_major": 2, "version_minor": 0}})
    cell = new_code_cell("x", outputs=[new_output("stream", name="stdout", text="a\n"),
                                       new_output("stream", name="stdout", text="b\n"), widget])
    nb = new_notebook(cells=[cell])
    nb.metadata["widgets"] = {"state": {}}
    cell.metadata["execution"] = {"iopub.execute_input": "2026-01-01"}
    out = authoring.clean_solution(nb).cells[0]
    assert [o.output_type for o in out.outputs] == ["stream", "execute_result"]
    assert out.outputs[0].text == "a\nb\n"
    assert set(out.outputs[1].data) == {"text/plain"}
    assert "widgets" not in nb.metadata and "execution" not in out.metadata


def test_slide_types_put_figures_and_explorers_on_sub_slides_of_their_own():
    from utils.authoring import slide_types

    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    nb = nbformat.v4.new_notebook(cells=[
        md("## A section"),                                    # slide
        md("Some text."),                                      # continues
        code("show_heatmaps(A)\nplt.show()"),                  # continues: the figure
        md("What the figure shows."),                          # after a figure: sub-slide
        code("print(1)"),                                      # continues
        code("views.SomeView(ex).figure_at(t=1)"),             # static view of the explorer: skipped
        md("Move the slider:"),                                # introduces an explorer: sub-slide
        code("views.some_explorer(ex, t=1)"),                  # continues (no metadata)
        md("After the widget."),                               # after an explorer: sub-slide
        md("### A sub-section"),                               # sub-slide
    ])
    assert slide_types(nb) == ["slide", "-", "-", "subslide", "-", "skip", "subslide", "-",
                               "subslide", "subslide"]
