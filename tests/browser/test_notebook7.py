"""Chapters 1 and 7 in Jupyter Notebook 7 (``jupyter notebook``), which many students use:
the student notebook runs to the end, every widget renders as a widget (not its text
fallback) and answers a key press in one of its controls."""

from __future__ import annotations

import pytest

from tools.lab import FALLBACK, count_explorers, notebooks

SOLUTIONS = {p.stem[:2]: p for p in notebooks("solutions")}
CHAPTERS = [p for p in notebooks("chapters") if p.stem[:2] in ("01", "07") and p.stem[:2] in SOLUTIONS]


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_runs_in_notebook_7_and_its_widgets_answer(notebook7, path):
    notebook7.open(f"chapters/{path.name}")
    assert notebook7.page.locator("#jp-main-statusbar").count() == 0, "not Notebook 7's page"
    # Notebook 7.6.5 itself reports "Cannot read properties of undefined (reading 'schema')"
    # while it loads its settings, with no notebook of the course open (its settings
    # registry's pluginChanged handler): only errors from here on count
    notebook7.page_errors.clear()
    notebook7.run_all()
    assert notebook7.errors() == [], "error output after Run All"
    expected = count_explorers(SOLUTIONS[path.stem[:2]])
    widgets = notebook7.widgets(expected)
    assert len(widgets) == expected > 0
    assert FALLBACK not in notebook7.text(), "a widget shows its text fallback, not its view"
    for widget in widgets:
        notebook7.wait_frames_ready(widget)
    for i, widget in enumerate(widgets):
        widget.scroll_into_view_if_needed()
        assert notebook7.press_a_key(widget), f"widget {i} does not answer a key press"
    assert notebook7.errors() == [] and notebook7.page_errors == []
