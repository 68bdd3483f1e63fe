"""Notebooks students save and open again, and a control whose range changes.

* A student chapter run, saved, and opened again with a new kernel (the old one is gone):
  no "Error displaying widget" anywhere; in each explorer's place the line that says to
  rerun the cell, under its static figure.
* Chapter 3: after the number of heads goes from 3 to 12, the End key takes the head slider
  to head 11 (a slider whose options change kept its first range for End).
"""

from __future__ import annotations

import json
import shutil

import pytest

from tools.lab import count_explorers, notebooks

CHAPTERS = notebooks("chapters")
SOLUTIONS = {p.stem[:2]: p for p in notebooks("solutions")}


@pytest.mark.skipif(not CHAPTERS, reason="no student notebook")
def test_a_saved_chapter_opened_again_shows_the_rerun_line_not_an_error(notebook, lab):
    chapter = CHAPTERS[0]
    copy = f"chapters/{chapter.stem}-saved.ipynb"  # the other tests keep the original
    shutil.copy(lab.root / "chapters" / chapter.name, lab.root / copy)
    notebook.open(copy)
    notebook.run_all()
    expected = count_explorers(SOLUTIONS[chapter.stem[:2]])
    notebook.widgets(expected)
    shown = notebook.page.locator(".course-rerun").evaluate_all(
        "ls => ls.filter(l => l.checkVisibility()).length")
    assert shown == 0, "the rerun line shows while the widgets are live"
    notebook.command("docmanager:save")
    notebook.page.wait_for_function(
        "() => !window.jupyterapp.shell.currentWidget.context.model.dirty")
    saved = json.loads((lab.root / copy).read_text())
    assert "widgets" not in saved["metadata"], "no widget state is saved"

    lab.shutdown_kernels()  # as when the student comes back another day
    notebook.page.reload()
    notebook.page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell")
    notebook.wait_idle()  # a new kernel: the widgets' models are gone
    notebook.page.wait_for_function(  # the widget manager has given up on them
        "() => [...document.querySelectorAll('.jp-OutputArea-output')]"
        ".some(o => o.textContent.includes('model not found'))")
    errors = notebook.page.evaluate("""() => [...document.querySelectorAll('.jp-OutputArea-output')]
        .filter(o => o.textContent.includes('Error displaying widget') && o.checkVisibility())
        .map(o => o.textContent)""")
    assert errors == [], f"visible widget errors after opening the saved notebook: {errors}"
    lines = notebook.page.locator(".course-rerun").evaluate_all(
        "ls => ls.filter(l => l.checkVisibility()).map(l => l.textContent)")
    assert len(lines) == expected > 0 and all("rerun this cell" in t for t in lines)
    # the static figure is shown above each line: the image output of an earlier cell
    above = notebook.page.locator(".course-rerun").evaluate_all("""ls => ls.map(l => {
        const cells = [...document.querySelectorAll('.jp-Notebook .jp-Cell')];
        const i = cells.indexOf(l.closest('.jp-Cell'));
        return cells.slice(Math.max(0, i - 3), i).some(c => c.querySelector('.jp-RenderedImage img'));
    })""")
    assert all(above), "an explorer without its static figure just above"


@pytest.mark.skipif("03" not in SOLUTIONS, reason="no chapter 3")
def test_head_slider_reaches_the_last_head_after_the_head_count_changes(notebook):
    notebook.open(f"solutions/{SOLUTIONS['03'].name}")
    notebook.run_all()
    widgets = notebook.widgets(count_explorers(SOLUTIONS["03"]))
    (widget,) = [w for w in widgets if w.locator(".widget-dropdown", has_text="heads").count()]
    widget.scroll_into_view_if_needed()
    notebook.wait_frames_ready(widget)
    (heads,) = [s for label, s in notebook.dropdowns(widget) if "heads" in label]

    def head():
        ((_, handle),) = [(lb, h) for lb, h in notebook.sliders(widget) if lb == "head"]
        return handle

    for h in ("12", "3", "12"):
        notebook.change(widget, lambda h=h: heads.select_option(label=h))
        notebook.wait_frames_ready(widget)
        assert float(head().get_attribute("aria-valuemax")) == int(h) - 1
        before, after = notebook.change(widget, lambda: head().press("End"))
        assert float(head().get_attribute("aria-valuenow")) == int(h) - 1, (
            f"End stops at head {head().get_attribute('aria-valuenow')} of {h}")
        readout = head().locator("xpath=ancestor::div[contains(@class, 'widget-slider')][1]")
        assert readout.locator(".widget-readout").inner_text().strip() == str(int(h) - 1)
        assert before != after, "the last head's frame is shown"
    assert notebook.errors() == [] and notebook.page_errors == []
