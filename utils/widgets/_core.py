"""The machinery shared by every widget of the course.

A widget is two things:

* a **view**: a matplotlib figure whose artists are made once and updated in
  place by ``view.update(**params)`` (a pure function of the parameters: no
  widgets involved), which returns the numbers it drew, for tests;
* an **explorer**: ipywidgets controls wired to ``view.update``, showing the
  figure as an ``ipywidgets.Image`` (PNG). Callbacks never ``print``.

Showing ``view.figure_at(**defaults)`` first gives the static fallback that
GitHub, a PDF or a projector without a kernel can show. Headless tests set a
control's ``.value`` (or ``.click()`` a button) and read ``explorer.state`` and
``explorer.image.value``.
"""

from __future__ import annotations

import asyncio
import io
import math
import time
from collections.abc import Callable
from typing import ClassVar

import ipywidgets as widgets
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from ..plotting import BAR, HIGHLIGHT

__all__ = ["RERUN", "Explorer", "View", "log_slider", "log_steps", "log_steps_slider", "render_png",
           "set_bars", "token_dropdown"]


def _canvas(fig: Figure) -> FigureCanvasAgg:
    return fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)


def _encode(rgba: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, format="png", compress_level=1)
    return buf.getvalue()


def render_png(fig: Figure) -> bytes:
    """Draw all of ``fig`` with Agg and encode it as PNG (low compression: fast)."""
    canvas = _canvas(fig)
    canvas.draw()
    return _encode(np.asarray(canvas.buffer_rgba()))


def set_bars(bars, labels, heights, texts=None, *, highlight: int | None = None) -> None:
    """Set bar heights with a value label just above each bar (``texts``, default the height
    to 2 decimals); with ``highlight``, that bar takes the highlight colour, the others the
    bar colour."""
    for i, (bar, label, h) in enumerate(zip(bars, labels, heights, strict=True)):
        h = float(h)
        bar.set_height(h)
        if highlight is not None:
            bar.set_color(HIGHLIGHT if i == highlight else BAR)
        label.set_y(h + 0.01)
        label.set_text(f"{h:.2f}" if texts is None else texts[i])


def token_dropdown(tokens, value: int = 0, description: str = "query") -> widgets.Dropdown:
    """Pick a position by its token (options read "i: token")."""
    return widgets.Dropdown(options=[(f"{i}: {t}", i) for i, t in enumerate(tokens)], value=value,
                            description=description)


def log_steps(lo: float, hi: float, per_decade: int = 10) -> list[tuple[str, float]]:
    """``(label, value)`` options from ``lo`` to ``hi`` in equal log steps, 1.0 included
    when in range: for a ``SelectionSlider`` whose frames can be drawn in advance."""
    first, last = round(math.log10(lo) * per_decade), round(math.log10(hi) * per_decade)
    values = [10 ** (k / per_decade) for k in range(first, last + 1)]
    return [(f"{v:.3g}", v) for v in values]


def log_steps_slider(value: float, lo: float, hi: float,
                     description: str = "temperature T") -> widgets.SelectionSlider:
    """A slider over :func:`log_steps` (starting at the step nearest ``value``), for an
    explorer that pre-renders its frames (``Explorer(..., prerender=name)``)."""
    steps = log_steps(lo, hi)
    nearest = min((v for _, v in steps), key=lambda v: abs(math.log(v / value)))
    return widgets.SelectionSlider(options=steps, value=nearest, description=description,
                                   style={"description_width": "initial"})


def log_slider(value: float, lo: float, hi: float, description: str = "temperature T",
               continuous_update: bool = True) -> widgets.FloatLogSlider:
    """A log-scale slider from ``lo`` to ``hi`` (e.g. a temperature), 0.01 decades a step."""
    return widgets.FloatLogSlider(value=value, base=10, min=round(math.log10(lo), 6),
                                  max=round(math.log10(hi), 6), step=0.01, description=description,
                                  continuous_update=continuous_update,
                                  style={"description_width": "initial"})


