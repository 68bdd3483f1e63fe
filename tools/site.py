"""The course as a static website in build/site/ that works offline (``make site``).

Run from the repository root::

    python -m tools.site                      # every solution notebook
    python -m tools.site 01-self-attention    # some of them (the index lists those)
    python -m tools.site --out /tmp/site

Then open ``build/site/index.html``: no network needed, and no server (a GitHub Pages
folder or any static host serves it as it is; ``.nojekyll`` tells GitHub Pages to serve
``_static/`` too).

What it holds: ``index.html``, the chapter map (the README's chapter table with each
chapter's title diagram), and one page per solution notebook (``NN-name.html``) rendered
from its committed outputs by nbconvert's JupyterLab template, with prev/next links at the
top and the bottom. Everything a page loads is next to it: MathJax 2 and RequireJS from
the npm cache that ``make slides`` uses too (``tools/static_html.py``), ``images/`` copied;
the template's Mermaid import and widget manager (CDN scripts, unused here) are left out.

* Maths: typeset by the local MathJax (the template's MathJax 2 configuration).
* Figures: every matplotlib figure gets alt text, taken from the prose that introduces it
  (the last paragraph of the markdown cell before its code cell; nbconvert would otherwise
  write "No description has been provided for this image"). Diagrams keep the alt text of
  the notebook's ``<img>``.
* Widgets: a page has no kernel, so each explorer is its static figure (the cell before it,
  as every chapter has it) plus one line saying so; the explorer's "rerun this cell" output
  (and its key handler) is left out.
"""

from __future__ import annotations

import argparse
import html
import re
import sys
from pathlib import Path

from tools.static_html import (  # noqa: F401 (alt_text, for_the_web: this module's API too)
    EXPLORER_TEXT,
    MATHJAX_URL,
    PNG_ALT_BLOCK,
    REQUIRE_JS_URL,
    ROOT,
    WIDGET_NOTE,
    _is_explorer,
    alt_text,
    copy_images,
    for_the_web,
    install_static,
    relink,
    solution_notebooks,
)

OUT = ROOT / "build" / "site"
#: the npm packages the pages load (versions in tools.static_html.PACKAGES)
NPM = ("mathjax", "requirejs")
TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block extra_css -%}<style>
nav.course-nav { display: flex; justify-content: space-between; gap: 1em; padding: 0.6em 1em;
  font-family: var(--jp-ui-font-family); border-bottom: 1px solid var(--jp-border-color2); }
nav.course-nav.bottom { border-bottom: 0; border-top: 1px solid var(--jp-border-color2); }
p.course-widget-note { font-style: italic; margin: 0.2em 0; }
</style>{%- endblock extra_css -%}
{%- block body_header -%}{{ super() }}
{{ resources.course_nav | replace('class="course-nav"', 'class="course-nav top"') }}
{%- endblock body_header -%}
{%- block body_footer -%}
{{ resources.course_nav | replace('class="course-nav"', 'class="course-nav bottom"') }}
{{ super() }}
{%- endblock body_footer -%}
""" + PNG_ALT_BLOCK

__all__ = ["alt_text", "build_site", "for_the_web"]


# ------------------------------------------------------------------------- notebooks


def _title(nb, fallback: str) -> str:
    """The notebook's first heading, without emoji: "Chapter 1: Self-Attention"."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            found = re.search(r"^#\s+(.+)$", cell.source, flags=re.MULTILINE)
            if found:
                return re.sub(r"[^\w\s:,.()'’&+-]", "", found.group(1)).strip()
    return fallback


