"""`make site`: the course as a static website that loads nothing from another host."""

from __future__ import annotations

import os
import re
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import site, static_html  # noqa: E402

REMOTE = re.compile(r"^\s*(?:https?:)?//", re.IGNORECASE)
CSS_REMOTE = re.compile(r"""(?:@import\s+|url\(\s*)["']?(?:https?:)?//""", re.IGNORECASE)


class _Page(HTMLParser):
    """What a page loads (scripts, style sheets, images with their alt) and links to."""

    def __init__(self):
        super().__init__()
        self.scripts, self.styles, self.images, self.links = [], [], [], []
        self.inline_css, self._in_style = [], False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script" and a.get("src"):
            self.scripts.append(a["src"])
        elif tag == "link" and "stylesheet" in (a.get("rel") or "") and a.get("href"):
            self.styles.append(a["href"])
        elif tag == "img":
            self.images.append((a.get("src") or "", a.get("alt")))
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"])
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        if tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.inline_css.append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _local(page: Path, url: str) -> Path:
    return page.parent / url.split("?", 1)[0].split("#", 1)[0]


# ------------------------------------------------------------------------- no build needed


def test_alt_text_is_the_prose_that_introduces_the_figure():
    md = ("## Temperature\n\nSome words first.\n\nThe figure below is the static view at "
          "$T = 1$ for “He”, the scores $QK^\\top / \\sqrt{d_k}$ **sharpened**:")
    assert site.alt_text(md) == ("Figure: The figure below is the static view at T = 1 for “He”, "
                                 "the scores QKᵀ / √d_k sharpened")
    assert site.alt_text("## Only a heading") == "Figure: Only a heading"
    long = "One sentence. " * 60
    alt = site.alt_text(long, limit=100)
    assert len(alt) <= 110 and alt.endswith(".")


def test_for_the_web_gives_alt_text_and_turns_explorers_into_a_line():
    png = {"image/png": "iVBORw0KGgo=", "text/plain": "<Figure size 100x100 with 1 Axes>"}
    rerun = {"text/html": '<div class="course-rerun">rerun</div><script>x()</script>',
             "text/plain": "rerun"}
    explorer = {"text/plain": "AttentionView explorer: run the notebook to interact"}
    nb = new_notebook(cells=[
        new_markdown_cell("The static view at the defaults:"),
        new_code_cell("view.figure_at()", outputs=[new_output("display_data", data=png)]),
        new_code_cell("explorer", outputs=[new_output("display_data", data=rerun),
                                           new_output("display_data", data=explorer)]),
    ])
    web = site.for_the_web(nb)
    figure, widget = web.cells[1].outputs[0], web.cells[2].outputs
    assert figure.metadata["image/png"]["alt"] == "Figure: The static view at the defaults"
    assert len(widget) == 1 and "course-widget-note" in widget[0].data["text/html"]
    assert "script" not in str(widget), "the explorer's key handler is left out"
    assert "alt" not in nb.cells[1].outputs[0].get("metadata", {}).get("image/png", {}), (
        "the notebook itself is not changed")


# ------------------------------------------------------------------------- a built page


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> list[Path]:
    if not static_html.vendor_cached(site.NPM) and shutil.which("npm") is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI=true but npm is missing: make site fetches MathJax with it")
        pytest.skip("npm not found (make site fetches MathJax with it once): sudo apt-get install npm")
    first = static_html.solution_notebooks()[:2]
    return site.build_site([p.stem for p in first], out=tmp_path_factory.mktemp("site"))


def test_pages_load_nothing_from_another_host(built):
    for path in built:
        page = _parse(path)
        remote = [u for u in page.scripts + page.styles + [s for s, _ in page.images]
                  if REMOTE.match(u)]
        assert remote == [], f"{path.name} loads from the network: {remote}"
        for url in page.scripts + page.styles:
            assert _local(path, url).is_file(), f"{path.name}: {url} is not next to the page"
        for css in page.inline_css:
            assert not CSS_REMOTE.search(css), f"{path.name}: a style imports from the network"


def test_every_image_has_alt_text_and_resolves(built):
    for path in built:
        images = _parse(path).images
        assert images, f"{path.name} has no image"
        for src, alt in images:
            assert alt and "No description" not in alt, f"{path.name}: {src[:60]} has no alt text"
            if not src.startswith("data:"):
                assert _local(path, src).is_file(), f"{path.name}: image {src} does not resolve"


def test_links_between_pages_resolve_and_pages_link_prev_and_next(built):
    index, *chapters = built
    assert (index.parent / ".nojekyll").is_file(), "GitHub Pages would skip _static/"
    links = _parse(index).links
    assert [p.name for p in chapters] == [u for u in links if u.endswith(".html")]
    for i, path in enumerate(chapters):
        links = _parse(path).links
        assert "index.html" in links
        for url in links:
            if not REMOTE.match(url) and not url.startswith(("#", "mailto:")):
                target = url.split("#", 1)[0]
                if target.endswith(".html") and target[:2].isdigit() and (
                        target not in [p.name for p in chapters]):
                    continue  # a chapter outside this partial build
                assert _local(path, target).exists(), f"{path.name}: link {url} does not resolve"
        if i + 1 < len(chapters):
            assert chapters[i + 1].name in links, f"{path.name} has no link to the next chapter"
        if i > 0:
            assert chapters[i - 1].name in links


def test_each_explorer_is_one_line_under_its_static_figure(built):
    for path in built[1:]:
        nb = nbformat.read(ROOT / "solutions" / f"{path.stem}.ipynb", as_version=4)
        explorers = sum(site._is_explorer(o) for c in nb.cells if c.cell_type == "code"
                        for o in c.outputs)
        text = path.read_text(encoding="utf-8")
        assert text.count('<p class="course-widget-note">') == explorers > 0
        assert "course-rerun" not in text and site.EXPLORER_TEXT not in text
        # the line comes after a figure: the static view drawn by the cell before it
        for note in re.finditer(r'<p class="course-widget-note">', text):
            before = text[: note.start()]
            assert before.rfind("<img") > before.rfind('<p class="course-widget-note">')