#: the controls whose options can be pre-rendered (``Explorer(..., prerender=name)``)
PRERENDERABLE = (widgets.SelectionSlider, widgets.Dropdown, widgets.ToggleButtons,
                 widgets.RadioButtons, widgets.Select)

# hides the tab bar of a pre-rendered slider's frames (CSS only: no script)
_FRAMES_CSS = """<style>
.course-frames > .lm-TabBar { display: none !important; }
.course-frames > .widget-tab-contents { border: 0 !important; padding: 0 !important; }
</style>"""

#: in a live deck (jupyterlab-slideshow) an explorer's image is never taller than the window
#: less room for a heading, a line of code and the controls (the notebook view is unchanged)
DECK_IMAGE_MAX_HEIGHT = "calc(100vh - 240px)"
_DECK_CSS = f"""<style>
.jp-Deck .course-explorer img.widget-image {{
  max-height: {DECK_IMAGE_MAX_HEIGHT}; width: auto; max-width: 100%; object-fit: contain;
}}
</style>"""

#: the line shown in place of an explorer whose controls are not live (a notebook saved and
#: opened again: its widgets' models died with the kernel; GitHub; a static page)
RERUN = ("Controls not live: rerun this cell (Shift+Enter) to use them. The static figure above "
         "shows this view at its defaults.")
# The output shown just before every explorer's widget (widgets cannot run a script of their
# own; Jupyter runs this one, in an output it trusts: one just made by the kernel).
# * CSS: while the widget's view is live (the next output holds a .course-explorer) the line
#   is hidden. In a notebook opened again, JupyterLab and Notebook 7 cannot find the widget's
#   model and put "Error displaying widget: model not found" (a .jupyter-widgets output with
#   no element in it) in the widget's place: that is hidden and the line shows instead.
# * Script (installed once per page), for the keyboard and the live deck (jupyterlab-slideshow):
#   - While one of an explorer's controls has the focus it owns the keyboard, as a text field
#     does: its notebook gets JupyterLab's class jp-mod-readWrite, which every command-mode
#     key binding (the notebook's, the deck's) requires to be absent. Notebook 7 handles key
#     bindings before the control sees the key: there, without this, the arrow keys move the
#     notebook's selection instead of the slider. The notebook drops the class itself when
#     the focus leaves the control.
#   - Escape in one of an explorer's controls leaves the control and gives the focus back to
#     its cell, so that the notebook's keys and the deck's arrow keys work again. Without it
#     a focused slider keeps the arrow keys for good (and in JupyterLab, Escape would stop the
#     deck). A click outside the control also gives the focus back (JupyterLab's own).
#   - The deck starts at the active cell; started with the last cell active (as right after
#     Run All) it would open on the last slide: it starts at the title instead (focusing a
#     cell makes it the active one). With any other cell active it starts there, so an
#     instructor picks a section by clicking its heading first.
_RERUN_HTML = f"""<div class="course-rerun">&#x21bb; {RERUN}</div>
<style>
.jp-OutputArea-child:has(.course-rerun):has(+ .jp-OutputArea-child .course-explorer) {{
  display: none;
}}
.jp-OutputArea-child:has(.course-rerun) + .jp-OutputArea-child
  > .jp-OutputArea-output.jupyter-widgets:not(:has(*)) {{ display: none; }}
.course-rerun {{ font-style: italic; }}
</style>
<script>
if (!window.courseExplorerKeys) {{
  window.courseExplorerKeys = true;
  window.addEventListener("focusin", (event) => {{
    if (event.target?.closest?.(".course-explorer")) {{
      event.target.closest(".jp-Notebook")?.classList.add("jp-mod-readWrite");
    }}
  }});
  window.addEventListener("keydown", (event) => {{
    const control = document.activeElement;
    const explorer = control?.closest?.(".course-explorer");
    if (event.key !== "Escape" || !explorer) return;
    event.preventDefault();
    event.stopPropagation();
    control.blur();
    explorer.closest(".jp-Cell")?.focus({{ preventScroll: true }});
  }}, true);
  new MutationObserver(() => {{
    if (document.body.dataset.jpDeckMode !== "presenting") return;
    const shown = [...document.querySelectorAll(".jp-NotebookPanel")].filter(p => p.checkVisibility());
    const panel = document.activeElement?.closest?.(".jp-NotebookPanel") ??
      (shown.length === 1 ? shown[0] : null);
    const cells = panel ? [...panel.querySelectorAll(".jp-Notebook .jp-Cell")] : [];
    const first = cells[0];
    if (cells.length > 1 && cells.at(-1).classList.contains("jp-mod-active") &&
        (first.dataset.windowedListIndex ?? "0") === "0") {{
      first.focus({{ preventScroll: true }});
    }}
  }}).observe(document.body, {{ attributeFilter: ["data-jp-deck-mode"] }});
}}
</script>"""


