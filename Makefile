# Attention, Hands-On — two commands do everything: `make lab` and `make test`.
# A fresh Linux machine needs only Python 3.11 (or newer) and pip; the venv lives in .venv.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# strict nbval for the executed solutions, lax for the (output-free) student chapters
NBVAL  := --nbval-current-env -p no:cacheprovider
# CPU-only PyTorch: on Linux, PyPI's torch is the CUDA build (about 2.5 GiB with its nvidia-*
# packages). `make install TORCH_INDEX=https://download.pytorch.org/whl/cpu` (or make lab/test, on a
# fresh .venv) first installs torch alone from that index; everything else comes from PyPI as usual.
TORCH_INDEX ?=
TORCH_PIN   := $(shell sed -n 's/^ *"\(torch==[^"]*\)".*/\1/p' pyproject.toml)

.PHONY: install lab test unit notebooks browser lint bench slides site figures chapters clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(if $(TORCH_INDEX),$(BIN)/python -m pip install --quiet --index-url $(TORCH_INDEX) "$(TORCH_PIN)")
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the pinned dependencies and utils (editable)

lab: $(STAMP)  ## open the course in JupyterLab on 127.0.0.1 (token auth on; --allow-root for root)
	$(BIN)/python -m tools.open_lab

test: $(STAMP) lint unit notebooks browser  ## the whole test suite

lint: $(STAMP)
	$(BIN)/ruff check

unit: $(STAMP)
	$(BIN)/pytest tests --ignore=tests/browser

# the solutions' stored outputs twice: natively, then with torch's generic kernels on one thread
# (no output may depend on the CPU, its vector instructions or the thread count)
notebooks: $(STAMP)
	$(BIN)/pytest $(NBVAL) --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg solutions
	ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=1 \
	  $(BIN)/pytest $(NBVAL) --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg solutions
	$(BIN)/pytest $(NBVAL) --nbval-lax chapters

# JupyterLab + headless Chromium (Debian's /usr/bin/chromium); skipped, saying how to enable
# them, where it is missing (fails in CI). Screenshots of each chapter's widget: build/screenshots/
browser: $(STAMP)
	$(BIN)/pytest -p no:cacheprovider tests/browser

chapters: $(STAMP)  ## regenerate chapters/ from solutions/
	$(BIN)/python -m utils.authoring build

figures: $(STAMP)  ## redraw the SVG diagrams in images/
	$(BIN)/python -m utils.figures

bench: $(STAMP)  ## benchmarks (not tests): prints tables for the README
	$(BIN)/python -m benchmarks.bench_attention
	$(BIN)/python -m benchmarks.bench_browser
	$(BIN)/python -m benchmarks.bench_training

slides: $(STAMP)  ## static reveal.js decks of the solutions in build/slides/ (open offline)
	$(BIN)/python -m tools.slides

site: $(STAMP)  ## the course as a static website in build/site/ (offline; publish the folder as it is)
	$(BIN)/python -m tools.site

clean:
	rm -rf build .pytest_cache
