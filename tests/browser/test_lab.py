"""The course in a real browser: JupyterLab + headless Chromium, driven like a student would.

For every solution notebook present: Run All finishes with no error output; every widget
is rendered (its view, not the text fallback); the frames of pre-rendered controls are
drawn once the kernel is idle and linked to their control in the browser; each slider
(keyboard on its handle: Home, End, then one step), dropdown, toggle and button changes
the pixels of the widget's image, and a Play button plays (a step at its click, the next
by itself) and stops; no "nan" is shown at the slider extremes. The first chapter's
student notebook: Run All finishes with "not attempted yet" checks and no error, and it
presents as a live deck (jupyterlab-slideshow) whose widget still works. Screenshots of
each chapter's first widget go to build/screenshots/.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tools.lab import FALLBACK, WIDGET_MIME, notebooks

SOLUTIONS = notebooks("solutions")
CHAPTERS = [p for p in notebooks("chapters") if (p.parent.parent / "solutions" / p.name).exists()]
NAN = re.compile(r"\bnan\b", re.IGNORECASE)


def n_explorers(solution: Path) -> int:
    """How many widgets the executed solution notebook shows: outputs with a widget view
    (stored as its text fallback, the widget state being stripped)."""
    cells = json.loads(solution.read_text())["cells"]
    datas = [out.get("data", {}) for c in cells if c["cell_type"] == "code"
             for out in c.get("outputs", [])]
    return sum(WIDGET_MIME in d or FALLBACK in "".join(d.get("text/plain", "")) for d in datas)


def _check_shown(widget, what: str) -> None:
    shown = widget.inner_text()
    assert not NAN.search(shown), f"{what}: the widget shows NaN: {shown!r}"


def _changed(nb, widget, action, what: str) -> bool:
    """Run ``action``; True if the widget's pixels changed. Checks for NaN text either way."""
    before, after = nb.change(widget, action)
    _check_shown(widget, what)
    return before != after


def _choosers(nb, widget) -> list[tuple[str, int, object, object]]:
    """``(name, number of options, choose(i), current())`` for each dropdown and toggle group."""
    out = []
    for label, select in nb.dropdowns(widget):
        out.append((f"dropdown {label!r}", select.locator("option").count(),
                    lambda i, s=select: s.select_option(index=i),
                    lambda s=select: s.evaluate("s => s.selectedIndex")))
    for label, group in nb.toggles(widget):
        buttons = group.locator("button")
        out.append((f"toggle {label!r}", buttons.count(), lambda i, b=buttons: b.nth(i).click(),
                    lambda b=buttons: b.evaluate_all(
                        "bs => bs.findIndex(b => b.classList.contains('mod-active'))")))
    return out


def exercise(nb, widget, where: str) -> int:
    """Drive every control of ``widget``; each must change its image (in some state of the
    widget's dropdowns: a control may only matter for some choices). Returns the number of
    controls."""
    pending: dict[str, object] = {}  # control -> a move to retry in other states

    for label, handle in nb.sliders(widget):
        what = f"{where}, slider {label!r}"
        changed = False
        if nb.at_extreme(handle) != "min":
            changed |= _changed(nb, widget, lambda h=handle: h.press("Home"), f"{what} at Home")
        changed |= _changed(nb, widget, lambda h=handle: h.press("End"), f"{what} at End")
        changed |= _changed(nb, widget, lambda h=handle: h.press("ArrowLeft"), f"{what} one step")
        if not changed:
            pending[what] = lambda h=handle: h.press("End" if nb.at_extreme(h) != "max" else "Home")
    choosers = _choosers(nb, widget)
    for name, n, choose, current in choosers:
        what = f"{where}, {name}"
        if n > 1:
            next_option = lambda c=choose, cur=current, n=n: c((cur() + 1) % n)  # noqa: E731
            if not _changed(nb, widget, next_option, what):
                pending[what] = next_option
    for label, box in nb.checkboxes(widget):
        what = f"{where}, checkbox {label!r}"
        if not _changed(nb, widget, box.click, what):
            pending[what] = box.click
    for label, button in nb.buttons(widget):
        what = f"{where}, button {label!r}"
        if not _changed(nb, widget, button.click, what):
            pending[what] = button.click
    for i, (play_pause, stop) in enumerate(nb.plays(widget)):
        what = f"{where}, Play {i}"
        nb.change(widget, stop.click)  # back to the first step
        assert _changed(nb, widget, play_pause.click, f"{what} (play)"), f"{what}: play did nothing"
        # it goes on by itself: the next step arrives with no action, after an interval
        assert _changed(nb, widget, lambda: nb.wait_for_new_image(widget), f"{what} (next step)")
        nb.change(widget, play_pause.click)  # pause
        assert _changed(nb, widget, stop.click, f"{what} (stop)"), f"{what}: stop did nothing"

    for name, n, choose, _ in choosers:  # retry what did nothing, in every other state
        for i in range(n):
            if not pending:
                break
            nb.change(widget, lambda c=choose, i=i: c(i))
            for what, move in list(pending.items()):
                if what.endswith(name):
                    continue
                if _changed(nb, widget, move, f"{what} (with {name} option {i})"):
                    del pending[what]
    assert not pending, f"never changed the widget's image: {', '.join(pending)}"
    return len(nb.sliders(widget)) + len(choosers) + len(nb.checkboxes(widget)) + len(
        nb.buttons(widget)) + len(nb.plays(widget))