def _kernel_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop of the Jupyter kernel running this code, or None (a script, a test)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with ipywidgets
        return None
    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return None
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _IdleWork:
    """Background work done while the kernel is idle: one short step at a time, only once no
    cell has run for ``quiet`` seconds, so that *Run All* is not slowed down by it and a
    control's message waits at most one step. Outside a kernel, :meth:`add` does the work now.
    """

    quiet = 0.25  # seconds without a cell running before a step

    def __init__(self) -> None:
        self._jobs: list[Callable[[], bool]] = []
        self._busy = False
        self._last = 0.0
        self._hooked = False
        self._handle: asyncio.Handle | None = None

    def add(self, job: Callable[[], bool]) -> None:
        """Call ``job()`` (one step: True while steps remain) until it is done."""
        loop = _kernel_loop()
        if loop is None:
            while job():
                pass
            return
        if not self._hooked:
            from IPython import get_ipython

            events = get_ipython().events
            events.register("pre_execute", self._cell_starts)
            events.register("post_execute", self._cell_ends)
            self._hooked = True
        if job not in self._jobs:
            self._jobs.append(job)
        if self._handle is None:
            self._handle = loop.call_later(self.quiet, self._tick)

    def _cell_starts(self) -> None:
        self._busy, self._last = True, time.monotonic()

    def _cell_ends(self) -> None:
        self._busy, self._last = False, time.monotonic()

    def _tick(self) -> None:
        self._handle = None
        if not self._jobs:
            return
        loop = asyncio.get_running_loop()
        wait = self._last + self.quiet - time.monotonic()
        if self._busy or wait > 0:  # a cell ran a moment ago: Run All may be going on
            self._handle = loop.call_later(max(wait, 0.05), self._tick)
            return
        job, more = self._jobs[0], False
        try:  # an error is reported by the event loop (the kernel's log), never retried
            more = job()
        finally:
            if not more:
                self._jobs.remove(job)
            if self._jobs:
                self._handle = loop.call_soon(self._tick)


_IDLE = _IdleWork()


class View:
    """A figure with artists updated in place. Subclasses set ``self.fig`` and ``update``.

    Artists listed in ``self.dynamic`` are the only ones an update changes: the
    explorer draws everything else once (axes, ticks, labels are slow to draw)
    and then only blits these on top, which keeps a slider move within a frame.
    """

    fig: Figure
    #: artists that ``update`` changes (everything else is drawn once)
    dynamic: ClassVar[list] = []
    #: parameter values used for the static figure and the explorer's start
    defaults: ClassVar[dict] = {}
    _background = None

    def invalidate(self) -> None:
        """Forget the drawn background: the next render redraws everything (e.g. after
        changing tick labels or limits, which are not in ``dynamic``)."""
        self._background = None

    def render(self) -> bytes:
        """PNG of the figure now; after the first call only ``dynamic`` artists are redrawn."""
        canvas = _canvas(self.fig)
        if self._background is None:
            for artist in self.dynamic:
                artist.set_animated(True)
            canvas.draw()
            self._background = canvas.copy_from_bbox(self.fig.bbox)
        canvas.restore_region(self._background)
        for artist in self.dynamic:
            self.fig.draw_artist(artist)
        return _encode(np.asarray(canvas.buffer_rgba()))

    def snapshot(self) -> dict:
        """Parameters that ``update(**snapshot)`` takes to come back to the state now: what a
        view needs so that its explorer can draw a button's next click in advance
        (``Explorer(..., prefetch=label)``). Views without such a state do not have it."""
        raise TypeError(f"{type(self).__name__} has no snapshot(): its explorer cannot prefetch")

    def update(self, **params) -> dict:  # pragma: no cover - abstract
        """Redraw for ``params``; return ``{name: array}`` of the numbers drawn."""
        raise NotImplementedError

    def figure_at(self, **params) -> Figure:
        """The static figure at ``params`` (the defaults if none): shown inline by Jupyter."""
        if self._background is not None:
            raise RuntimeError("this view drives an explorer; make a new view for a static figure")
        self.update(**{**self.defaults, **params})
        return self.fig


