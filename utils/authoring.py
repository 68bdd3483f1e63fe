"""Single source for the notebooks: ``solutions/`` -> ``chapters/``.

The solutions are the source, complete and executed. Student chapters are generated:

* code between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` (nbgrader's markers)
  becomes ``# YOUR CODE HERE`` + ``raise NotImplementedError`` (markdown: *YOUR ANSWER HERE*);
* cells tagged ``solution`` are dropped;
* outputs, execution counts and widget state are cleared.

Student work is never lost: ``build`` refuses to overwrite a chapter that differs
from what it last generated there (recorded in ``chapters/.generated.json``), unless
``--force``, which first saves a backup next to it.

Usage::

    python -m utils.authoring build [--force]   # regenerate chapters/
    python -m utils.authoring check             # exit 1 if chapters/ is out of date
    python -m utils.authoring execute [NAME...] # run solutions in place, then build
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import hashlib
import json
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"
CHAPTERS = ROOT / "chapters"
MANIFEST = ".generated.json"

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
SOLUTION_TAG = "solution"
_BLOCK = re.compile(
    rf"^(?P<indent>[ \t]*){re.escape(BEGIN)}[^\n]*\n.*?^[ \t]*{re.escape(END)}[^\n]*(\n|$)",
    re.MULTILINE | re.DOTALL,
)


class AuthoringError(Exception):
    """A chapter could not be (re)generated safely."""


def strip_solutions(source: str, cell_type: str = "code") -> str:
    """Replace every solution block in ``source`` by a stub of the same indentation."""
    if source.count(BEGIN) != source.count(END):
        raise AuthoringError(f"unbalanced solution markers in cell:\n{source[:200]}")

    def stub(match: re.Match) -> str:
        indent = match.group("indent")
        if cell_type == "markdown":
            return f"{indent}*YOUR ANSWER HERE*\n"
        return f"{indent}# YOUR CODE HERE\n{indent}raise NotImplementedError\n"

    return _BLOCK.sub(stub, source).rstrip("\n") if BEGIN in source else source


LONG_CODE = 25  # lines: longer code cells are skipped in slides (the figure they draw stays)


def slide_type(cell: nbformat.NotebookNode) -> str:
    """The live-slides role of a cell: ``##`` starts a slide, ``###`` a sub-slide, the
    set-up cell and long code are skipped, a check cell is a fragment, the rest follows."""
    first = cell.source.lstrip().split("\n", 1)[0]
    if cell.cell_type == "markdown":
        if first.startswith("# ") or first.startswith("## "):
            return "slide"
        if first.startswith("### "):
            return "subslide"
        return "-"
    if "utils.notebook import start" in cell.source:
        return "skip"
    if "NBVAL_IGNORE_OUTPUT" in cell.source or cell.source.count("\n") >= LONG_CODE:
        return "skip"
    if "check" in first and first.startswith("_ ="):
        return "fragment"
    return "-"


# a code cell that draws: a figure, or a live explorer (matched on the source, so a student
# chapter, which has no outputs, gets the same slides as its solution)
_DRAWS = re.compile(r"plt\.show\(\)|\.figure_at\(|show_heatmaps\(|learning_curves\(|_explorer\(|Explorer\(")
_EXPLORER = re.compile(r"_explorer\(|Explorer\(")


def _last_line(cell: nbformat.NotebookNode) -> str:
    lines = [line for line in cell.source.strip().split("\n") if line.strip()]
    return lines[-1] if lines else ""


def _is_explorer(cell: nbformat.NotebookNode | None) -> bool:
    return cell is not None and cell.cell_type == "code" and bool(_EXPLORER.search(_last_line(cell)))


def _draws(cell: nbformat.NotebookNode | None) -> bool:
    return cell is not None and cell.cell_type == "code" and bool(_DRAWS.search(cell.source))


def slide_types(nb: nbformat.NotebookNode) -> list[str]:
    """Every cell's live-slides role: :func:`slide_type`, then three rules that keep each
    slide within a 1280×720 projector:

    * the static figure of a live explorer (the next code cell) is skipped: the explorer
      shows the same view, live;
    * the text that introduces an explorer starts a sub-slide (text + widget on one screen);
    * the text that follows a figure or an explorer starts a sub-slide (a figure is about
      a screen high).
    """
    cells = nb.cells
    kinds = [slide_type(c) for c in cells]
    for i, cell in enumerate(cells):
        if kinds[i] != "-":
            continue
        before = cells[i - 1] if i else None
        after = cells[i + 1] if i + 1 < len(cells) else None
        next_code = next((c for c in cells[i + 1:] if c.cell_type == "code"), None)
        if cell.cell_type == "code" and ".figure_at(" in _last_line(cell) and _is_explorer(next_code):
            kinds[i] = "skip"
        elif cell.cell_type == "markdown" and (_is_explorer(after) or _draws(before)):
            kinds[i] = "subslide"
    return kinds


def with_slides(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Set every cell's ``metadata.slideshow.slide_type`` (see :func:`slide_types`).

    A continuation cell ("-") gets no slideshow metadata at all: nbconvert reads a missing
    type as "-", and jupyterlab-slideshow (the live deck) only understands it that way —
    an explicit "-" there puts the cell on no slide, hiding it.
    """
    for cell, kind in zip(nb.cells, slide_types(nb), strict=True):
        if kind == "-":
            cell.metadata.pop("slideshow", None)
        else:
            cell.metadata["slideshow"] = {"slide_type": kind}
    return nb


