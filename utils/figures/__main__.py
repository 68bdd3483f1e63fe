"""``python -m utils.figures``: redraw every SVG diagram into images/."""

from . import IMAGES, build_all

if __name__ == "__main__":
    for path in build_all():
        print(f"wrote {path.relative_to(IMAGES.parent)}")
