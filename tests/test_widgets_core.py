"""The explorer machinery (utils.widgets._core): frames drawn while the kernel is idle."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import IPython
import IPython.display
import pytest

from utils.examples import running_example
from utils.widgets import _core, attention_explorer


def _explorer():
    ex = running_example()
    return attention_explorer(ex.tokens, ex.x @ ex.w_q, ex.x @ ex.w_k, query=ex.index("He"))


@pytest.fixture
def idle_jobs(monkeypatch):
    """As in a kernel: the background work is kept, not done (the test does its steps)."""
    jobs = []
    monkeypatch.setattr(_core._IDLE, "add", jobs.append)
    return jobs


def test_in_a_kernel_only_the_frame_on_show_is_drawn_at_once(idle_jobs):
    explorer = _explorer()
    slider, frames = explorer.controls["temperature"], explorer.frames.children
    assert len(frames) == len(slider.options) == 27
    assert [i for i, f in enumerate(frames) if f.value] == [slider.index]
    assert explorer.image is frames[slider.index] and explorer.image.value
    # not linked yet: the browser must not switch to a frame that is not drawn
    assert explorer.frames_link is None
    assert "course-frames-ready" not in explorer.frames._dom_classes
    assert idle_jobs == [explorer._draw_a_stale_frame]


def test_a_frame_asked_for_before_it_is_drawn_is_drawn_by_the_kernel(idle_jobs, monkeypatch):
    explorer = _explorer()
    explorer.controls["temperature"].index = 3
    assert explorer.frames.selected_index == 3 and explorer.image.value
    assert explorer.n_renders == 1, "one frame drawn, not a redraw of all"
    monkeypatch.undo()  # the real scheduler: outside a kernel it draws every frame now
    eager = _explorer()
    assert eager.frames_link is not None
    eager.controls["temperature"].index = 3
    assert explorer.image.value == eager.image.value, "same pixels as a frame drawn in advance"


def test_idle_steps_draw_the_nearest_frames_first_then_link(idle_jobs):
    explorer = _explorer()
    slider, frames = explorer.controls["temperature"], explorer.frames.children
    start = slider.index
    (step,) = idle_jobs
    order = []
    while True:
        before = {i for i, f in enumerate(frames) if f.value}
        more = step()
        order += sorted({i for i, f in enumerate(frames) if f.value} - before)
        # between steps the view shows the parameters now, not the frame just drawn
        heights = [bar.get_height() for bar in explorer.view.bars]
        assert heights == pytest.approx(explorer.state["row"].tolist())
        if not more:
            break
    assert len(order) == len(frames) - 1 and start not in order
    distances = [abs(i - start) for i in order]
    assert distances == sorted(distances), "nearest the frame on show first"
    link = explorer.frames_link
    assert link.source == (slider, "index") and link.target == (explorer.frames, "selected_index")
    assert "course-frames-ready" in explorer.frames._dom_classes
    assert len({f.value for f in frames}) == len(frames)


def test_another_control_unlinks_the_stale_frames_until_they_are_drawn_again(idle_jobs):
    explorer = _explorer()
    (step,) = idle_jobs
    while step():
        pass
    old = [f.value for f in explorer.frames.children]
    explorer.controls["query"].value = 1
    assert explorer.frames_link is None and "course-frames-ready" not in explorer.frames._dom_classes
    fresh = [i for i, f in enumerate(explorer.frames.children) if f.value not in old]
    assert fresh == [explorer.controls["temperature"].index]
    assert idle_jobs == [step, step]  # the scheduler keeps one entry per job
    while step():
        pass
    assert explorer.frames_link is not None
    assert all(f.value not in old for f in explorer.frames.children)


def test_a_closed_explorer_stops_its_background_work(idle_jobs):
    explorer = _explorer()
    explorer.frames.close()
    assert idle_jobs[0]() is False


class _Shell:
    """Enough of an IPython kernel shell for the scheduler: a kernel and cell events."""

    def __init__(self):
        self.kernel = object()
        self.handlers = {}
        self.events = SimpleNamespace(register=self.handlers.__setitem__)

    def cell(self, event):
        self.handlers[event]()


def test_idle_work_waits_until_no_cell_has_run_for_a_moment(monkeypatch):
    shell = _Shell()
    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)
    work = _core._IdleWork()
    work.quiet = 0.05
    steps = []

    def job():  # three steps
        steps.append(len(steps))
        return len(steps) < 3

    async def run_all():
        work.add(job)  # a cell makes an explorer
        shell.cell("pre_execute")
        await asyncio.sleep(0.12)  # a long cell: a step would slow it
        assert steps == []
        shell.cell("post_execute")
        await asyncio.sleep(0.02)  # the next cell comes soon after (Run All)
        assert steps == []
        await asyncio.sleep(0.2)  # idle: the work is done, a step at a time
        assert steps == [0, 1, 2]

    asyncio.run(run_all())


def test_idle_work_is_done_at_once_outside_a_kernel():
    steps = []
    _core._IdleWork().add(lambda: steps.append(1) or len(steps) < 4)
    assert steps == [1, 1, 1, 1]


def test_idle_work_drops_a_job_that_fails(monkeypatch):
    shell = _Shell()
    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)
    work = _core._IdleWork()
    work.quiet = 0.01
    calls, errors = [], []

    def broken():
        calls.append(1)
        raise ValueError("boom")

    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        work.add(broken)
        await asyncio.sleep(0.1)

    asyncio.run(main())
    assert calls == [1] and len(errors) == 1 and work._jobs == []


def test_an_explorer_shows_a_rerun_line_then_its_widget(monkeypatch):
    """Two outputs: the line that stands in for the controls when their model is gone (a
    notebook opened again) and the widget, marked for the CSS that hides one or the other."""
    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw=False: shown.append(obj))
    explorer = _explorer()
    explorer._ipython_display_()
    line, widget = shown
    assert line["text/plain"] == _core.RERUN and "rerun this cell" in _core.RERUN
    assert 'class="course-rerun"' in line["text/html"] and "Escape" in line["text/html"]
    assert "application/vnd.jupyter.widget-view+json" in widget
    assert widget["text/plain"] == "AttentionView explorer: run the notebook to interact"
    assert "course-explorer" in explorer.box._dom_classes
    assert explorer.box is explorer.box, "the displayed box is made once"


def test_replace_control_puts_the_new_control_in_the_old_ones_place():
    explorer = _explorer()
    name = explorer.prerender
    old = explorer.controls[name]
    row = explorer.box.children[0]
    where = row.children.index(old)
    new = _core.widgets.SelectionSlider(options=old.options, value=old.options[0][1],
                                        description=old.description)
    explorer.replace_control(name, new)
    assert explorer.controls[name] is new and row.children[where] is new
    assert old.comm is None, "the old control is closed"
    assert explorer.frames_link is not None and explorer.frames_link.source[0] is new
    image = explorer.image.value
    new.value = old.options[-1][1]  # the new control drives the explorer
    assert explorer.image.value != image and explorer.frames.selected_index == new.index
    with pytest.raises(ValueError, match="no control named 'nope'"):
        explorer.replace_control("nope", new)
    with pytest.raises(TypeError, match="must stay a single-choice control"):
        explorer.replace_control(name, _core.widgets.FloatSlider())