@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.stem for p in SOLUTIONS])
def test_solution_notebook_runs_and_every_widget_responds(notebook, path, screenshots,
                                                          record_run_all):
    notebook.open(f"solutions/{path.name}")
    record_run_all(f"solutions/{path.name}", notebook.run_all())

    assert notebook.errors() == [], "error or stderr output after Run All"
    expected = n_explorers(path)
    widgets = notebook.widgets(expected)
    assert len(widgets) == expected, f"{len(widgets)} widgets rendered, the notebook has {expected}"
    assert FALLBACK not in notebook.text(), "a widget shows its text fallback, not its view"
    if widgets:
        widgets[0].scroll_into_view_if_needed()
        widgets[0].screenshot(path=screenshots / f"{path.stem}.png")
    for widget in widgets:  # the kernel draws the frames of pre-rendered controls once idle
        notebook.wait_frames_ready(widget)
    for i, widget in enumerate(widgets):
        widget.scroll_into_view_if_needed()
        assert exercise(notebook, widget, f"{path.stem} widget {i}") > 0, "a widget with no control"
    assert notebook.errors() == [], "error output after driving the widgets"
    assert notebook.page_errors == [], "JavaScript errors in the page"


@pytest.mark.skipif(not CHAPTERS, reason="no student notebook")
def test_student_notebook_runs_with_checks_not_attempted_and_presents_live(notebook,
                                                                           record_run_all):
    path = CHAPTERS[0]
    cells = json.loads(path.read_text())["cells"]
    n_checks = sum("checks.check_" in "".join(c["source"]) for c in cells if c["cell_type"] == "code")
    notebook.open(f"chapters/{path.name}")
    assert notebook.has_command("deck:start"), "jupyterlab-slideshow is not loaded"
    record_run_all(f"chapters/{path.name}", notebook.run_all())

    assert notebook.errors() == [], "error output in the student notebook after Run All"
    text = notebook.text()
    assert text.count("not attempted yet") == n_checks > 0
    widgets = notebook.widgets(n_explorers(path.parent.parent / "solutions" / path.name))
    assert FALLBACK not in text
    assert notebook.page_errors == [], "JavaScript errors in the page"

    if widgets:
        _live_deck_shows_a_working_widget(notebook, widgets[0], cells)


def _live_deck_shows_a_working_widget(notebook, widget, cells) -> None:
    """jupyterlab-slideshow: start the deck, go to the slide holding ``widget``, move a slider."""
    notebook.command("deck:start")
    notebook.page.wait_for_selector(".jp-NotebookPanel.jp-Deck .jp-deck-mod-onscreen")
    index = widget.evaluate("""el => window.jupyterapp.shell.currentWidget.content.widgets
                                 .findIndex(w => w.node === el.closest('.jp-Cell'))""")
    assert "slideshow" not in cells[index]["metadata"], (
        'a widget cell must continue its slide (no slide_type; an explicit "-" hides it in the deck)')
    notebook.select_cell_of(widget)  # the deck follows the active cell
    cell = widget.locator("xpath=ancestor::div[contains(@class, 'jp-CodeCell')]").first
    notebook.page.wait_for_function("c => c.classList.contains('jp-deck-mod-onscreen')",
                                    arg=cell.element_handle())
    assert notebook.image(widget).is_visible()
    for label, handle in notebook.sliders(widget)[:1]:
        assert _changed(notebook, widget, lambda h=handle: h.press("ArrowLeft"),
                        f"deck, slider {label!r}"), "the widget does not respond in the deck"
    notebook.command("deck:stop")
    notebook.page.wait_for_selector(".jp-NotebookPanel.jp-Deck", state="detached")