def student_version(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The student notebook made from a solution notebook (a new object)."""
    out = copy.deepcopy(nb)
    out.cells = [c for c in out.cells if SOLUTION_TAG not in c.get("metadata", {}).get("tags", [])]
    for cell in out.cells:
        cell.source = strip_solutions(cell.source, cell.cell_type)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
    out.metadata.pop("widgets", None)
    return with_slides(out)


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _stable_outputs(outputs: list) -> list:
    """Outputs that are the same bytes on every run: consecutive stream chunks merged
    (ipykernel splits them by timing) and widget views (random model ids, meaningless
    without a kernel) reduced to their text fallback."""
    stable: list = []
    for out in outputs:
        if (out.output_type == "stream" and stable and stable[-1].output_type == "stream"
                and stable[-1].name == out.name):
            stable[-1].text += out.text
            continue
        if "data" in out and WIDGET_VIEW in out.data:
            out.data.pop(WIDGET_VIEW)
        stable.append(out)
    return stable


def clean_solution(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Make an executed solution fit to commit: no widget state, no timing metadata,
    stable outputs, slideshow metadata set."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = _stable_outputs(cell.outputs)
    return with_slides(nb)


def render(nb: nbformat.NotebookNode) -> str:
    """The exact text a notebook is saved as."""
    return nbformat.writes(nb) + "\n"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _solution_paths(solutions: Path, names: list[str] | None = None) -> list[Path]:
    paths = sorted(solutions.glob("[0-9][0-9]-*.ipynb"))
    return [p for p in paths if not names or any(n in p.name for n in names)]


def expected_chapters(solutions: Path = SOLUTIONS, names: list[str] | None = None) -> dict[str, str]:
    """``{file name: student notebook text}`` for every solution notebook (or those named)."""
    return {
        p.name: render(student_version(nbformat.read(p, as_version=4)))
        for p in _solution_paths(solutions, names)
    }


def _load_manifest(chapters: Path) -> dict[str, str]:
    path = chapters / MANIFEST
    return json.loads(path.read_text()) if path.exists() else {}


def build(solutions: Path = SOLUTIONS, chapters: Path = CHAPTERS, force: bool = False,
          names: list[str] | None = None) -> list[str]:
    """Regenerate the student chapters (all, or those whose name contains one of ``names``);
    return the names written.

    Raises AuthoringError (and writes nothing) when a chapter was changed since it
    was generated and ``force`` is False.
    """
    chapters.mkdir(exist_ok=True)
    manifest = _load_manifest(chapters)
    expected = expected_chapters(solutions, names)
    todo, refused = {}, []
    for name, text in expected.items():
        path = chapters / name
        if path.exists():
            current = path.read_text()
            if current == text:
                manifest[name] = _digest(text)
                continue
            if manifest.get(name) != _digest(current):
                refused.append(name)
        todo[name] = text
    if refused and not force:
        raise AuthoringError(
            "refusing to overwrite "
            + ", ".join(str(chapters / n) for n in refused)
            + ": changed since it was generated (a student's work?). "
            "Move it away, or rerun with --force to overwrite it after saving a backup."
        )
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for name, text in todo.items():
        path = chapters / name
        if name in refused:
            backup = path.with_name(f"{path.stem}.backup-{stamp}.ipynb")
            backup.write_text(path.read_text())
            print(f"saved a backup of {path} as {backup.name}")
        path.write_text(text)
        manifest[name] = _digest(text)
    # re-read and update only this build's entries, so concurrent builds keep theirs
    manifest = {**_load_manifest(chapters), **{n: manifest[n] for n in expected}}
    (chapters / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return sorted(todo)


def check(solutions: Path = SOLUTIONS, chapters: Path = CHAPTERS) -> list[str]:
    """Problems that make ``chapters/`` out of date with ``solutions/`` (empty: up to date)."""
    problems = []
    expected = expected_chapters(solutions)
    for name, text in expected.items():
        path = chapters / name
        if not path.exists():
            problems.append(f"{path}: missing")
        elif path.read_text() != text:
            problems.append(f"{path}: differs from its solution (run: python -m utils.authoring build)")
    for path in sorted(chapters.glob("[0-9][0-9]-*.ipynb")):
        if path.name not in expected and ".backup-" not in path.name:
            problems.append(f"{path}: has no solution notebook")
    return problems


def execute(names: list[str] | None = None, solutions: Path = SOLUTIONS, timeout: int = 300) -> None:
    """Run solution notebooks in place (kernel ``python3``, cwd ``solutions/``) and clean them."""
    from nbclient import NotebookClient

    for path in _solution_paths(solutions, names):
        nb = nbformat.read(path, as_version=4)
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(solutions)}}).execute()
        path.write_text(render(clean_solution(nb)))
        print(f"executed {path.relative_to(ROOT)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.authoring", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="regenerate chapters/ from solutions/")
    b.add_argument("--force", action="store_true", help="overwrite changed chapters (after a backup)")
    b.add_argument("names", nargs="*", help="substrings of notebook names (default: all)")
    sub.add_parser("check", help="exit 1 if chapters/ is out of date")
    e = sub.add_parser("execute", help="execute solutions in place, then build")
    e.add_argument("names", nargs="*", help="substrings of notebook names (default: all)")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            problems = check()
            for p in problems:
                print(p, file=sys.stderr)
            if not problems:
                print("chapters/ is up to date with solutions/")
            return 1 if problems else 0
        if args.command == "execute":
            execute(args.names)
        written = build(force=getattr(args, "force", False), names=args.names or None)
        print(f"wrote {len(written)} chapter notebook(s)" + (": " + ", ".join(written) if written else ""))
        return 0
    except AuthoringError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
