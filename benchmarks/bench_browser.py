"""Benchmark in the real browser: slider-to-pixels latency of each chapter's main widget,
and Run All time of every notebook (solution and student versions).

Run from the repository root (needs Debian's Chromium: ``sudo apt-get install chromium``)::

    python -m benchmarks.bench_browser                     # every chapter, 20 key presses each
    python -m benchmarks.bench_browser 01-self-attention   # some chapters
    python -m benchmarks.bench_browser --presses 40 --output bench-browser.md

Setting: JupyterLab on 127.0.0.1 (a temporary copy of the course) and headless Chromium,
both on this machine, driven by Playwright (``tools/lab.py``), as in the browser tests.

How it measures:

* **Latency** of the main widget (the first explorer of the solution notebook): the
  keyboard moves its first slider by one step (alternately ArrowRight and ArrowLeft, so
  every press changes the value; a widget without a slider is timed on its first dropdown
  or toggle group, switched between two options, else on its first button). In the page,
  the key's ``keydown`` event time starts the clock; a MutationObserver sees the widget's
  ``<img>`` get its new PNG (or, for a pre-rendered slider, another frame become visible),
  waits until the image is decoded, and stops the clock in the next
  ``requestAnimationFrame`` callback: the frame that paints the new pixels. So it covers the
  browser → kernel message, the Python update and PNG encoding, the kernel → browser
  message and the decoding (a pre-rendered slider needs none of the kernel steps). Two
  warm-up presses, then ``--presses`` measured ones, each after the kernel has finished the
  previous one and a pause of ``--pause`` ms (250: a person's pace; the kernel may use it,
  e.g. to draw a prefetched button's next click); median and 90th percentile.
  Goal: median ≤ 50 ms.
* **Run All**: from the "run all cells" command to every code cell numbered and the status
  bar's kernel status "Idle", outputs cleared first; the kernel is already started (its
  start-up is not counted). Goal: ≤ 5 s per notebook.

The numbers are only as quiet as the machine: the load average is printed with the table.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.lab import CHROMIUM, NotebookPage, chromium, lab_server, notebooks  # noqa: E402

GOAL_LATENCY_MS, GOAL_RUN_ALL_S = 50.0, 5.0

# clock start: the control's key (or click) event; clock stop: the first animation frame
# after the widget's image has its new, decoded PNG. On the way: when the kernel said "busy"
# (it has the message) and when the new PNG arrived (the kernel's work is done)
_INSTRUMENT_JS = """([root, control, event]) => {
  window.__presses = [];
  let press = null;
  // the widget's shown image: replaced in place (src) or, for a pre-rendered slider, another
  // frame of its Tab made visible (a class change): watch the whole widget for either
  const shown = () => [...root.querySelectorAll('img.widget-image')].find(
    i => i.checkVisibility());
  let lastImg = shown(), lastSrc = lastImg ? lastImg.src : null;
  control.addEventListener(event, e => { press = {start: e.timeStamp}; }, {capture: true});
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  kernel.anyMessage.connect((_, {msg, direction}) => {
    if (press === null || direction !== 'recv') return;
    const t = performance.now();
    if (msg.header.msg_type === 'status' && msg.content.execution_state === 'busy')
      press.busy = press.busy ?? t;
    else if (msg.header.msg_type === 'comm_msg' && msg.content.data.method === 'update') {
      press.update = press.update ?? t;  // the kernel's first answer (e.g. a frame switch)
      if ((msg.buffers || []).length) press.png = press.png ?? t;
    }
  });
  new MutationObserver(() => {
    const img = shown();
    if (press === null || !img || !img.src || (img === lastImg && img.src === lastSrc)) return;
    lastImg = img; lastSrc = img.src;
    const p = press; press = null;
    img.decode().then(() => requestAnimationFrame(() => {
      p.shown = performance.now(); window.__presses.push(p);
    }));
  }).observe(root, {subtree: true, childList: true, attributes: true, attributeFilter: ['src', 'class']});
}"""


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


def _control(nb: NotebookPage, widget):
    """``(description, element, DOM event, act(i))`` for the control to time: the first slider
    (keyboard steps right and left), else the first dropdown or toggle group (between two
    options), else the first button."""
    if sliders := nb.sliders(widget):
        label, handle = sliders[0]
        keys = ["ArrowRight", "ArrowLeft"]
        if nb.at_extreme(handle) == "max":
            keys.reverse()
        return f"slider {label!r}", handle, "keydown", lambda i: handle.press(keys[i % 2])
    if dropdowns := nb.dropdowns(widget):
        label, select = dropdowns[0]
        first = select.evaluate("s => s.selectedIndex")
        options = [(first + 1) % select.locator("option").count(), first]
        return (f"dropdown {label!r}", select, "change",
                lambda i: select.select_option(index=options[i % 2]))
    if toggles := nb.toggles(widget):
        label, group = toggles[0]
        buttons = group.locator("button")
        active = buttons.evaluate_all("bs => bs.findIndex(b => b.classList.contains('mod-active'))")
        options = [(active + 1) % buttons.count(), active]
        return (f"toggle {label!r}", group, "click",
                lambda i: buttons.nth(options[i % 2]).click())
    label, button = nb.buttons(widget)[0]
    return f"button {label!r}", button, "click", lambda i: button.click()


def measure_latency(nb: NotebookPage, widget, presses: int, warmup: int = 2,
                    pause_ms: float = 250) -> dict:
    """Latencies (ms) of ``presses`` moves of one of the widget's controls (see _control)."""
    what, control, event, act = _control(nb, widget)
    nb.wait_frames_ready(widget)  # frames are drawn once the kernel is idle after Run All
    widget.scroll_into_view_if_needed()
    nb.track_messages()
    nb.page.evaluate(_INSTRUMENT_JS, [widget.element_handle(), control.element_handle(), event])
    for i in range(warmup + presses):
        nb.page.wait_for_timeout(pause_ms)
        act(i)
        nb.page.wait_for_function("n => window.__presses.length >= n", arg=i + 1,
                                  timeout=30_000)
        nb.settle()
    presses_ = nb.page.evaluate("window.__presses")[warmup:]
    latencies = [p["shown"] - p["start"] for p in presses_]

    def phase(a: str, b: str) -> float:
        spans = [p[b] - p[a] for p in presses_ if a in p and b in p]
        return statistics.median(spans) if spans else float("nan")  # e.g. no PNG: pre-rendered

    return {"control": what, "n": len(latencies), "median": statistics.median(latencies),
            "p90": _percentile(latencies, 90), "max": max(latencies),
            "to_kernel": phase("start", "busy"), "kernel": phase("busy", "png"),
            "to_screen": phase("png", "shown")}