def _title_image(nb) -> str | None:
    """The first ``<img>`` of the notebook (its title diagram), relinked for the site."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            found = re.search(r"<img\b[^>]*>", cell.source)
            if found:
                return relink(found.group(0), ".html")
    return None


# ------------------------------------------------------------------------- pages


def _nav(pages: list[tuple[str, str]], i: int) -> str:
    """Prev / contents / next links for page ``i`` of ``pages`` ((file, title) pairs)."""
    def link(j: int, arrow: str) -> str:
        if 0 <= j < len(pages):
            file, title = pages[j]
            text = f"← {title}" if arrow == "prev" else f"{title} →"
            return f'<a href="{file}" rel="{arrow}">{html.escape(text)}</a>'
        return "<span></span>"

    return (f'<nav class="course-nav" aria-label="chapters">{link(i - 1, "prev")}'
            f'<a href="index.html">Contents</a>{link(i + 1, "next")}</nav>')


def _exporter():
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    return HTMLExporter(
        extra_loaders=[DictLoader({"course-site.html.j2": TEMPLATE})],
        template_name="lab", template_file="course-site.html.j2",
        mathjax_url=MATHJAX_URL, require_js_url=REQUIRE_JS_URL,
        exclude_input_prompt=True, exclude_output_prompt=True)


def _readme_concepts() -> dict[int, str]:
    """Chapter number -> its key concept, from the README's chapter table."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\|\s*(\d+)\s*\|\s*([^|]+?)\s*\|", text, flags=re.MULTILINE)
    return {int(n): concept for n, concept in rows}


_INDEX = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>Attention, Hands-On</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 62em; margin: 2em auto; padding: 0 1em;
  line-height: 1.5; color: #1a1a1a; }}
ol.chapters {{ list-style: none; padding: 0; display: grid; gap: 1.2em;
  grid-template-columns: repeat(auto-fill, minmax(18em, 1fr)); }}
ol.chapters li {{ border: 1px solid #ccc; border-radius: 6px; padding: 0.8em; }}
ol.chapters img {{ width: 100%; height: 9em; object-fit: contain; }}
ol.chapters h2 {{ font-size: 1.1em; margin: 0.3em 0; }}
</style>
</head>
<body>
<main>
<h1>Attention, Hands-On</h1>
<p>An interactive course on attention mechanisms in {n} chapters. These pages show the
solution notebooks as they ran: code, equations, figures and the static view of each live
explorer. To run the code and move the explorers' controls, open the notebooks in Jupyter
(<code>make lab</code> in the course's repository).</p>
<ol class="chapters">
{items}
</ol>
</main>
</body>
</html>
"""


def _index_item(number: int, file: str, title: str, concept: str, image: str | None) -> str:
    return (f'<li><a href="{file}">{image or ""}<h2>{html.escape(title)}</h2></a>'
            f"<p>{html.escape(concept)}</p></li>")


def build_site(names: list[str] | None = None, out: Path = OUT) -> list[Path]:
    """Write the site into ``out``: ``index.html`` and a page per solution notebook (all if
    ``names`` is None). Returns the pages, index first."""
    import nbformat

    notebooks = solution_notebooks(names)
    out.mkdir(parents=True, exist_ok=True)
    install_static(out, NPM)
    copy_images(out)
    read = [(path, nbformat.read(path, as_version=4)) for path in notebooks]
    pages = [(f"{path.stem}.html", _title(nb, path.stem)) for path, nb in read]
    exporter, concepts, items, written = _exporter(), _readme_concepts(), [], []
    for i, (path, nb) in enumerate(read):
        file, title = pages[i]
        web = for_the_web(nb)
        web.metadata["title"] = title
        page, _ = exporter.from_notebook_node(web, resources={
            "metadata": {"name": path.stem}, "course_nav": _nav(pages, i)})
        (out / file).write_text(relink(page, ".html", readme="index.html"), encoding="utf-8")
        written.append(out / file)
        number = int(path.stem[:2])
        items.append(_index_item(number, file, title, concepts.get(number, ""), _title_image(nb)))
    index = out / "index.html"
    index.write_text(_INDEX.format(n=len(read), items="\n".join(items)), encoding="utf-8")
    (out / ".nojekyll").touch()  # GitHub Pages: serve _static/ as it is (Jekyll skips _folders)
    return [index, *written]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="notebook names (default: all solutions)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"output folder (default {OUT})")
    args = parser.parse_args(argv)
    for page in build_site(args.names or None, args.out):
        print(page.relative_to(Path.cwd()) if page.is_relative_to(Path.cwd()) else page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