class Explorer:
    """ipywidgets controls wired to a :class:`View`, shown as a live PNG image.

    Args:
        view: the view to drive.
        controls: ``{parameter name: value widget}``; each change calls ``view.update``.
        buttons: ``{label: callback(explorer)}``; each click runs the callback, then redraws.
        prerender: the name of a single-choice control among ``controls`` (a
            ``SelectionSlider``, ``Dropdown``, ``ToggleButtons``, ``RadioButtons`` or
            ``Select``) whose every option is drawn in advance, as one frame (image) of a
            ``widgets.Tab`` whose tab bar is hidden and whose ``selected_index`` is linked
            to the control's ``index`` in the browser (``jslink``): moving the control
            shows another, already decoded frame, with no kernel round trip. (A
            ``widgets.Stack`` would build a new image view at every step, which costs
            more than twice as much.) The frame on show is drawn at once; in a kernel, the
            others are drawn while it is idle (no cell ran for a moment), nearest first, so
            that Run All does not wait for them; until they are all drawn the control is
            not linked and goes through the kernel, which draws a missing frame when it is
            asked for. Then the link is made and the Tab gets the CSS class
            ``course-frames-ready``. Any other change draws the frames again, so keep the
            options few (~30). The options may change (e.g. a head slider whose range
            follows the number of heads): the frames follow.
        prefetch: the label of a button among ``buttons`` whose next click is drawn in
            advance, into a hidden second frame: a click only switches frames (a few bytes
            from the kernel, no new image), then the next click's frame is drawn. The
            button's callback must be a deterministic step of the view (e.g. the next draw
            of a fixed random stream) and the view must have :meth:`View.snapshot`.
    """

    def __init__(self, view: View, controls: dict[str, widgets.ValueWidget],
                 buttons: dict[str, Callable[[Explorer], None]] | None = None,
                 prerender: str | None = None, prefetch: str | None = None):
        self.view = view
        self.controls = controls
        self.buttons = {}
        self.state: dict = {}
        self.n_renders = 0
        self.prerender = prerender
        self.prefetch = prefetch
        self._next_state: dict | None = None
        self._callbacks = dict(buttons or {})
        if prefetch is not None:
            if prerender is not None:
                raise ValueError("give prerender or prefetch, not both")
            if prefetch not in self._callbacks:
                raise ValueError(f"prefetch={prefetch!r} must be one of the buttons "
                                 f"{sorted(self._callbacks)}")
            view.snapshot()  # TypeError if the view cannot come back to a state
            self.frames = widgets.Tab([widgets.Image(format="png"), widgets.Image(format="png")],
                                      selected_index=0)
            self.frames.add_class("course-frames")
            self.frames.add_class("course-frames-ready")  # the next frame is drawn with each click
        elif prerender is None:
            self.frames = None
            self._image = widgets.Image(format="png")
        else:
            choice = controls.get(prerender)
            if not isinstance(choice, PRERENDERABLE):
                kinds = ", ".join(k.__name__ for k in PRERENDERABLE)
                raise TypeError(f"prerender={prerender!r} must name one of the controls "
                                f"{sorted(controls)} that is a {kinds}; got "
                                f"{type(choice).__name__}")
            self.frames = widgets.Tab()
            self.frames.add_class("course-frames")
        self.frames_link: widgets.Link | None = None
        self._box: widgets.Widget | None = None
        self._stale: set[int] = set()  # pre-rendered frames not drawn for the parameters now
        for name, control in controls.items():
            control.observe(lambda _change, n=name: self._on_change(n), names="value")
        for label, callback in self._callbacks.items():
            button = widgets.Button(description=label)
            run = self._step if label == prefetch else self._run
            button.on_click(lambda _b, cb=callback, run=run: run(cb))
            self.buttons[label] = button
        self.refresh()

    @property
    def params(self) -> dict:
        return {name: c.value for name, c in self.controls.items()}

    @property
    def image(self) -> widgets.Image:
        """The image shown now (with ``prerender``: the slider's current frame)."""
        if self.frames is None:
            return self._image
        return self.frames.children[self.frames.selected_index]

    def _on_change(self, name: str) -> None:
        choice = self.controls[name]
        if name == self.prerender and len(self.frames.children) == len(choice.options):
            # the frame is drawn already (or drawn now): only the numbers change
            if choice.index in self._stale:
                self._draw_frame(choice.index)
            self.frames.selected_index = choice.index  # once linked, the browser did it too
            self.state = self.view.update(**self.params)
        else:
            self.refresh()

    def _run(self, callback: Callable[[Explorer], None]) -> None:
        callback(self)
        self.refresh()

    def _step(self, callback: Callable[[Explorer], None]) -> None:
        """A click on the prefetched button: show the frame drawn in advance, draw the next."""
        if self._next_state is None:  # clicked again before the next frame was drawn
            self._draw_next()
        callback(self)  # the view takes the step whose frame is ready
        self.frames.selected_index = 1 - self.frames.selected_index  # sent to the browser
        self.state, self._next_state = self._next_state, None
        loop = _kernel_loop()
        if loop is None:  # a script, a test: draw it now
            self._draw_next()
        else:  # draw the next frame once this handler has returned, so that the kernel's
            # I/O thread sends the switch now instead of waiting for the drawing
            loop.call_later(0.005, self._draw_next_if_needed)

    def _draw_next_if_needed(self) -> None:
        if self._next_state is None:
            self._draw_next()

    def _draw_next(self) -> None:
        """Draw the prefetched button's next click into the hidden frame; the view stays."""
        snapshot = self.view.snapshot()
        self._callbacks[self.prefetch](self)
        self._next_state = self.view.update(**self.params)
        self.frames.children[1 - self.frames.selected_index].value = self.view.render()
        self.view.update(**{**self.params, **snapshot})

    def refresh(self) -> None:
        """Recompute the view for the current control values and push new PNG(s)."""
        params = self.params
        if self.prefetch is not None:
            self.state = self.view.update(**params)
            self.image.value = self.view.render()
            self._draw_next()
        elif self.frames is not None:
            choice = self.controls[self.prerender]
            if self.frames_link is not None:  # the frames go stale: the browser must not show them
                self.frames_link.unlink()
                self.frames_link = None
                self.frames.remove_class("course-frames-ready")
            frames = list(self.frames.children)
            if len(frames) != len(choice.options):  # as many frames as options
                frames = (frames + [widgets.Image(format="png") for _ in choice.options]
                          )[: len(choice.options)]
            self._stale = set(range(len(frames)))
            self._draw_frame(choice.index, frames)  # before it is shown
            # the index stays valid at every step: fewer frames, index first; more, frames first
            if choice.index < len(self.frames.children):
                self.frames.selected_index = choice.index
            if self.frames.children != tuple(frames):
                self.frames.children = frames
            self.frames.selected_index = choice.index
            self.state = self.view.update(**params)
            _IDLE.add(self._draw_a_stale_frame)
        else:
            self.state = self.view.update(**params)
            self._image.value = self.view.render()
        self.n_renders += 1

    def _draw_frame(self, index: int, frames=None) -> None:
        """Draw the pre-rendered control's option ``index`` into its frame (of ``frames``, by
        default the frames shown)."""
        option = self.controls[self.prerender].options[index]
        # ipywidgets' rule: an option is a (label, value) pair or a bare value
        value = option[1] if isinstance(option, tuple) and len(option) == 2 else option
        self.view.update(**{**self.params, self.prerender: value})
        (self.frames.children if frames is None else frames)[index].value = self.view.render()
        self._stale.discard(index)

    def _draw_a_stale_frame(self) -> bool:
        """One step of the background work: draw the stale frame nearest the one on show;
        when none is left, link the control to the frames. True while frames remain."""
        if self.frames.comm is None:  # the widget was closed: nothing to show any more
            return False
        if self._stale:
            here = self.frames.selected_index or 0
            self._draw_frame(min(self._stale, key=lambda i: (abs(i - here), i)))
            self.view.update(**self.params)  # between steps, the view shows the parameters now
            if self._stale:
                return True
        if self.frames_link is None:
            # the browser-side link: the control's index picks the frame. Made once the
            # frames exist: a link to an empty Tab would reset the control in the browser
            self.frames_link = widgets.jslink((self.controls[self.prerender], "index"),
                                              (self.frames, "selected_index"))
            self.frames.add_class("course-frames-ready")
        return False

    def replace_control(self, name: str, control: widgets.ValueWidget, redraw: bool = True) -> None:
        """Put a new ``control`` in place of the control ``name`` (same place in the row; the
        old one is closed), then redraw for its value (``redraw=False``: the caller changes
        another control next, which redraws). For a control that must be rebuilt rather than
        changed: a slider whose options change keeps its old range for the Home and End keys
        in the browser (noUiSlider's keyboard reads the options it was made with)."""
        if name not in self.controls:
            raise ValueError(f"no control named {name!r}; the controls are {sorted(self.controls)}")
        if name == self.prerender and not isinstance(control, PRERENDERABLE):
            raise TypeError(f"the pre-rendered control {name!r} must stay a single-choice control; "
                            f"got {type(control).__name__}")
        old = self.controls[name]
        if self.frames_link is not None and name == self.prerender:  # linked to the old one
            self.frames_link.unlink()
            self.frames_link = None
            self.frames.remove_class("course-frames-ready")
        old.unobserve_all("value")
        control.observe(lambda _change, n=name: self._on_change(n), names="value")
        self.controls[name] = control
        if self._box is not None:
            row = self._box.children[0]
            row.children = tuple(control if c is old else c for c in row.children)
        old.close()
        if redraw:
            self.refresh()
        elif name == self.prerender:
            _IDLE.add(self._draw_a_stale_frame)  # links the new control once frames are drawn

    @property
    def widget(self) -> widgets.Widget:
        """A new box of the controls and the image (subclasses may add to it)."""
        row = list(self.controls.values()) + list(self.buttons.values())
        parts = [widgets.HBox(row, layout=widgets.Layout(flex_flow="row wrap")),
                 widgets.HTML(_DECK_CSS)]
        if self.frames is None:
            parts.append(self._image)
        else:
            parts += [widgets.HTML(_FRAMES_CSS), self.frames]
        return widgets.VBox(parts)

    @property
    def box(self) -> widgets.Widget:
        """The box that is displayed: :attr:`widget`, made once (the CSS class
        ``course-explorer`` marks it in the page)."""
        if self._box is None:
            self._box = self.widget
            self._box.add_class("course-explorer")
        return self._box

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.box._repr_mimebundle_(**kwargs)
        # a stable text fallback (the default repr would embed the PNG bytes)
        bundle["text/plain"] = f"{type(self.view).__name__} explorer: run the notebook to interact"
        return bundle

    def _ipython_display_(self) -> None:
        """Two outputs: the line :data:`RERUN` (hidden by CSS while the widget is live; it
        also makes Escape leave a control) and the widget. A notebook saved and opened again
        shows the line instead of Jupyter's "model not found" error; the static figure is the
        cell before the explorer."""
        from IPython.display import display

        display({"text/html": _RERUN_HTML, "text/plain": RERUN}, raw=True)
        display(self._repr_mimebundle_(), raw=True)