def bench(names: list[str] | None, presses: int, pause_ms: float = 250) -> list[dict]:
    solutions = [p for p in notebooks("solutions") if not names or p.stem in names]
    rows = []
    with lab_server() as server, chromium() as browser:
        for path in solutions:
            row = {"name": path.stem}
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            try:
                nb = NotebookPage(context.new_page(), server)
                nb.open(f"solutions/{path.name}")
                row["run_all_solution"] = nb.run_all()
                widgets = nb.widgets(1)
                row.update(measure_latency(nb, widgets[0], presses, pause_ms=pause_ms))
                server.shutdown_kernels()
                if (ROOT / "chapters" / path.name).exists():
                    nb.open(f"chapters/{path.name}")
                    row["run_all_student"] = nb.run_all()
            finally:
                context.close()
                server.shutdown_kernels()
            rows.append(row)
            print(f"  {path.stem}: done", file=sys.stderr)
    return rows


def _phase(ms: float) -> str:
    return "–" if math.isnan(ms) else f"{ms:.0f}"  # – : no such step (e.g. pre-rendered)


def _mark(ok: bool) -> str:
    return "✅" if ok else "❌"


def table(rows: list[dict], presses: int, pause_ms: float = 250) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [
        f"Browser benchmark: headless Chromium + JupyterLab on {os.cpu_count()} cores "
        f"({platform.machine()}), load average {load}; {presses} key presses per widget, "
        f"{pause_ms:.0f} ms apart.",
        "",
        "| Chapter | main widget control | median ms | p90 ms | max ms | to kernel | kernel "
        "| to screen | Run All solution s | Run All student s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        student = r.get("run_all_student")
        lines.append(
            f"| {r['name']} | {r['control']} | {r['median']:.0f} "
            f"{_mark(r['median'] <= GOAL_LATENCY_MS)} | {r['p90']:.0f} | {r['max']:.0f} | "
            f"{_phase(r['to_kernel'])} | {_phase(r['kernel'])} | {_phase(r['to_screen'])} | "
            f"{r['run_all_solution']:.1f} {_mark(r['run_all_solution'] <= GOAL_RUN_ALL_S)} | "
            + (f"{student:.1f} {_mark(student <= GOAL_RUN_ALL_S)} |" if student else "– |"))
    total = sum(r["run_all_solution"] + r.get("run_all_student", 0.0) for r in rows)
    lines += ["", "Latency phases (medians, ms): *to kernel* = key press until the kernel reports "
              "busy with it; *kernel* = until the new PNG arrives (the Python update, drawing, "
              "PNG encoding, the message); *to screen* = until the frame that paints it "
              "(decoding included); – where the step does not happen (a pre-rendered control "
              "never waits for the kernel; a prefetched button gets a frame switch, no PNG).",
              "", f"Run All of all {sum(1 + ('run_all_student' in r) for r in rows)} notebooks: "
              f"{total:.0f} s. Goals: median ≤ {GOAL_LATENCY_MS:.0f} ms, Run All ≤ "
              f"{GOAL_RUN_ALL_S:.0f} s per notebook."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="chapter names, e.g. 01-self-attention")
    parser.add_argument("--presses", type=int, default=20, help="measured key presses per widget")
    parser.add_argument("--pause", type=float, default=250,
                        help="ms between a press's answer and the next press")
    parser.add_argument("--output", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    if not CHROMIUM.is_file():
        print(f"skipped: {CHROMIUM} not found (sudo apt-get install chromium)", file=sys.stderr)
        return 0
    start = time.perf_counter()
    rows = bench(args.names, args.presses, args.pause)
    text = table(rows, args.presses, args.pause)
    print(text)
    print(f"\n(benchmark took {time.perf_counter() - start:.0f} s)", file=sys.stderr)
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
