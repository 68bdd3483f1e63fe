"""`make slides`: a static reveal.js deck that opens offline (no script or style from a CDN)."""

from __future__ import annotations

import os
import re
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import slides, static_html  # noqa: E402

REMOTE = re.compile(r"^\s*(?:https?:)?//", re.IGNORECASE)
CSS_REMOTE = re.compile(r"""(?:@import\s+|url\(\s*)["']?(?:https?:)?//""", re.IGNORECASE)
MODULE_IMPORT = re.compile(r"""\bimport\b[^'"]*['"]((?:https?:)?//[^'"]+)""")


class _Links(HTMLParser):
    """The URLs a page loads: scripts, style sheets, images; and its inline scripts."""

    def __init__(self):
        super().__init__()
        self.scripts, self.styles, self.images, self.inline = [], [], [], []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script":
            self._in_script = "src" not in a
            if "src" in a:
                self.scripts.append(a["src"])
        elif tag == "link" and "stylesheet" in (a.get("rel") or "") and a.get("href"):
            self.styles.append(a["href"])
        elif tag == "img" and a.get("src") and not a["src"].startswith("data:"):
            self.images.append(a["src"])

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.inline.append(data)


def _vendor_available() -> bool:
    return static_html.vendor_cached(slides.NPM) or shutil.which("npm") is not None


@pytest.fixture(scope="module")
def deck(tmp_path_factory) -> Path:
    if not _vendor_available():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI=true but npm is missing: make slides fetches reveal.js with it")
        pytest.skip("npm not found (make slides fetches reveal.js and MathJax with it once): "
                    "sudo apt-get install npm")
    first = sorted((ROOT / "solutions").glob("[0-9][0-9]-*.ipynb"))[0].stem
    (path,) = slides.build_decks([first], out=tmp_path_factory.mktemp("slides"))
    return path


def _local(deck: Path, url: str) -> Path:
    return deck.parent / url.split("?", 1)[0].split("#", 1)[0]


def test_deck_loads_no_script_or_style_sheet_from_the_network(deck):
    page = _Links()
    page.feed(deck.read_text(encoding="utf-8"))
    assert page.scripts and page.styles, "the deck should load reveal.js and its styles"
    remote = [u for u in page.scripts + page.styles if REMOTE.match(u)]
    assert remote == [], f"scripts or style sheets from the network: {remote}"
    imports = [m for code in page.inline for m in MODULE_IMPORT.findall(code)]
    assert imports == [], f"module imports from the network: {imports}"
    for url in page.scripts + page.styles:
        assert _local(deck, url).is_file(), f"{url} is not next to the deck"
    for url in page.styles:
        css = _local(deck, url).read_text(encoding="utf-8", errors="replace")
        assert not CSS_REMOTE.search(css), f"{url} imports from the network"


def test_deck_uses_local_reveal_and_mathjax(deck):
    html = deck.read_text(encoding="utf-8")
    assert f'src="{slides.URLS["mathjax_url"]}"' in html
    assert f'{slides.URLS["reveal_url_prefix"]}/dist/reveal.js' in html
    assert html.count("<section") > 3, "the notebook's slideshow metadata should make slides"


def test_deck_images_resolve_next_to_it(deck):
    page = _Links()
    page.feed(deck.read_text(encoding="utf-8"))
    assert page.images, "the chapter's diagrams should be in the deck"
    for url in page.images:
        assert not REMOTE.match(url) and _local(deck, url).is_file(), f"image {url} does not resolve"


def test_every_figure_of_the_deck_has_alt_text(deck):
    images = re.findall(r"<img\b[^>]*>", deck.read_text(encoding="utf-8"))
    assert any("data:image/png" in i for i in images), "the deck should show the figures"
    for img in images:
        alt = re.search(r'alt="([^"]*)"', img)
        assert alt and alt.group(1) and "No description" not in alt.group(1), img[:80]


def test_relink_points_images_and_chapter_links_at_the_pages():
    html = ('<img src="../images/a.svg"> <a href="02-cross-attention.ipynb">next</a> '
            '<a href="../README.md">main</a>')
    assert static_html.relink(html, ".slides.html") == (
        '<img src="images/a.svg"> <a href="02-cross-attention.slides.html">next</a> '
        '<a href="../README.md">main</a>')
    assert static_html.relink(html, ".html", readme="index.html") == (
        '<img src="images/a.svg"> <a href="02-cross-attention.html">next</a> '
        '<a href="index.html">main</a>')


def test_static_decks_show_the_explorers_static_figure_that_the_live_deck_skips():
    import nbformat

    from utils.authoring import with_slides

    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    nb = with_slides(nbformat.v4.new_notebook(cells=[
        md("## Live"), code("views.SomeView(ex).figure_at(t=1)"), md("Move it:"),
        code("views.some_explorer(ex, t=1)")]))
    assert nb.cells[1].metadata["slideshow"]["slide_type"] == "skip"  # the live deck
    assert "slideshow" not in static_html.for_the_web(nb).cells[1].metadata  # a static deck
