"""Static reveal.js decks of the solution notebooks, in build/slides/, that open offline.

Run from the repository root (``make slides``)::

    python -m tools.slides                      # every solution notebook
    python -m tools.slides 01-self-attention    # some of them
    python -m tools.slides --out /tmp/decks

Then open ``build/slides/01-self-attention.slides.html`` in a browser: no network needed.

How: nbconvert's slides exporter (the cells' ``slideshow`` metadata makes the slides), with
every script and style sheet served from a local copy next to the decks instead of a CDN:
reveal.js, MathJax 2 (nbconvert's reveal template speaks MathJax 2's API), RequireJS and
jQuery, fetched once from the npm registry with ``npm pack`` at the versions pinned in
``tools/static_html.py`` into ``build/vendor/`` (a cache shared with ``make site``; nothing
is committed) and unpacked into ``build/slides/_static/``. The template's Mermaid import
(a CDN module, unused here) is left out. ``images/`` is copied to ``build/slides/images/``
and the notebooks' ``../images/`` links point there; links between chapters point at their
decks. Widgets show their static
figure (the cell before each live explorer) and a line: a static deck has no kernel. Every
figure has alt text (``tools.static_html.for_the_web``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tools.static_html import (
    JQUERY_URL,
    MATHJAX_URL,
    PNG_ALT_BLOCK,
    REQUIRE_JS_URL,
    REVEAL_URL,
    ROOT,
    copy_images,
    for_the_web,
    install_static,
    relink,
    solution_notebooks,
)

OUT = ROOT / "build" / "slides"
#: the npm packages the decks load (versions in tools.static_html.PACKAGES)
NPM = ("reveal.js", "mathjax", "requirejs", "jquery")
URLS = {
    "reveal_url_prefix": REVEAL_URL,
    "mathjax_url": MATHJAX_URL,
    "require_js_url": REQUIRE_JS_URL,
    "jquery_url": JQUERY_URL,
}
# nbconvert's reveal template, without its Mermaid import from a CDN; figures' alt text
TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
""" + PNG_ALT_BLOCK

__all__ = ["build_decks"]


def _exporter():
    from jinja2 import DictLoader
    from nbconvert import SlidesExporter

    return SlidesExporter(
        extra_loaders=[DictLoader({"course-reveal.html.j2": TEMPLATE})],
        template_file="course-reveal.html.j2",
        reveal_scroll=True, reveal_transition="none", reveal_theme="white",
        exclude_input_prompt=True, exclude_output_prompt=True,
        **URLS)


def build_decks(names: list[str] | None = None, out: Path = OUT) -> list[Path]:
    """Write ``out/NN-name.slides.html`` for each solution notebook (all if ``names`` is None)."""
    import nbformat

    notebooks = solution_notebooks(names)
    out.mkdir(parents=True, exist_ok=True)
    install_static(out, NPM)
    copy_images(out)
    exporter, decks = _exporter(), []
    for path in notebooks:
        nb = for_the_web(nbformat.read(path, as_version=4))
        html, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": path.stem}})
        deck = out / f"{path.stem}.slides.html"
        deck.write_text(relink(html, ".slides.html"), encoding="utf-8")
        decks.append(deck)
    return decks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="notebook names (default: all solutions)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"output folder (default {OUT})")
    args = parser.parse_args(argv)
    for deck in build_decks(args.names or None, args.out):
        print(deck.relative_to(Path.cwd()) if deck.is_relative_to(Path.cwd()) else deck)
    return 0


if __name__ == "__main__":
    sys.exit(main())
